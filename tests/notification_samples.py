"""Sample Da Vinci admit/transfer/discharge notifications of the stroke example's member."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from cm_fhir.domain import Identifier, PartyKind, PartyRef, PatientRef
from cm_fhir.domain.events import EncounterNotice, NoticeKind
from cm_fhir.fhir.notification import notification_bundle
from cm_fhir.mapping.payer_exchange import default_payer_exchange
from pas_samples import hospital, stroke_case

SPEC = default_payer_exchange()
ADMITTED = datetime(2026, 3, 1, 22, 15, tzinfo=UTC)
DISCHARGED = datetime(2026, 3, 9, 16, 0, tzinfo=UTC)
CODES = {
    NoticeKind.ADMIT: "notification-admit",
    NoticeKind.TRANSFER: "notification-transfer",
    NoticeKind.DISCHARGE: "notification-discharge",
}
Json = dict[str, Any]


def payer() -> PartyRef:
    return PartyRef(
        kind=PartyKind.ORGANIZATION,
        identifier=Identifier(system="urn:oid:2.16.840.1.113883.3.9001", value="LHP"),
        display="Lakeside Health Plan",
    )


def notice(kind: NoticeKind = NoticeKind.ADMIT, **changes: Any) -> EncounterNotice:
    """A notice of the stroke member's stay at Riverside General, every field set."""
    case = stroke_case()
    fields: dict[str, Any] = {
        "message_id": f"urn:uuid:6d0c4a6e-0000-4000-8000-00000000000{list(NoticeKind).index(kind)}",
        "source": "https://ehr.riverside.example/fhir",
        "kind": kind,
        "at": DISCHARGED if kind == NoticeKind.DISCHARGE else ADMITTED,
        "patient": case.patient,
        "encounter": case.encounters[0],
        "admitted": ADMITTED,
        "discharged": DISCHARGED if kind == NoticeKind.DISCHARGE else None,
        "encounter_class": "IMP",
        "location": "Neuro 4 West",
        "facility": hospital(),
        "payer": payer(),
        "member_id": "MBR-55512309",
    }
    fields.update(changes)
    return EncounterNotice(**fields)


def as_read_by_the_payer(sent: EncounterNotice) -> EncounterNotice:
    """``sent`` as the payer reads it back: the stroke member's id (typed MB, second in the
    hospital's list) leads the patient's identifiers, the MRN follows."""
    mrn, member = sent.patient.identifiers
    return sent.model_copy(update={"patient": PatientRef(identifiers=(member, mrn))})


def bundle(kind: NoticeKind = NoticeKind.ADMIT, **changes: Any) -> Json:
    """The notification Bundle of :func:`notice`."""
    return notification_bundle(
        notice(kind, **changes), SPEC, event_code=CODES[kind], timestamp=ADMITTED
    )
