"""Da Vinci Unsolicited Notifications (admit/transfer/discharge) <-> an encounter notice. Pure.

:func:`parse_notification` reads a notification message Bundle as a payer receives it at
``$process-message``: a ``message`` Bundle with an identifier and a timestamp, its first entry a
MessageHeader whose ``eventCoding`` is one of the notification events of
``mappings/payer-exchange.yaml`` (``notifications``), whose ``source.endpoint`` names the sender
and whose ``focus`` is the Encounter in the Bundle; the Encounter names the stay (an identifier
with a system) and its Patient (in the Bundle, with an identifier with a system); a Coverage,
when present, names the payer and the member id. The Patient's member ids lead its identifiers
(:func:`~cm_fhir.fhir.members.member_patient`): the payer knows the member by them. Every resource
is checked against the R4 models.
What is unusable raises :class:`~cm_fhir.errors.MappingError` whose ``path`` names the element, or
:class:`~cm_fhir.errors.ValidationError` with the OperationOutcome of what is not R4.

:func:`notification_bundle` is the other way: the Bundle a sender builds for a notice.
:func:`response_message` is the receiver's answer (FHIR R4 messaging): a ``message`` Bundle whose
MessageHeader's ``response`` names the notification's MessageHeader id with ``ok``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pydantic

from cm_fhir.domain.case import Coverage
from cm_fhir.domain.codes import PartyKind
from cm_fhir.domain.common import PartyRef
from cm_fhir.domain.events import EncounterNotice, NoticeKind
from cm_fhir.errors import MappingError
from cm_fhir.fhir.datatypes import identifier, instant, parse_instant
from cm_fhir.fhir.members import member_patient
from cm_fhir.fhir.models import validate_bundle
from cm_fhir.fhir.pas_intake import identifiers_of, party_of, resolve_reference
from cm_fhir.fhir.pas_request import coverage_resource, party_resource
from cm_fhir.mapping.payer_exchange import PayerExchange

__all__ = [
    "NotificationHeader",
    "notification_bundle",
    "parse_notification",
    "read_header",
    "response_code",
    "response_message",
]

Json = dict[str, Any]
_V3_ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


@dataclass(frozen=True, slots=True)
class NotificationHeader:
    """What the door needs of a message Bundle: its identity, sender and event."""

    message_id: str
    """Bundle.identifier.value, else MessageHeader.id."""
    header_id: str
    """MessageHeader.id (answered in the response's ``response.identifier``)."""
    source: str
    """MessageHeader.source.endpoint."""
    event_code: str
    kind: NoticeKind
    timestamp: datetime


def _entries(bundle: Any) -> list[Json]:
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise MappingError("the body is not a FHIR Bundle", path="Bundle")
    if bundle.get("type") != "message":
        raise MappingError("a notification is a Bundle of type 'message'", path="Bundle.type")
    entries = bundle.get("entry")
    if not isinstance(entries, list) or not entries:
        raise MappingError("the Bundle has no entries", path="Bundle.entry")
    return [e if isinstance(e, dict) else {} for e in entries]


def _header(entries: list[Json]) -> Json:
    first = entries[0].get("resource")
    if not isinstance(first, dict) or first.get("resourceType") != "MessageHeader":
        raise MappingError("the first entry must be the MessageHeader", path="Bundle.entry[0]")
    return first


def read_header(bundle: Any, spec: PayerExchange) -> NotificationHeader:
    """The message's identity, sender and event; MappingError naming what is missing."""
    entries = _entries(bundle)
    header = _header(entries)
    path = "MessageHeader"
    coding = header.get("eventCoding")
    if not isinstance(coding, dict):
        raise MappingError("a notification names its event in eventCoding", path=f"{path}.event")
    notifications = spec.notifications
    code = coding.get("code")
    if coding.get("system") != notifications.event_system or code not in notifications.events:
        known = ", ".join(sorted(notifications.events))
        raise MappingError(
            f"the event must be one of {known} from {notifications.event_system}",
            path=f"{path}.eventCoding",
        )
    source = header.get("source")
    endpoint = source.get("endpoint") if isinstance(source, dict) else None
    if not isinstance(endpoint, str) or not endpoint.strip():
        raise MappingError("the sender's endpoint is required", path=f"{path}.source.endpoint")
    header_id = header.get("id")
    if not isinstance(header_id, str) or not header_id.strip():
        raise MappingError(
            "the MessageHeader needs an id (the response names it)", path="MessageHeader.id"
        )
    ident = bundle.get("identifier")
    value = ident.get("value") if isinstance(ident, dict) else None
    message_id = value if isinstance(value, str) and value.strip() else header_id
    if "timestamp" not in bundle:
        raise MappingError("the Bundle needs a timestamp", path="Bundle.timestamp")
    return NotificationHeader(
        message_id=message_id,
        header_id=header_id,
        source=endpoint.strip(),
        event_code=str(code),
        kind=notifications.events[str(code)],
        timestamp=parse_instant(bundle["timestamp"], "Bundle.timestamp"),
    )


def _focus(entries: list[Json], header: Json) -> Json:
    focus = [f for f in header.get("focus") or [] if isinstance(f, dict)]
    encounter = resolve_reference(entries, focus[0]) if focus else None
    if encounter is None or encounter.get("resourceType") != "Encounter":
        raise MappingError(
            "the focus must reference the Encounter in the Bundle", path="MessageHeader.focus"
        )
    return encounter


def _when(period: Any, key: str) -> datetime | None:
    if not isinstance(period, dict) or key not in period:
        return None
    return parse_instant(period[key], f"Encounter.period.{key}")


def _location(encounter: Json) -> str | None:
    locations = [x for x in encounter.get("location") or [] if isinstance(x, dict)]
    ref = locations[-1].get("location") if locations else None
    if not isinstance(ref, dict):
        return None
    found = ref.get("display") or (ref.get("identifier") or {}).get("value")
    return str(found)[:255] if found else None


def _coverage(entries: list[Json]) -> tuple[PartyRef | None, str | None]:
    for entry in entries:
        resource = entry.get("resource")
        if not isinstance(resource, dict) or resource.get("resourceType") != "Coverage":
            continue
        payors = [p for p in resource.get("payor") or [] if isinstance(p, dict)]
        payer = party_of(entries, payors[0], "Coverage.payor[0]", PartyKind.ORGANIZATION)
        member = resource.get("subscriberId")
        if not isinstance(member, str) or not member.strip():
            ids = identifiers_of(resource, None, "Coverage")
            member = ids[0].value if ids else None
        return payer, member.strip() if isinstance(member, str) else None
    return None, None


def parse_notification(bundle: Any, spec: PayerExchange) -> EncounterNotice:
    """The encounter notice a notification Bundle carries (see the module docstring)."""
    read = read_header(bundle, spec)
    entries = _entries(bundle)
    header = _header(entries)
    encounter = _focus(entries, header)
    stay = identifiers_of(encounter, None, "Encounter")
    if not stay:
        raise MappingError(
            "the Encounter needs an identifier with a system (the visit number)",
            path="Encounter.identifier",
        )
    subject = encounter.get("subject")
    patient = resolve_reference(entries, subject)
    if patient is None or patient.get("resourceType") != "Patient":
        raise MappingError(
            "the Encounter's subject must reference the Patient in the Bundle",
            path="Encounter.subject",
        )
    patient_ids = identifiers_of(patient, None, "Patient")
    if not patient_ids:
        raise MappingError(
            "the Patient needs an identifier with a system", path="Patient.identifier"
        )
    validate_bundle(bundle)  # every resource must be R4 (ValidationError with its OperationOutcome)
    period = encounter.get("period")
    admitted, discharged = _when(period, "start"), _when(period, "end")
    at = {NoticeKind.ADMIT: admitted, NoticeKind.DISCHARGE: discharged}.get(read.kind)
    klass = encounter.get("class")
    facility = party_of(
        entries,
        encounter.get("serviceProvider"),
        "Encounter.serviceProvider",
        PartyKind.ORGANIZATION,
    ) or party_of(entries, header.get("sender"), "MessageHeader.sender", PartyKind.ORGANIZATION)
    payer, member_id = _coverage(entries)
    try:
        return EncounterNotice(
            message_id=read.message_id[:199],
            source=read.source[:255],
            kind=read.kind,
            at=at or read.timestamp,
            patient=member_patient(patient_ids, member_id, spec),
            encounter=stay[0],
            admitted=admitted,
            discharged=discharged,
            encounter_class=klass.get("code") if isinstance(klass, dict) else None,
            location=_location(encounter),
            facility=facility,
            payer=payer,
            member_id=member_id,
        )
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise MappingError(f"the notification cannot be read ({field})", path="Bundle") from exc


def notification_bundle(
    notice: EncounterNotice,
    spec: PayerExchange,
    *,
    timestamp: datetime,
    event_code: str | None = None,
    destination: str | None = None,
) -> Json:
    """The notification message Bundle a sender builds for ``notice``: the MessageHeader first
    (``eventCoding`` of the notice's kind, ``focus`` the Encounter, ``sender`` and ``author`` the
    facility, ``destination`` the payer's endpoint when given), then the Encounter, the Patient,
    the facility, and the Coverage with its payer when the notice names them. The Bundle
    identifier is the notice's ``message_id`` (in ``notifications.identifier_system``); entry
    URLs follow from it, so the same notice builds the same Bundle."""
    notifications = spec.notifications
    code = event_code or notifications.code_of(notice.kind)
    if notifications.events.get(code) != notice.kind:
        raise MappingError(f"'{code}' is not a {notice.kind.value} event", path="eventCoding")
    urls = {
        k: f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'{notice.message_id}#{k}')}"
        for k in ("header", "patient", "encounter", "coverage", "payer", "org")
    }
    encounter: Json = {
        "resourceType": "Encounter",
        "identifier": [identifier(notice.encounter)],
        "status": "finished" if notice.kind == NoticeKind.DISCHARGE else "in-progress",
        "class": {"system": _V3_ACT_CODE, "code": notice.encounter_class or "IMP"},
        "subject": {"reference": urls["patient"]},
    }
    start, end = notice.admitted, notice.discharged
    if start is not None and end is not None and end < start:
        end = start  # a discharge stamped before its admission: the period never runs backwards
    period = {k: instant(v) for k, v in (("start", start), ("end", end)) if v is not None}
    if period:
        encounter["period"] = period
    if notice.location:
        encounter["location"] = [{"location": {"display": notice.location}}]
    header: Json = {
        "resourceType": "MessageHeader",
        "eventCoding": {"system": notifications.event_system, "code": code},
        "source": {"endpoint": notice.source or "urn:unknown"},
        "focus": [{"reference": urls["encounter"]}],
    }
    entries: list[Json] = [
        {"fullUrl": urls["header"], "resource": header},
        {"fullUrl": urls["encounter"], "resource": encounter},
        {
            "fullUrl": urls["patient"],
            "resource": {
                "resourceType": "Patient",
                "identifier": [identifier(i) for i in notice.patient.identifiers],
            },
        },
    ]
    if notice.facility is not None:
        encounter["serviceProvider"] = {"reference": urls["org"]}
        header["sender"] = header["author"] = {"reference": urls["org"]}
        entries.append(
            {"fullUrl": urls["org"], "resource": party_resource(notice.facility, urls["org"])}
        )
    if notice.payer is not None and notice.member_id:
        coverage = Coverage(payer=notice.payer, member_id=notice.member_id)
        entries.append(
            {"fullUrl": urls["payer"], "resource": party_resource(notice.payer, urls["payer"])}
        )
        entries.append(
            {
                "fullUrl": urls["coverage"],
                "resource": coverage_resource(
                    coverage, urls["coverage"], urls["patient"], urls["payer"]
                ),
            }
        )
        if destination is not None:
            header["destination"] = [
                {"endpoint": destination, "receiver": {"reference": urls["payer"]}}
            ]
    elif destination is not None:
        header["destination"] = [{"endpoint": destination}]
    if notifications.message_header_profile:
        header["meta"] = {"profile": [notifications.message_header_profile]}
    if notifications.encounter_profile:
        encounter["meta"] = {"profile": [notifications.encounter_profile]}
    for entry in entries:
        entry["resource"]["id"] = str(entry["fullUrl"]).rsplit(":", 1)[1]
    ident: Json = {"value": notice.message_id}
    if notifications.identifier_system:
        ident = {"system": notifications.identifier_system, **ident}
    bundle: Json = {
        "resourceType": "Bundle",
        "identifier": ident,
        "type": "message",
        "timestamp": instant(timestamp),
        "entry": entries,
    }
    if notifications.bundle_profile:
        bundle["meta"] = {"profile": [notifications.bundle_profile]}
    return bundle


