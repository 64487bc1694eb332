"""What the workflow reads from an ADT event, in domain terms, and the deterministic ids. Pure.

Patient identifiers, the visit identity, coverage, diagnoses and the event time come out of an
:class:`~cm_fhir.hl7v2.events.AdtEvent` as domain values, with identifier and code systems from the
rules file. A visit is its number (the first of the rules' ``identity.visit_number_fields`` that
holds one: PV1-19, PV1-50 or PID-18) qualified by its assigning authority (that field's CX.4, else
MSH-4). Ids are derived only from the patient's key, the visit's authority and number, the rule
and the sequence numbers, never from the time of processing, so replaying an inbox gives identical
cases: a case id is ``<prefix>-<visit number>-<12 hex digits of the SHA-256 of patient and
visit>`` (``<prefix>-x-<hash>`` when the number is not short and alphanumeric).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from datetime import date, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

from cm_fhir.domain.case import Coverage
from cm_fhir.domain.codes import IdentifierKind, PartyKind
from cm_fhir.domain.common import Code, Identifier, PartyRef, PatientRef
from cm_fhir.hl7v2.events import AdtEvent, PatientIdentifier, VisitIdentifier
from cm_fhir.mapping.rule_types import PartySpec
from cm_fhir.mapping.rules import DischargeRules
from cm_fhir.workflow.state import VisitMemory

__all__ = [
    "DISCHARGE_PLAN_ID",
    "age_at",
    "aware",
    "case_id",
    "coverage",
    "current_patient",
    "digest",
    "encounter",
    "event_json",
    "event_time",
    "item_id",
    "member_keys",
    "party",
    "patient_key",
    "patient_keys",
    "patient_ref",
    "reasons",
    "visit_identity",
    "visit_slug",
]

#: The local id of the discharge plan in every discharge-planning case.
DISCHARGE_PLAN_ID = "discharge-plan"

_SAFE_VISIT = re.compile(r"^[A-Za-z0-9]{1,24}$")
_KINDS = {kind.value: kind for kind in IdentifierKind}


def visit_slug(visit_number: str) -> str:
    """The readable part of a case id: the visit number when short and alphanumeric, else ``x``."""
    return visit_number if _SAFE_VISIT.match(visit_number) else "x"


def case_id(rules: DischargeRules, visit: VisitMemory, admission: int) -> str:
    """``dp-V100200-<hash>`` for a visit's first case, ``dp-V100200-<hash>-2`` after an A11 and a
    new admit. The hash covers the patient's key (identifier system with its authority, and
    value) and the visit's authority and number, so equal visit numbers of two facilities or
    two patients never share a case id (or anything derived from it)."""
    identity = "\n".join((visit.patient_key or "", visit.visit_authority or "", visit.visit_number))
    digest = hashlib.sha256(identity.encode()).hexdigest()[:12]
    base = f"{rules.case_id_prefix}-{visit_slug(visit.visit_number)}-{digest}"
    return base if admission == 1 else f"{base}-{admission}"


def visit_identity(event: AdtEvent, rules: DischargeRules) -> VisitIdentifier | None:
    """The visit's number and authority: the first field of ``identity.visit_number_fields``
    that holds a number, its CX.4 authority, else the sending facility (MSH-4); None if none."""
    for field in rules.identity.visit_number_fields:
        number, authority = _visit_field(event, field)
        if number is not None and number.strip():
            return VisitIdentifier.model_construct(
                value=number.strip(), assigning_authority=authority or event.sending_facility
            )
    return None


def _visit_field(event: AdtEvent, field: str) -> tuple[str | None, str | None]:
    """The number and authority in one of the visit fields."""
    visit = event.visit
    found: VisitIdentifier | None = None
    if field == "PID-18":
        found = event.patient.account_number
    elif visit is None:
        return None, None
    elif field == "PV1-50":
        found = visit.alternate_visit_id
    else:
        return visit.visit_number, visit.visit_authority
    return (found.value, found.assigning_authority) if found is not None else (None, None)


def item_id(rule: str, tag: str = "") -> str:
    """A task or referral id inside a case: the rule name, plus ``p1``/``d2`` for a sequence."""
    return f"{rule}-{tag}" if tag else rule


def aware(value: datetime, rules: DischargeRules) -> datetime:
    """``value`` with the rules' time zone attached when HL7 sent no offset."""
    return value if value.tzinfo is not None else value.replace(tzinfo=ZoneInfo(rules.timezone))


def event_time(event: AdtEvent, rules: DischargeRules, now: datetime) -> datetime:
    """When the event happened (EVN-6, EVN-2, MSH-7), else ``now``; always timezone-aware."""
    return aware(event.trigger_time or now, rules)


def age_at(birth: date, when: datetime) -> int:
    """Whole years between a birth date and a moment."""
    day = when.date()
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


def _identifier(pid: PatientIdentifier, rules: DischargeRules) -> Identifier:
    authority = pid.assigning_authority
    system = rules.identity.patient_systems.get(
        authority or "", rules.identity.default_patient_system
    )
    if authority and authority not in rules.identity.patient_systems:
        # Keep identifiers of different authorities apart even without a configured system.
        system = f"{system}:{_token(authority)}"
    return Identifier(
        system=system,
        value=pid.value.strip(),
        kind=_KINDS.get(pid.type_code or ""),
        assigner=authority,
    )


