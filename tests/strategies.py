"""Hypothesis strategies that build arbitrary valid :class:`~cm_fhir.domain.Case` values.

Every optional part of a case is sometimes present; tasks, goals, referrals and assessments have
unique ids; cross references are consistent (a task's care plan and focus goal exist, the care plan
names existing goals); the status history walks the case state machine and ``closed`` is set
exactly when the case ends. Decimals have at most two places and stay below one million, and
instants have second precision and one of a few fixed UTC offsets, so every value survives a JSON
round trip unchanged. Text avoids control characters, which FHIR strings do not allow. No I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, TypeVar

from hypothesis import strategies as st

from cm_fhir.domain import (
    CASE_TRANSITIONS,
    Assessment,
    AssessmentKind,
    AssessmentStatus,
    CarePlan,
    CareTeam,
    CareTeamMember,
    Case,
    CaseStatus,
    ClosingReason,
    Code,
    Coverage,
    DischargeNeedItem,
    DischargePlan,
    Goal,
    GoalAchievement,
    GoalLifecycle,
    GoalPriority,
    GoalTarget,
    Identifier,
    IdentifierKind,
    OutcomeEvaluation,
    PartyKind,
    PartyRef,
    PatientRef,
    Period,
    PlanStatus,
    Priority,
    Quantity,
    Range,
    Referral,
    ReferralSource,
    RiskEvaluation,
    RiskLevel,
    Screening,
    StatusChange,
    Strength,
    Task,
    TaskIntent,
    TaskStatus,
)
from cm_fhir.domain.case import FINAL_CASE_STATUSES
from cm_fhir.mapping.registry import default_registry

T = TypeVar("T")
Draw = Any  # hypothesis' DrawFn; kept loose so the composites stay readable

OFFSETS = (
    UTC,
    timezone(timedelta(hours=-5)),
    timezone(timedelta(hours=1)),
    timezone(timedelta(hours=5, minutes=30)),
)
CODE_SYSTEMS = (
    "http://snomed.info/sct",
    "http://loinc.org",
    "http://hl7.org/fhir/sid/icd-10-cm",
    "urn:oid:2.16.840.1.113883.3.4711.9",
)
IDENTIFIER_SYSTEMS = (
    "urn:oid:2.16.840.1.113883.3.4711.1",
    "http://hl7.org/fhir/sid/us-npi",
    "https://payer.example.org/sid/member",
)
UCUM = (("mg/dL", "mg/dL"), ("%", "%"), ("mm[Hg]", "mm[Hg]"), ("m", "m"), (None, None))
FINAL = FINAL_CASE_STATUSES

# Letters, digits, punctuation, symbols and the plain space: FHIR strings refuse control
# characters and other whitespace.
_CHARS = st.characters(categories=("L", "N", "P", "S"), include_characters=" ")
text = st.text(_CHARS, min_size=1, max_size=24).map(str.strip).filter(bool)
local_ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9\-]{0,11}", fullmatch=True)
tokens = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9.\-]{0,7}( [A-Za-z0-9]{1,4})?", fullmatch=True)
identifier_values = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9 /|,.\-]{0,10}[A-Za-z0-9]", fullmatch=True)


def vocabulary(system: str) -> st.SearchStrategy[str]:
    """A code of the bundled ``code-systems.yaml`` code system ``system``."""
    return st.sampled_from(sorted(default_registry().code_systems[system].concepts))


def maybe(strategy: st.SearchStrategy[T]) -> st.SearchStrategy[T | None]:
    return st.none() | strategy


def few(strategy: st.SearchStrategy[T], max_size: int = 2) -> st.SearchStrategy[tuple[T, ...]]:
    return st.lists(strategy, max_size=max_size).map(tuple)


instants = st.datetimes(
    min_value=datetime(2021, 1, 1),
    max_value=datetime(2030, 12, 31),
    timezones=st.sampled_from(OFFSETS),
).map(lambda d: d.replace(microsecond=0))
days = st.dates(min_value=date(2021, 1, 1), max_value=date(2031, 12, 31))
decimals = st.decimals(min_value=Decimal("-999999.99"), max_value=Decimal("999999.99"), places=2)
probabilities = st.decimals(min_value=Decimal(0), max_value=Decimal(1), places=2)

codes = st.builds(Code, system=st.sampled_from(CODE_SYSTEMS), code=tokens, display=maybe(text))
identifiers = st.builds(
    Identifier,
    system=st.sampled_from(IDENTIFIER_SYSTEMS),
    value=identifier_values,
    kind=maybe(st.sampled_from(IdentifierKind)),
    assigner=maybe(text),
)


@st.composite
def parties(draw: Draw, kinds: tuple[PartyKind, ...] = tuple(PartyKind)) -> PartyRef:
    identifier = draw(maybe(identifiers))
    display = draw(text if identifier is None else maybe(text))
    return PartyRef(kind=draw(st.sampled_from(kinds)), identifier=identifier, display=display)


people = parties((PartyKind.PRACTITIONER, PartyKind.PRACTITIONER_ROLE))
organisations = parties((PartyKind.ORGANIZATION,))
patients = st.builds(
    PatientRef, identifiers=st.lists(identifiers, min_size=1, max_size=3).map(tuple)
)


@st.composite
def quantities(draw: Draw) -> Quantity:
    unit, code = draw(st.sampled_from(UCUM))
    system = "http://unitsofmeasure.org" if code else None
    return Quantity(value=draw(decimals), unit=unit, system=system, code=code)


@st.composite
def ranges(draw: Draw) -> Range:
    low, high = sorted([draw(quantities()), draw(quantities())], key=lambda q: q.value)
    keep = draw(st.sampled_from(("low", "high", "both")))
    return Range(low=low if keep != "high" else None, high=high if keep != "low" else None)


@st.composite
def goal_targets(draw: Draw) -> GoalTarget:
    detail = draw(st.sampled_from(("value", "range", "text")))
    return GoalTarget(
        measure=draw(codes),
        value=draw(quantities()) if detail == "value" else None,
        range=draw(ranges()) if detail == "range" else None,
        text=draw(text) if detail == "text" else None,
    )


@st.composite
def goals(draw: Draw, goal_id: str, strength_ids: Sequence[str] = ()) -> Goal:
    target = draw(maybe(goal_targets()))
    start = draw(maybe(days))
    due = draw(days.filter(lambda d: start is None or d >= start))
    return Goal(
        id=goal_id,
        description=draw(text),
        category=draw(vocabulary("goal_category")),
        target=target,
        qualitative_reason=draw(text if target is None else maybe(text)),
        start=start,
        due=due,
        lifecycle=draw(st.sampled_from(GoalLifecycle)),
        achievement=draw(maybe(st.sampled_from(GoalAchievement))),
        priority=draw(st.sampled_from(GoalPriority)),
        expressed_by=draw(maybe(parties())),
        addresses=draw(few(codes)),
        builds_on=tuple(
            draw(st.lists(st.sampled_from(strength_ids), unique=True, max_size=2))
            if strength_ids
            else ()
        ),
    )


@st.composite
def status_histories(draw: Draw) -> tuple[tuple[StatusChange, ...], datetime | None]:
    """A walk through the case state machine, and ``closed`` (the start of a final status)."""
    status = draw(st.sampled_from((CaseStatus.REFERRED, CaseStatus.SCREENING, CaseStatus.ACTIVE)))
    start = draw(instants)
    changes: list[StatusChange] = []
    for _ in range(draw(st.integers(0, 4))):
        allowed = sorted(CASE_TRANSITIONS[status])
        if not allowed:
            break
        end = start + timedelta(seconds=draw(st.integers(0, 30 * 86_400)))
        changes.append(StatusChange(status=status, start=start, end=end))
        gap = timedelta(seconds=draw(st.sampled_from((0, 0, 3_600))))
        status, start = draw(st.sampled_from(allowed)), end + gap
    changes.append(StatusChange(status=status, start=start))
    return tuple(changes), start if status in FINAL else None


@st.composite
def assessments(draw: Draw, assessment_id: str, strength_ids: Sequence[str] = ()) -> Assessment:
    status = draw(st.sampled_from(AssessmentStatus))
    summary = draw(text if status == AssessmentStatus.COMPLETED else maybe(text))
    return Assessment(
        id=assessment_id,
        kind=draw(st.sampled_from(AssessmentKind)),
        status=status,
        requested=draw(instants),
        due=draw(instants),
        performer=draw(parties()),
        summary=summary,
        findings=draw(few(text)),
        strengths=tuple(Strength(id=i, description=draw(text)) for i in strength_ids),
    )


@st.composite
def tasks(draw: Draw, task_id: str, plan_ids: list[str], goal_ids: list[str]) -> Task:
    due = draw(instants)
    return Task(
        id=task_id,
        kind=draw(vocabulary("task_code")),
        description=draw(text),
        status=draw(st.sampled_from(TaskStatus)),
        intent=draw(st.sampled_from(TaskIntent)),
        priority=draw(st.sampled_from(Priority)),
        owner=draw(parties()),
        requester=draw(maybe(parties())),
        authored_on=draw(instants),
        not_before=start if (start := draw(maybe(instants))) is not None and start <= due else None,
        due=due,
        business_status=draw(maybe(text)),
        care_plan=draw(maybe(st.sampled_from(plan_ids))) if plan_ids else None,
        focus_goal=draw(maybe(st.sampled_from(goal_ids))) if goal_ids else None,
        notes=draw(few(text)),
    )


@st.composite
def referrals(draw: Draw, referral_id: str, plan_ids: list[str]) -> Referral:
    return Referral(
        id=referral_id,
        type=draw(vocabulary("referral_type")),
        service=draw(maybe(codes)),
        status=draw(st.sampled_from(PlanStatus)),
        priority=draw(st.sampled_from(Priority)),
        performer=draw(parties()),
        requester=draw(parties()),
        authored_on=draw(instants),
        due=draw(instants),
        reasons=draw(few(codes)),
        note=draw(maybe(text)),
        care_plan=draw(maybe(st.sampled_from(plan_ids))) if plan_ids else None,
        fulfilment_status=draw(st.sampled_from(TaskStatus)),
        fulfilment_business_status=draw(maybe(text)),
    )


@st.composite
def periods(draw: Draw) -> Period:
    start = draw(instants)
    end = draw(maybe(st.integers(0, 90 * 86_400)))
    return Period(start=start, end=None if end is None else start + timedelta(seconds=end))


@st.composite
def care_plans(draw: Draw, plan_id: str, goal_ids: list[str]) -> CarePlan:
    chosen = draw(st.lists(st.sampled_from(goal_ids), unique=True)) if goal_ids else []
    return CarePlan(
        id=plan_id,
        title=draw(text),
        description=draw(maybe(text)),
        status=draw(st.sampled_from(PlanStatus)),
        period=draw(maybe(periods())),
        author=draw(maybe(people)),
        goals=tuple(chosen),
    )


discharge_need_items = st.builds(
    DischargeNeedItem, need=vocabulary("discharge_need"), detail=maybe(text)
)


@st.composite
def discharge_plans(draw: Draw, plan_id: str) -> DischargePlan:
    return DischargePlan(
        id=plan_id,
        status=draw(st.sampled_from(PlanStatus)),
        expected_discharge=draw(maybe(days)),
        disposition=draw(maybe(vocabulary("discharge_disposition"))),
        post_acute_provider=draw(maybe(organisations)),
        needs=draw(few(discharge_need_items, 3)),
        barriers=draw(few(text)),
        follow_up=draw(few(text)),
        created=draw(instants),
        author=draw(maybe(people)),
    )


@st.composite
def outcomes(draw: Draw) -> OutcomeEvaluation:
    total = draw(st.integers(0, 6))
    return OutcomeEvaluation(
        evaluated_on=draw(days),
        goals_met=draw(st.integers(0, total)),
        goals_total=total,
        readmissions=draw(st.integers(0, 3)),
        ed_visits=draw(st.integers(0, 5)),
        summary=draw(maybe(text)),
        closing_reason=draw(maybe(st.sampled_from(ClosingReason))),
    )


care_teams = st.builds(
    CareTeam,
    id=local_ids,
    name=maybe(text),
    members=few(st.builds(CareTeamMember, role=codes, party=parties()), 3),
)
referral_sources = st.builds(
    ReferralSource, party=maybe(parties()), received=instants, reasons=few(codes), note=maybe(text)
)
screenings = st.builds(
    Screening, performed=instants, eligible=st.booleans(), criteria=few(codes), note=maybe(text)
)
risks = st.builds(
    RiskEvaluation,
    id=local_ids,
    evaluated=instants,
    level=st.sampled_from(RiskLevel),
    score=maybe(probabilities),
    drivers=few(codes),
    performer=maybe(people),
    note=maybe(text),
)
coverages = st.builds(Coverage, payer=organisations, member_id=identifier_values, plan=maybe(text))


def unique_ids(max_size: int) -> st.SearchStrategy[list[str]]:
    return st.lists(local_ids, max_size=max_size, unique=True)


@st.composite
def cases(draw: Draw) -> Case:
    """An arbitrary valid case with every optional part sometimes present."""
    history, closed = draw(status_histories())
    goal_ids = draw(unique_ids(3))
    plan_ids = draw(st.lists(local_ids, min_size=2, max_size=2, unique=True))
    care_plan = draw(maybe(care_plans(plan_ids[0], goal_ids)))
    discharge_plan = draw(maybe(discharge_plans(plan_ids[1])))
    present = [p.id for p in (care_plan, discharge_plan) if p is not None]
    assessment_ids = draw(unique_ids(3))
    strength_ids = draw(unique_ids(3)) if assessment_ids else []
    return Case(
        id=draw(local_ids),
        patient=draw(patients),
        programme=draw(vocabulary("programme")),
        models=tuple(draw(st.lists(vocabulary("case_management_model"), unique=True))),
        status=history[-1].status,
        status_history=history,
        closed=closed,
        case_manager=draw(maybe(people)),
        care_team=draw(maybe(care_teams)),
        managing_organization=draw(maybe(organisations)),
        referral_source=draw(maybe(referral_sources)),
        reasons=draw(few(codes, 3)),
        encounters=draw(few(identifiers)),
        coverage=draw(few(coverages)),
        screening=draw(maybe(screenings)),
        assessments=tuple(
            draw(assessments(i, strength_ids if n == 0 else ()))
            for n, i in enumerate(assessment_ids)
        ),
        risk=draw(maybe(risks)),
        goals=tuple(draw(goals(i, strength_ids)) for i in goal_ids),
        care_plan=care_plan,
        tasks=tuple(draw(tasks(i, present, goal_ids)) for i in draw(unique_ids(4))),
        referrals=tuple(draw(referrals(i, present)) for i in draw(unique_ids(3))),
        discharge_plan=discharge_plan,
        outcome=draw(maybe(outcomes())),
        next_review=draw(maybe(days)),
    )