def response_message(
    read: NotificationHeader,
    spec: PayerExchange,
    *,
    source: str,
    timestamp: datetime,
    code: str = "ok",
) -> Json:
    """The response message to the notification ``read``: a ``message`` Bundle whose only entry
    is a MessageHeader with the same event, ``source`` our endpoint, ``destination`` the sender's,
    and ``response`` the notification's MessageHeader id with ``code`` (``ok``,
    ``transient-error``, ``fatal-error``). Its ids follow from the notification's, so the same
    notification is answered with the same message."""
    name = f"{read.source}#{read.message_id}#{read.header_id}#response"
    bundle_id = str(uuid.uuid5(uuid.NAMESPACE_URL, name))
    header_id = str(uuid.uuid5(uuid.NAMESPACE_URL, name + "#header"))
    header: Json = {
        "resourceType": "MessageHeader",
        "id": header_id,
        "eventCoding": {"system": spec.notifications.event_system, "code": read.event_code},
        "destination": [{"endpoint": read.source}],
        "source": {"endpoint": source},
        "response": {"identifier": read.header_id, "code": code},
    }
    return {
        "resourceType": "Bundle",
        "id": bundle_id,
        "identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{bundle_id}"},
        "type": "message",
        "timestamp": instant(timestamp),
        "entry": [{"fullUrl": f"urn:uuid:{header_id}", "resource": header}],
    }


def response_code(answer: Any) -> str | None:
    """The ``MessageHeader.response.code`` of a response message (``ok``, ``transient-error``,
    ``fatal-error``); None when ``answer`` is not one (no body, an OperationOutcome, ...)."""
    if not isinstance(answer, dict) or answer.get("type") != "message":
        return None
    entries = answer.get("entry")
    first = entries[0] if isinstance(entries, list) and entries else None
    header = first.get("resource") if isinstance(first, dict) else None
    response = header.get("response") if isinstance(header, dict) else None
    code = response.get("code") if isinstance(response, dict) else None
    return code if isinstance(code, str) else None
