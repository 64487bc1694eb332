"""Turn one HL7v2 ADT message into an :class:`~cm_fhir.hl7v2.events.AdtEvent`. Pure: no I/O.

:func:`parse_adt` normalises the input, splits it with the light reader in
:mod:`cm_fhir.hl7v2.parse` and reads only the fields the case-management workflow needs, from the
segments by name (MSH, EVN, PID, PV1, PV2, DG1, IN1, MRG), so it does not depend on the message
structure's groups; Z-segments and any other segments are kept in the split and ignored. Messages
of another type, or ADT events we do not process, give an
:class:`~cm_fhir.hl7v2.events.UnsupportedMessage` the caller can mark as ignored. Broken messages
raise :class:`~cm_fhir.errors.Hl7ParseError`; versions outside 2.3-2.8 raise
:class:`~cm_fhir.errors.UnsupportedEventError`. Error messages name positions (``PV1-44``), never
values. Concept maps are passed in; nothing is loaded here.
"""

from __future__ import annotations

from datetime import datetime, tzinfo
from typing import cast

from cm_fhir.errors import Hl7ParseError, UnsupportedEventError
from cm_fhir.hl7v2.events import (
    AdtEvent,
    Diagnosis,
    Insurance,
    Location,
    MappedCode,
    Merge,
    Patient,
    PatientIdentifier,
    PersonName,
    Practitioner,
    UnsupportedMessage,
    Visit,
    VisitIdentifier,
)
from cm_fhir.hl7v2.normalise import normalise_message
from cm_fhir.hl7v2.parse import Hl7Message, Hl7Segment, parse_date, parse_dtm, parse_er7
from cm_fhir.hl7v2.structures import (
    SUPPORTED_EVENTS,
    AdtEventCode,
    is_supported_version,
    structure_for,
)
from cm_fhir.mapping.adt_maps import AdtConceptMaps, CodeMap

__all__ = ["parse_adt", "parse_adt_message"]


def parse_adt(
    raw: bytes | str, maps: AdtConceptMaps, *, default_tz: tzinfo | None = None
) -> AdtEvent | UnsupportedMessage:
    """Parse one raw ADT message (bytes or text, not yet normalised).

    ``default_tz`` is attached to date/times that carry no UTC offset; without it they stay naive.

    Raises:
        Hl7ParseError: the input is not HL7v2, or a needed field is missing or malformed.
        UnsupportedEventError: MSH-12 names a version outside 2.3-2.8.
        MappingError: a code is unknown to a concept map whose unmapped policy is ``error``.
    """
    return parse_adt_message(parse_er7(normalise_message(raw)), maps, default_tz=default_tz)


def parse_adt_message(
    message: Hl7Message, maps: AdtConceptMaps, *, default_tz: tzinfo | None = None
) -> AdtEvent | UnsupportedMessage:
    """Like :func:`parse_adt`, on a message already split by :func:`~.parse.parse_er7`."""
    return _AdtReader(message, maps, default_tz).read()


