"""Typed ADT domain events extracted from HL7v2 messages. Pure: no I/O.

These frozen pydantic models are what the rest of cm-fhir sees of an ADT message: no HL7 syntax,
no separators, no escape sequences. Absent values are ``None`` or empty tuples. Explicit HL7 nulls
(``""``, "delete this value") are never stored as values; the positions that carried one are listed
in :attr:`AdtEvent.cleared` (e.g. ``("PV1-45", "PV2-9")``) so a consumer can clear what it holds.
Codes that pass through a concept map carry both the source code and the mapped target, with an
explicit ``mapped`` flag for codes the map does not know.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from cm_fhir.hl7v2.structures import AdtEventCode
from cm_fhir.mapping.adt_maps import MappedCode

__all__ = [
    "AdtEvent",
    "Diagnosis",
    "Insurance",
    "Location",
    "MappedCode",
    "Merge",
    "Patient",
    "PatientIdentifier",
    "PersonName",
    "Practitioner",
    "UnsupportedMessage",
    "Visit",
    "VisitIdentifier",
]


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PatientIdentifier(_Event):
    """One PID-3 (or MRG-1) repetition: CX.1 id, CX.4 assigning authority, CX.5 type code."""

    value: str
    assigning_authority: str | None = None
    type_code: str | None = None


class VisitIdentifier(_Event):
    """A CX visit or account number (PID-18, PV1-50): CX.1 id and CX.4 assigning authority."""

    value: str
    assigning_authority: str | None = None


class PersonName(_Event):
    """XPN/XCN name parts: family, given names (first, then middle), prefix and suffix."""

    family: str | None = None
    given: tuple[str, ...] = ()
    prefix: str | None = None
    suffix: str | None = None


class Practitioner(_Event):
    """A doctor from an XCN field (PV1-7 attending, PV1-17 admitting): XCN.1 id and name."""

    id: str | None = None
    name: PersonName | None = None


class Patient(_Event):
    """The patient from PID: identifiers (PID-3), name (PID-5), PID-7, PID-8, the account number
    (PID-18), PID-29, PID-30."""

    identifiers: tuple[PatientIdentifier, ...] = ()
    name: PersonName | None = None
    birth_date: date | None = None
    sex: str | None = None
    account_number: VisitIdentifier | None = None
    death_time: datetime | None = None
    deceased: bool | None = None


class Location(_Event):
    """A PL location (PV1-3 current, PV1-6 prior): point of care, room, bed, facility, ..."""

    point_of_care: str | None = None
    room: str | None = None
    bed: str | None = None
    facility: str | None = None
    building: str | None = None
    floor: str | None = None


class Visit(_Event):
    """The visit from PV1/PV2: PV1-19 visit number (CX.1) and its assigning authority (CX.4),
    PV1-50 alternate visit id, and the rest of what the workflow reads."""

    visit_number: str | None = None
    visit_authority: str | None = None
    alternate_visit_id: VisitIdentifier | None = None
    patient_class: MappedCode | None = None
    location: Location | None = None
    prior_location: Location | None = None
    hospital_service: str | None = None
    attending: tuple[Practitioner, ...] = ()
    admitting: tuple[Practitioner, ...] = ()
    admit_time: datetime | None = None
    discharge_time: datetime | None = None
    discharge_disposition: MappedCode | None = None
    discharge_destination: MappedCode | None = None
    expected_discharge: datetime | None = None


class Diagnosis(_Event):
    """One DG1 segment: DG1-3 code, coding system and description, DG1-6 diagnosis type."""

    code: str | None = None
    system: str | None = None
    description: str | None = None
    type: str | None = None


class Insurance(_Event):
    """One IN1 segment: payer (IN1-3 id, IN1-4 name), plan (IN1-2) and member id (IN1-36/49)."""

    payer_id: str | None = None
    payer_name: str | None = None
    plan_id: str | None = None
    member_id: str | None = None


class Merge(_Event):
    """One PID/MRG pair of an A40: the surviving identifiers and the prior ones merged into them."""

    surviving_identifiers: tuple[PatientIdentifier, ...] = ()
    prior_identifiers: tuple[PatientIdentifier, ...] = ()
    prior_visit_number: str | None = None


class AdtEvent(_Event):
    """One supported ADT message as a domain event."""

    kind: Literal["adt-event"] = "adt-event"
    event: AdtEventCode
    structure: str
    version: str
    message_control_id: str
    message_time: datetime | None = None
    sending_application: str | None = None
    sending_facility: str | None = None
    recorded_time: datetime | None = None
    occurred_time: datetime | None = None
    patient: Patient
    visit: Visit | None = None
    diagnoses: tuple[Diagnosis, ...] = ()
    insurances: tuple[Insurance, ...] = ()
    merges: tuple[Merge, ...] = ()
    cleared: tuple[str, ...] = ()

    @property
    def trigger_time(self) -> datetime | None:
        """When the event happened: EVN-6, else EVN-2, else MSH-7."""
        return self.occurred_time or self.recorded_time or self.message_time


class UnsupportedMessage(_Event):
    """A well-formed message whose type or event we do not process (the listener ignores it)."""

    kind: Literal["unsupported"] = "unsupported"
    message_type: str
    event: str | None = None
    version: str
    message_control_id: str
    reason: str
