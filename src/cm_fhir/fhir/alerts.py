"""An encounter event of a member -> a Da Vinci Unsolicited Notification for the payer. Pure.

:func:`notification_bundle` builds what a provider sends a member's payer to ``$process-message``
on admission, transfer and discharge: a ``message`` Bundle whose first entry is the MessageHeader
(``eventCoding`` from the IG's notification-event code system, ``focus`` the Encounter), then the
Encounter, the Patient, the Coverage, the payer and the sending organisation (the case's managing
organisation, else ``provider``). Codes, profiles, the identifier system and ``provider`` come from
``mappings/payer-exchange.yaml``.

The Bundle's identifier (and its id) follow from the sender's message id and the payer, so a
notification sent again (a retry after a lost answer) is the same message, which the payer tells
by its identifier and sender. The other way, what a payer reads, is the payer side's intake.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cm_fhir.domain.case import Case, Coverage
from cm_fhir.domain.codes import NotificationEvent
from cm_fhir.domain.common import Identifier
from cm_fhir.errors import MappingError
from cm_fhir.fhir.datatypes import identifier, instant
from cm_fhir.fhir.ids import resource_id
from cm_fhir.fhir.pas_request import coverage_resource, party_key, party_resource, urn
from cm_fhir.mapping.payer_exchange import PayerExchange

__all__ = ["ACT_CODE", "EncounterNotice", "notification_bundle"]

Json = dict[str, Any]
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
#: The Encounter's status after each event.
_STATUS = {
    NotificationEvent.ADMIT: "in-progress",
    NotificationEvent.TRANSFER: "in-progress",
    NotificationEvent.DISCHARGE: "finished",
}


@dataclass(frozen=True, slots=True)
class EncounterNotice:
    """What happened to the member's encounter, as the notification tells it."""

    event: NotificationEvent
    message_id: str
    """The sender's id of the event's message (the HL7 v2 control id): a resend keeps it."""
    occurred: datetime
    encounter: Identifier
    """The visit number."""
    encounter_class: str = "IMP"
    """v3 ActCode: IMP (inpatient), EMER, AMB, OBSENC."""
    admitted: datetime | None = None
    discharged: datetime | None = None
    location: str | None = None
    """Where the member is now (a transfer's new unit), as text."""


def _encounter(
    notice: EncounterNotice, full_url: str, patient_url: str, spec: PayerExchange
) -> Json:
    out: Json = {
        "resourceType": "Encounter",
        "id": full_url.rsplit(":", 1)[1],
        "meta": {"profile": [spec.alerts.profiles.encounter]},
        "identifier": [identifier(notice.encounter)],
        "status": _STATUS[notice.event],
        "class": {"system": ACT_CODE, "code": notice.encounter_class},
        "subject": {"reference": patient_url},
    }
    start = notice.admitted or (
        notice.occurred if notice.event == NotificationEvent.ADMIT else None
    )
    end = notice.discharged or (
        notice.occurred if notice.event == NotificationEvent.DISCHARGE else None
    )
    if start is not None and end is not None and end < start:
        end = start  # a discharge stamped before its admission: the period may not run backwards
    if start is not None or end is not None:
        out["period"] = {
            k: instant(v) for k, v in (("start", start), ("end", end)) if v is not None
        }
    if notice.location:
        out["location"] = [{"location": {"display": notice.location}}]
    return out


def notification_bundle(
    case: Case,
    coverage: Coverage,
    notice: EncounterNotice,
    spec: PayerExchange,
    canonical_base: str,
    destination: str | None = None,
) -> Json:
    """The Da Vinci notification message Bundle of ``notice`` for ``coverage``'s payer, sent to
    ``destination`` (the payer's FHIR base URL, when known)."""
    if coverage not in case.coverage:
        raise MappingError("the coverage is not the case's", path="coverage")
    alerts = spec.alerts
    payer = coverage.payer
    payer_tag = hashlib.sha256(party_key(payer).encode()).hexdigest()[:12]
    message_value = f"{notice.message_id}|{notice.event.value}|{payer_tag}"
    system = alerts.identifier_system
    header_url = urn(canonical_base, "MessageHeader", system, message_value)
    primary = case.patient.primary
    patient_url = urn(canonical_base, "Patient", primary.system, primary.value)
    visit = notice.encounter
    encounter_url = urn(canonical_base, "Encounter", visit.system, visit.value)
    coverage_url = urn(canonical_base, "Coverage", party_key(payer), coverage.member_id)
    payer_url = urn(canonical_base, payer.kind.value, "party", party_key(payer))
    sender = case.managing_organization or spec.provider
    sender_url = (
        urn(canonical_base, sender.kind.value, "party", party_key(sender)) if sender else None
    )
    header: Json = {
        "resourceType": "MessageHeader",
        "id": header_url.rsplit(":", 1)[1],
        "meta": {"profile": [alerts.profiles.message_header]},
        "eventCoding": {"system": alerts.event_system, "code": alerts.events[notice.event]},
        "source": {"endpoint": canonical_base},
        "focus": [{"reference": encounter_url}],
    }
    if sender_url is not None:
        header["sender"] = {"reference": sender_url}
        header["author"] = {"reference": sender_url}
    if destination is not None:
        header["destination"] = [{"endpoint": destination, "receiver": {"reference": payer_url}}]
    patient = {
        "resourceType": "Patient",
        "id": patient_url.rsplit(":", 1)[1],
        "identifier": [identifier(i) for i in case.patient.identifiers],
    }
    resources: list[tuple[str, Json]] = [
        (header_url, header),
        (encounter_url, _encounter(notice, encounter_url, patient_url, spec)),
        (patient_url, patient),
        (coverage_url, coverage_resource(coverage, coverage_url, patient_url, payer_url)),
        (payer_url, party_resource(payer, payer_url)),
    ]
    if sender is not None and sender_url is not None and sender_url != payer_url:
        resources.append((sender_url, party_resource(sender, sender_url)))
    return {
        "resourceType": "Bundle",
        "id": resource_id(canonical_base, "Bundle", system, message_value),
        "meta": {"profile": [alerts.profiles.bundle]},
        "identifier": {"system": system, "value": message_value},
        "type": "message",
        "timestamp": instant(notice.occurred),
        "entry": [{"fullUrl": url, "resource": res} for url, res in resources],
    }