class _AdtReader:
    """Reads one message; remembers which fields held an explicit null."""

    def __init__(self, message: Hl7Message, maps: AdtConceptMaps, tz: tzinfo | None) -> None:
        self.message = message
        self.maps = maps
        self.tz = tz
        self.cleared: list[str] = []

    # -- field helpers -------------------------------------------------------------------------

    def _null(self, segment: Hl7Segment, n: int) -> bool:
        if segment.is_null(n):
            self.cleared.append(segment.location(n))
            return True
        return False

    def text(self, segment: Hl7Segment, n: int, component: int = 1) -> str | None:
        if self._null(segment, n):
            return None
        return segment.text(n, component)

    def moment(self, segment: Hl7Segment, n: int) -> datetime | None:
        value = None if self._null(segment, n) else segment.text(n)
        return None if value is None else parse_dtm(value, segment.location(n), self.tz)

    def identifiers(self, segment: Hl7Segment, n: int) -> tuple[PatientIdentifier, ...]:
        if self._null(segment, n):
            return ()
        found: list[PatientIdentifier] = []
        for rep in range(len(segment.repetitions(n))):
            parts = segment.components(n, rep)
            value = segment.text_in(parts, 1)
            if value is not None:
                found.append(
                    PatientIdentifier(
                        value=value,
                        assigning_authority=segment.text_in(parts, 4),
                        type_code=segment.text_in(parts, 5),
                    )
                )
        return tuple(found)

    def account(self, segment: Hl7Segment, n: int) -> VisitIdentifier | None:
        """A CX visit or account number: CX.1, and CX.4 (namespace, else universal id)."""
        if self._null(segment, n):
            return None
        parts = segment.components(n)
        value = segment.text_in(parts, 1)
        if value is None:
            return None
        return VisitIdentifier(value=value, assigning_authority=_authority(segment, parts))

    def practitioners(self, segment: Hl7Segment, n: int) -> tuple[Practitioner, ...]:
        if self._null(segment, n):
            return ()
        found: list[Practitioner] = []
        for rep in range(len(segment.repetitions(n))):
            parts = segment.components(n, rep)
            name = _name(segment, parts, offset=1)
            doctor_id = segment.text_in(parts, 1)
            if doctor_id is not None or name is not None:
                found.append(Practitioner(id=doctor_id, name=name))
        return tuple(found)

    def location(self, segment: Hl7Segment, n: int) -> Location | None:
        if self._null(segment, n):
            return None
        parts = segment.components(n)
        location = Location(
            point_of_care=segment.text_in(parts, 1),
            room=segment.text_in(parts, 2),
            bed=segment.text_in(parts, 3),
            facility=segment.text_in(parts, 4),
            building=segment.text_in(parts, 7),
            floor=segment.text_in(parts, 8),
        )
        return location if location != Location() else None

    def mapped(self, segment: Hl7Segment, n: int, code_map: CodeMap) -> MappedCode | None:
        code = self.text(segment, n)
        if code is None:
            return None
        return code_map.lookup(code, segment.location(n), display=segment.text(n, 2))

    # -- segments ------------------------------------------------------------------------------

    def read(self) -> AdtEvent | UnsupportedMessage:
        msh = self.message.msh
        message_type = msh.text(9, 1)
        if message_type is None:
            raise Hl7ParseError("MSH-9 message type is missing", location="MSH-9")
        control_id = msh.text(10)
        if control_id is None:
            raise Hl7ParseError("MSH-10 message control id is missing", location="MSH-10")
        version = msh.text(12)
        if version is None:
            raise Hl7ParseError("MSH-12 version is missing", location="MSH-12")
        if not is_supported_version(version):
            raise UnsupportedEventError(
                "MSH-12 names an HL7 version outside 2.3-2.8", location="MSH-12"
            )
        evn = self.message.first("EVN")
        event = msh.text(9, 2) or (evn.text(1) if evn is not None else None)
        if message_type != "ADT" or event not in SUPPORTED_EVENTS:
            reason = "not an ADT message" if message_type != "ADT" else "ADT event not supported"
            return UnsupportedMessage(
                message_type=message_type,
                event=event,
                version=version,
                message_control_id=control_id,
                reason=reason,
            )
        structure = msh.text(9, 3) or structure_for(event, version) or f"ADT_{event}"
        pid = self.message.first("PID")
        if pid is None:
            raise Hl7ParseError("message has no PID segment", location="PID")
        return AdtEvent(
            event=cast(AdtEventCode, event),
            structure=structure,
            version=version,
            message_control_id=control_id,
            message_time=self.moment(msh, 7),
            sending_application=msh.text(3),
            sending_facility=msh.text(4),
            recorded_time=self.moment(evn, 2) if evn is not None else None,
            occurred_time=self.moment(evn, 6) if evn is not None else None,
            patient=self.patient(pid),
            visit=self.visit(),
            diagnoses=tuple(self.diagnosis(dg1) for dg1 in self.message.all("DG1")),
            insurances=tuple(self.insurance(in1) for in1 in self.message.all("IN1")),
            merges=self.merges(),
            cleared=tuple(dict.fromkeys(self.cleared)),
        )

    def patient(self, pid: Hl7Segment) -> Patient:
        identifiers = self.identifiers(pid, 3)
        if not identifiers:
            raise Hl7ParseError("PID-3 holds no patient identifier", location="PID-3")
        birth = None if self._null(pid, 7) else pid.text(7)
        return Patient(
            identifiers=identifiers,
            name=None if self._null(pid, 5) else _legal_name(pid, 5),
            birth_date=None if birth is None else parse_date(birth, pid.location(7)),
            sex=self.text(pid, 8),
            account_number=self.account(pid, 18),
            death_time=self.moment(pid, 29),
            deceased=_yes_no(self.text(pid, 30)),
        )

    def visit(self) -> Visit | None:
        pv1 = self.message.first("PV1")
        if pv1 is None:
            return None
        pv2 = self.message.first("PV2")
        number = self.account(pv1, 19)
        return Visit(
            visit_number=number.value if number is not None else None,
            visit_authority=number.assigning_authority if number is not None else None,
            alternate_visit_id=self.account(pv1, 50),
            patient_class=self.mapped(pv1, 2, self.maps.patient_class),
            location=self.location(pv1, 3),
            prior_location=self.location(pv1, 6),
            hospital_service=self.text(pv1, 10),
            attending=self.practitioners(pv1, 7),
            admitting=self.practitioners(pv1, 17),
            admit_time=self.moment(pv1, 44),
            discharge_time=self.moment(pv1, 45),
            discharge_disposition=self.mapped(pv1, 36, self.maps.discharge_disposition),
            discharge_destination=self.mapped(pv1, 37, self.maps.discharge_destination),
            expected_discharge=self.moment(pv2, 9) if pv2 is not None else None,
        )

    def diagnosis(self, dg1: Hl7Segment) -> Diagnosis:
        return Diagnosis(
            code=self.text(dg1, 3, 1),
            system=dg1.text(3, 3) or dg1.text(2),
            description=dg1.text(3, 2) or dg1.text(4),
            type=self.text(dg1, 6),
        )

    def insurance(self, in1: Hl7Segment) -> Insurance:
        return Insurance(
            payer_id=self.text(in1, 3),
            payer_name=self.text(in1, 4),
            plan_id=self.text(in1, 2),
            member_id=self.text(in1, 36) or self.text(in1, 49),
        )

    def merges(self) -> tuple[Merge, ...]:
        merges: list[Merge] = []
        surviving: tuple[PatientIdentifier, ...] = ()
        for segment in self.message.segments:
            if segment.id == "PID":
                surviving = self.identifiers(segment, 3)
            elif segment.id == "MRG":
                prior = self.identifiers(segment, 1)
                if not prior:
                    raise Hl7ParseError("MRG-1 holds no prior identifier", location="MRG-1")
                merges.append(
                    Merge(
                        surviving_identifiers=surviving,
                        prior_identifiers=prior,
                        prior_visit_number=self.text(segment, 5),
                    )
                )
        return tuple(merges)