def _token(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "-", text.strip()) or "-"


@lru_cache(maxsize=4096)
def _qualified(system: str, authority: str) -> str:
    """``system:<authority>``: a system per authority that has none configured."""
    return f"{system}:{_token(authority)}"


def _primary_first(ids: tuple[PatientIdentifier, ...]) -> list[PatientIdentifier]:
    """The MR-typed identifier first (the MRN), the others in message order."""
    mrns = [i for i in ids if i.type_code == IdentifierKind.MRN.value]
    return mrns[:1] + [i for i in ids if not mrns or i is not mrns[0]]


def patient_ref(ids: tuple[PatientIdentifier, ...], rules: DischargeRules) -> PatientRef:
    """The patient reference from PID-3 (or MRG-1) repetitions, the MRN first."""
    found: list[Identifier] = []
    for pid in _primary_first(ids):
        ident = _identifier(pid, rules)
        if all((i.system, i.value) != (ident.system, ident.value) for i in found):
            found.append(ident)
    return PatientRef(identifiers=tuple(found))


def patient_key(ref: PatientRef) -> str:
    """The key the store locks and files a patient's state under: ``system|value`` of the MRN."""
    return f"{ref.primary.system}|{ref.primary.value}"


def member_keys(ref: PatientRef) -> tuple[str, ...]:
    """The keys a payer files and finds a member under: ``system|value`` of each member id of
    ``ref`` (identifiers typed ``MB``), else of its primary identifier."""
    members = tuple(
        f"{i.system}|{i.value}" for i in ref.identifiers if i.kind == IdentifierKind.MEMBER_ID
    )
    return tuple(dict.fromkeys(members)) or (patient_key(ref),)


def patient_keys(
    event: AdtEvent, rules: DischargeRules, ref: PatientRef | None = None
) -> tuple[str, ...]:
    """Every patient key an event touches: the patient (``ref``, when the caller has it), plus
    the prior patients of an A40."""
    keys = [patient_key(ref or patient_ref(event.patient.identifiers, rules))]
    for merge in event.merges:
        if merge.prior_identifiers:
            keys.append(patient_key(patient_ref(merge.prior_identifiers, rules)))
    return tuple(dict.fromkeys(keys))


def current_patient(ref: PatientRef, keys: Sequence[str], current: PatientRef | None) -> PatientRef:
    """The patient an event is applied for: the one its PID-3 names (``ref``), or the surviving
    patient (``current``) when PID-3 names a patient merged into it (one of ``keys[1:]``)."""
    if current is not None and len(keys) > 1 and patient_key(ref) in keys[1:]:
        return current
    return ref


def encounter(visit: VisitMemory, rules: DischargeRules) -> Identifier:
    """The visit's encounter identifier: the authority's system (``identity.visit_systems``, else
    ``visit_system:<authority>``), the visit number, and the authority as assigner."""
    authority = visit.visit_authority
    system = rules.identity.visit_system
    if authority:
        system = rules.identity.visit_systems.get(authority) or _qualified(system, authority)
    return Identifier(
        system=system, value=visit.visit_number, kind=IdentifierKind.VISIT, assigner=authority
    )


def coverage(event: AdtEvent, rules: DischargeRules) -> tuple[Coverage, ...]:
    """Coverage from IN1 segments that name a payer and a member id."""
    out: list[Coverage] = []
    for ins in event.insurances:
        if ins.member_id is None or (ins.payer_id is None and ins.payer_name is None):
            continue
        payer_id = (
            Identifier(system=rules.identity.payer_system, value=ins.payer_id)
            if ins.payer_id
            else None
        )
        payer = PartyRef(kind=PartyKind.ORGANIZATION, identifier=payer_id, display=ins.payer_name)
        out.append(Coverage(payer=payer, member_id=ins.member_id, plan=ins.plan_id))
    return tuple(out)


def reasons(event: AdtEvent, rules: DischargeRules) -> tuple[Code, ...]:
    """Diagnosis codes from DG1, in message order, without repeats."""
    found: list[Code] = []
    for dx in event.diagnoses:
        if dx.code is None or not dx.code.strip():
            continue
        systems = rules.identity.diagnosis_systems
        system = systems.get((dx.system or "").upper(), rules.identity.default_diagnosis_system)
        code = Code(system=system, code=" ".join(dx.code.split()), display=dx.description)
        if all((c.system, c.code) != (code.system, code.code) for c in found):
            found.append(code)
    return tuple(found)


def party(spec: PartySpec) -> PartyRef:
    """A team or organisation from the rules file as a domain party reference."""
    ident = (
        Identifier(system=spec.identifier.system, value=spec.identifier.value)
        if spec.identifier is not None
        else None
    )
    return PartyRef(kind=spec.kind, identifier=ident, display=spec.display)


def event_json(event: AdtEvent) -> str:
    """The event as JSON (what a visit's log keeps, deflated)."""
    return event.model_dump_json()


def digest(event: AdtEvent, text: str | None = None) -> str:
    """A digest of the event's content, to tell a resent message from a reused control id.

    ``text`` is the event's :func:`event_json` when the caller has it already.
    """
    data = text if text is not None else event_json(event)
    return hashlib.sha256(data.encode()).hexdigest()[:32]
