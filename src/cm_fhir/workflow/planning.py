"""Discharge planning: what is known before the discharge, and the work it starts. Pure.

Planning starts as soon as the discharge is known. A16, or a PV2-9 expected discharge date on any
event, sets the plan's expected date and creates the discharge-planning tasks once per discharge
(among them booking the follow-up visit). A PV1-36 disposition on any event before the discharge,
or an ``admission.post_acute`` rule at the admission, starts the post-acute referral of that
disposition. Work with ``before_discharge`` is due that long before the expected discharge day,
and follows the day when it moves. An unmapped PV1-36 starts nothing; it is flagged on A16 only
(on admits, transfers and updates it is often left over). The discharge itself is
:mod:`cm_fhir.workflow.discharge`.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import TypeVar
from zoneinfo import ZoneInfo

from cm_fhir.domain.case import Case
from cm_fhir.domain.codes import DispositionCode, PlanStatus
from cm_fhir.domain.referral import Referral
from cm_fhir.domain.task import Task
from cm_fhir.workflow import facts
from cm_fhir.workflow.actions import Step, revalidated
from cm_fhir.workflow.admission import screening_facts, team_party
from cm_fhir.workflow.screening import screen
from cm_fhir.workflow.state import EffectKind, EventEffect, Flag, VisitMemory

__all__ = [
    "DISPOSITION_CHANGED",
    "due_before_discharge",
    "live_referrals",
    "plan_discharge",
    "planned_rules",
    "planning_effects",
    "planning_tag",
    "rule_name",
]

#: Business status of a pre-discharge referral replaced by another disposition.
DISPOSITION_CHANGED = "the discharge disposition changed"


def due_before_discharge(
    step: Step,
    visit: VisitMemory,
    due: timedelta,
    before: timedelta | None,
    since: datetime | None = None,
) -> datetime:
    """``due`` after ``since`` (the event), brought forward to ``before`` ahead of the expected
    discharge day (00:00 in the rules' time zone) when the rule says so and the date is known;
    never earlier than ``since``."""
    start = since or step.at
    at = start + due
    if before is None or visit.expected_discharge is None:
        return at
    day = datetime.combine(visit.expected_discharge, time(0), ZoneInfo(step.rules.timezone))
    return max(start, min(at, day - before))


def planning_effects(visit: VisitMemory, sequence: int) -> list[EventEffect]:
    """The live planning effects for discharge ``sequence``: its own, and those of earlier
    discharges that A13 cancelled (that planning still holds for the next discharge)."""
    done = {e.sequence for e in visit.live_effects(EffectKind.DISCHARGE) if e.sequence < sequence}
    return [
        e
        for e in visit.live_effects(EffectKind.PENDING_DISCHARGE)
        if e.sequence <= sequence and e.sequence not in done
    ]


def planned_rules(visit: VisitMemory, sequence: int) -> set[str]:
    """The rule names of the planning tasks that hold for discharge ``sequence``."""
    return {rule_name(i) for e in planning_effects(visit, sequence) for i in e.task_ids}


def rule_name(task_id: str) -> str:
    """The rule a planning task came from: ``dme`` for ``dme-p1`` or ``dme-p2r1``."""
    return task_id.rsplit("-p", 1)[0]


def live_referrals(case: Case, ids: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Those of ``ids`` whose referral is still draft, active or on hold."""
    live = {PlanStatus.DRAFT, PlanStatus.ACTIVE, PlanStatus.ON_HOLD}
    return tuple(r.id for r in case.referrals if r.id in ids and r.status in live)


def planning_tag(visit: VisitMemory, sequence: int) -> str:
    """``p1``, or ``p1r2`` once an A25 undid planning of this discharge (new ids, new work)."""
    undone = sum(
        1
        for e in visit.effects
        if e.kind == EffectKind.PENDING_DISCHARGE and e.sequence == sequence and e.undone
    )
    return f"p{sequence}" if undone == 0 else f"p{sequence}r{undone}"


def plan_discharge(step: Step, visit: VisitMemory, *, pending: bool) -> VisitMemory:
    """The expected date on the plan and, once per discharge, the discharge-planning tasks and
    the post-acute referral of a disposition known before the discharge."""
    case = step.open_case_of(visit)
    if case is None or case.discharge_plan is None or visit.discharged:
        return visit
    plan = case.discharge_plan
    if plan.expected_discharge != visit.expected_discharge:
        plan = plan.model_copy(update={"expected_discharge": visit.expected_discharge})
        case = revalidated(case, discharge_plan=plan)
        step.cases[case.id] = case
        step.note("pending_discharge", "expected-date-updated", case.id, plan.id)
        case = _follow_expected_date(step, visit, case)
    sequence = visit.discharges + 1
    tag = planning_tag(visit, sequence)
    team = team_party(step.rules, visit.team)
    created: list[str] = []
    if pending or visit.expected_discharge is not None:
        planned = planned_rules(visit, sequence)
        for name, rule in step.rules.pending_discharge.tasks.items():
            if name in planned:
                continue
            task_id = facts.item_id(name, tag)
            due = due_before_discharge(step, visit, rule.due, rule.before_discharge)
            rule_path = f"pending_discharge.tasks.{name}"
            case, added = step.add_task(case, rule_path, rule, task_id, team, due)
            created += [task_id] if added else []
    referrals = _early_referral(step, visit, case, sequence, tag)
    if not (created or referrals):
        return visit
    effect = EventEffect(
        kind=EffectKind.PENDING_DISCHARGE,
        message_control_id=step.control_id or "",
        sequence=sequence,
        case_id=case.id,
        task_ids=tuple(created),
        referral_ids=referrals,
    )
    return visit.model_copy(update={"effects": (*visit.effects, effect)})


_Dated = TypeVar("_Dated", Task, Referral)


def _moved_due(
    step: Step,
    visit: VisitMemory,
    case: Case,
    item: _Dated,
    due: timedelta,
    before: timedelta,
    rule: str,
) -> _Dated:
    """``item`` (a task or referral) with its due date moved to follow the expected discharge."""
    moved = due_before_discharge(step, visit, due, before, since=item.authored_on)
    if moved == item.due:
        return item
    step.note(rule, "due-moved", case.id, item.id)
    return item.model_copy(update={"due": moved})


def _follow_expected_date(step: Step, visit: VisitMemory, case: Case) -> Case:
    """The expected date moved: open planning work due before it moves with it."""
    effects = planning_effects(visit, visit.discharges + 1)
    planned = {i for e in effects for i in (*e.task_ids, *e.referral_ids)}
    rules = step.rules
    tasks = []
    for task in case.tasks:
        rule = rules.pending_discharge.tasks.get(rule_name(task.id))
        if task.id in planned and task.is_open and rule and rule.before_discharge is not None:
            task = _moved_due(
                step,
                visit,
                case,
                task,
                rule.due,
                rule.before_discharge,
                "pending_discharge.before_discharge",
            )
        tasks.append(task)
    disposition = case.discharge_plan.disposition if case.discharge_plan else None
    ref_rule = rules.discharge.referrals.get(disposition) if disposition else None
    live = live_referrals(case, list(planned))
    referrals = []
    for ref in case.referrals:
        if ref.id in live and ref_rule is not None and ref_rule.before_discharge is not None:
            ref = _moved_due(
                step,
                visit,
                case,
                ref,
                ref_rule.due,
                ref_rule.before_discharge,
                "discharge.referrals",
            )
        referrals.append(ref)
    changed = revalidated(case, tasks=tuple(tasks), referrals=tuple(referrals))
    step.cases[case.id] = changed
    return changed


def _early_referral(
    step: Step, visit: VisitMemory, case: Case, sequence: int, tag: str
) -> tuple[str, ...]:
    """A PV1-36 disposition before the discharge, or an ``admission.post_acute`` rule at the
    admission: start (or switch) the post-acute referral."""
    event = step.event
    code = event.visit.discharge_disposition if event and event.visit else None
    plan = case.discharge_plan
    if plan is None:
        return ()
    if code is None:
        chosen = _admission_disposition(step, visit, plan.disposition)
        if chosen is None:
            return ()
    elif not code.mapped or code.target is None:
        # PV1-36 of an admit, transfer or update is often left over or local: only a pending
        # discharge's (and the discharge's own) is worth a person's look.
        if event is not None and event.event == "A16":
            flag = Flag.UNMAPPED_DISPOSITION
            where = "adt-concept-maps.discharge_disposition"
            step.note(where, "unmapped-disposition", case.id, None, flag)
        return ()
    else:
        chosen = code.target
    if plan.disposition == chosen:
        return ()
    earlier = [i for e in planning_effects(visit, sequence) for i in e.referral_ids]
    case = step.withdraw(
        case,
        (),
        live_referrals(case, earlier),
        "cancel",
        "discharge.referrals",
        DISPOSITION_CHANGED,
    )
    case = revalidated(case, discharge_plan=plan.model_copy(update={"disposition": chosen}))
    step.cases[case.id] = case
    step.note("discharge.referrals", f"disposition-{chosen}", case.id, plan.id)
    rule = step.rules.discharge.referrals.get(chosen)
    if rule is None:
        return ()
    ref_id = facts.item_id(f"referral-{chosen}", tag)
    due = due_before_discharge(step, visit, rule.due, rule.before_discharge)
    requester = facts.party(step.rules.discharge.referral_requester)
    path = f"discharge.referrals.{chosen}"
    _, added = step.add_referral(case, path, rule, ref_id, requester, due)
    return (ref_id,) if added else ()


def _admission_disposition(
    step: Step, visit: VisitMemory, known: DispositionCode | None
) -> DispositionCode | None:
    """At an admission whose plan names no disposition yet: the first matching rule's."""
    event = step.event
    if event is None or event.event not in _ADMISSIONS or known is not None:
        return None
    found = screening_facts(step, visit)
    for i, rule in enumerate(step.rules.admission.post_acute):
        # A rule's condition is a screening criterion, evaluated the way screening does.
        if screen(found, step.rules.model_copy(update={"screening": rule.when})).eligible:
            step.note(f"admission.post_acute[{i}]", f"disposition-{rule.disposition}")
            return rule.disposition
    return None


_ADMISSIONS = frozenset({"A01", "A04", "A05", "A06", "A14"})