def _authority(segment: Hl7Segment, parts: list[str]) -> str | None:
    """CX.4 assigning authority: its namespace id, else its universal id."""
    return segment.text_in(parts, 4) or segment.text_in(parts, 4, 2)


def _yes_no(value: str | None) -> bool | None:
    """An HL7 table 0136 indicator: Y is True, N is False, anything else unknown."""
    flag = (value or "").strip().upper()
    return True if flag == "Y" else False if flag == "N" else None


def _name(segment: Hl7Segment, parts: list[str], offset: int = 0) -> PersonName | None:
    """An XPN name (``offset=0``) or the name inside an XCN (``offset=1``, after the id)."""
    given = tuple(
        value
        for value in (segment.text_in(parts, 2 + offset), segment.text_in(parts, 3 + offset))
        if value is not None
    )
    name = PersonName(
        family=segment.text_in(parts, 1 + offset),
        given=given,
        suffix=segment.text_in(parts, 4 + offset),
        prefix=segment.text_in(parts, 5 + offset),
    )
    return name if name != PersonName() else None


def _legal_name(pid: Hl7Segment, n: int) -> PersonName | None:
    """The repetition of PID-5 typed ``L`` (legal), else the first one."""
    repetitions = [pid.components(n, rep) for rep in range(len(pid.repetitions(n)))]
    if not repetitions:
        return None
    chosen = next((parts for parts in repetitions if pid.text_in(parts, 7) == "L"), repetitions[0])
    return _name(pid, chosen)
