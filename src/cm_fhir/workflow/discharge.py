"""Discharge: the planning before it, the work it creates, and undoing it on A13. Pure.

Planning starts as soon as the discharge is known. A16, or a PV2-9 expected discharge date on any
event, sets the plan's expected date and creates the discharge-planning tasks once per discharge
(among them booking the follow-up visit). A PV1-36 disposition on any event before the discharge,
or an ``admission.post_acute`` rule at the admission, starts the post-acute referral of that
disposition. Work with ``before_discharge`` is due that long before the expected discharge day,
and follows the day when it moves.
A03 records the discharge, settles the planning work still open (cancel, flag or keep, per task
rule), creates the post-discharge tasks, the catch-up tasks no planning created, and the
post-acute referral if none was arranged for that disposition (flagged late); it activates the
plan and moves the case to ``transition``. An unmapped disposition creates no work and is flagged.
A qualifying discharge of a visit without a case opens one in ``transition``. A13 cancels exactly
the work of the discharge it cancels, asks again (new tasks) for the planning work that discharge
cancelled, and puts the case back to ``active``; when that discharge opened the case, the case gets
the admission work, as if the admit had come first.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import TypeVar
from zoneinfo import ZoneInfo

from cm_fhir.domain.case import Case
from cm_fhir.domain.codes import CaseStatus, DispositionCode, PlanStatus
from cm_fhir.domain.referral import Referral
from cm_fhir.domain.task import Task
from cm_fhir.workflow import facts
from cm_fhir.workflow.actions import Step, revalidated
from cm_fhir.workflow.admission import (
    admission_work,
    open_visit_case,
    refresh_case,
    screen_visit,
    screening_facts,
    team_party,
)
from cm_fhir.workflow.screening import screen
from cm_fhir.workflow.state import EffectKind, EventEffect, Flag, VisitMemory, latest

__all__ = [
    "cancel_discharge",
    "discharge",
    "due_before_discharge",
    "live_referrals",
    "plan_discharge",
    "planning_effects",
    "rule_name",
]

#: Business status of planning work A03 cancels because the patient left before it was done.
LEFT_BEFORE_DONE = "discharged before this was done"
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


def _planned(visit: VisitMemory, sequence: int) -> set[str]:
    """The rule names of the planning tasks that hold for discharge ``sequence``."""
    return {rule_name(i) for e in planning_effects(visit, sequence) for i in e.task_ids}


def rule_name(task_id: str) -> str:
    """The rule a planning task came from: ``dme`` for ``dme-p1`` or ``dme-p2r1``."""
    return task_id.rsplit("-p", 1)[0]


def live_referrals(case: Case, ids: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Those of ``ids`` whose referral is still draft, active or on hold."""
    live = {PlanStatus.DRAFT, PlanStatus.ACTIVE, PlanStatus.ON_HOLD}
    return tuple(r.id for r in case.referrals if r.id in ids and r.status in live)


def _planning_tag(visit: VisitMemory, sequence: int) -> str:
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
    tag = _planning_tag(visit, sequence)
    team = team_party(step.rules, visit.team)
    created: list[str] = []
    if pending or visit.expected_discharge is not None:
        planned = _planned(visit, sequence)
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
        flag = Flag.UNMAPPED_DISPOSITION
        step.note(
            "adt-concept-maps.discharge_disposition", "unmapped-disposition", case.id, None, flag
        )
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


def discharge(step: Step, visit: VisitMemory) -> VisitMemory:
    """A03: record the discharge and create its work."""
    event = step.event
    assert event is not None
    assert event.visit is not None
    assert step.patient is not None
    rules = step.rules
    when = facts.aware(event.visit.discharge_time, rules) if event.visit.discharge_time else step.at
    if visit.discharged:
        # The same discharge again (resent under a new control id): no new work.
        step.note("discharge", "discharge-time-updated", visit.case_id)
        return visit.model_copy(update={"discharge_time": when})
    sequence = visit.discharges + 1
    before = step.last_discharge
    case = step.open_case_of(visit)
    opened = False
    if case is None:
        result = screen_visit(step, visit)
        if result is None:
            step.last_discharge = latest([before, when])
            return visit.model_copy(update={"discharge_time": when, "discharges": sequence})
        case = open_visit_case(step, visit, result, CaseStatus.TRANSITION)
        step.note("screening", "case-opened-at-discharge", case.id)
        visit = visit.model_copy(update={"case_id": case.id, "admissions": visit.admissions + 1})
        opened = True
    else:
        case = refresh_case(step, case, visit)
    team = team_party(rules, visit.team)
    plan_before = case.discharge_plan
    case, withdrawn = _settle_planning(step, visit, case, sequence)
    task_ids: list[str] = []
    planned = _planned(visit, sequence)
    for name in rules.discharge.catch_up:
        if name in planned:
            continue
        rule = rules.pending_discharge.tasks[name]
        task_id = facts.item_id(name, _planning_tag(visit, sequence))
        case, added = step.add_task(case, "discharge.catch_up", rule, task_id, team)
        task_ids += [task_id] if added else []
    for name, rule in rules.discharge.tasks.items():
        task_id = facts.item_id(name, f"d{sequence}")
        case, added = step.add_task(case, f"discharge.tasks.{name}", rule, task_id, team)
        task_ids += [task_id] if added else []
    case, chosen, referral_ids = _referral_at_discharge(step, visit, case, sequence)
    if case.discharge_plan is not None:
        plan = case.discharge_plan.model_copy(
            update={"status": PlanStatus.ACTIVE, "disposition": chosen}
        )
        case = revalidated(case, discharge_plan=plan)
        step.cases[case.id] = case
    step.move(case, CaseStatus.TRANSITION, "discharge")
    effect = EventEffect(
        kind=EffectKind.DISCHARGE,
        message_control_id=event.message_control_id,
        sequence=sequence,
        case_id=case.id,
        opened_case=opened,
        task_ids=tuple(task_ids),
        referral_ids=referral_ids,
        withdrawn_task_ids=withdrawn,
        plan_before=plan_before,
        last_discharge_before=before,
    )
    step.last_discharge = latest([before, when])
    return visit.model_copy(
        update={
            "discharge_time": when,
            "discharges": sequence,
            "effects": (*visit.effects, effect),
        }
    )


def _settle_planning(
    step: Step, visit: VisitMemory, case: Case, sequence: int
) -> tuple[Case, tuple[str, ...]]:
    """Planning tasks still open at A03: cancelled, flagged or kept, as their rule says; the
    case and the cancelled ids."""
    rules = step.rules.pending_discharge.tasks
    cancel: list[str] = []
    for effect in planning_effects(visit, sequence):
        for task in case.tasks:
            if task.id not in effect.task_ids or not task.is_open:
                continue
            name = rule_name(task.id)
            how = rules[name].at_discharge if name in rules else "flag"
            if how == "cancel":
                cancel.append(task.id)
            elif how == "flag":
                flag = Flag.PRE_DISCHARGE_WORK_OPEN
                step.note(
                    f"pending_discharge.tasks.{name}", "open-at-discharge", case.id, task.id, flag
                )
    if not cancel:
        return case, ()
    rule = "pending_discharge.at_discharge"
    case = step.withdraw(case, tuple(cancel), (), "cancel", rule, LEFT_BEFORE_DONE)
    return case, tuple(cancel)


def _referral_at_discharge(
    step: Step, visit: VisitMemory, case: Case, sequence: int
) -> tuple[Case, DispositionCode | None, tuple[str, ...]]:
    """The post-acute referral of the A03 disposition, unless planning already arranged it."""
    event = step.event
    assert event is not None
    assert event.visit is not None
    rules = step.rules
    code = event.visit.discharge_disposition
    if code is None:
        step.note("discharge.referrals", "no-disposition", case.id, None, Flag.NO_DISPOSITION)
        return case, None, ()
    if not code.mapped or code.target is None:
        flag = Flag.UNMAPPED_DISPOSITION
        step.note(
            "adt-concept-maps.discharge_disposition", "unmapped-disposition", case.id, None, flag
        )
        return case, code.target if code.target is not None else None, ()
    chosen = code.target
    rule = rules.discharge.referrals.get(chosen)
    earlier = live_referrals(
        case, [i for e in planning_effects(visit, sequence) for i in e.referral_ids]
    )
    arranged = [r for r in case.referrals if r.id in earlier and rule and r.type == rule.type]
    if arranged:
        step.note(f"discharge.referrals.{chosen}", "referral-arranged", case.id, arranged[0].id)
        return case, chosen, ()
    case = step.withdraw(case, (), earlier, "cancel", "discharge.referrals", DISPOSITION_CHANGED)
    if rule is None:
        step.note("discharge.referrals", f"no-referral-for-{chosen}", case.id)
        return case, chosen, ()
    ref_id = facts.item_id("referral", f"d{sequence}")
    requester = facts.party(rules.discharge.referral_requester)
    path = f"discharge.referrals.{chosen}"
    case, added = step.add_referral(case, path, rule, ref_id, requester)
    if added:
        step.note(path, "referral-after-discharge", case.id, ref_id, Flag.LATE_REFERRAL)
    return case, chosen, (ref_id,) if added else ()


def cancel_discharge(step: Step, visit: VisitMemory) -> VisitMemory:
    """A13: cancel the work of the latest discharge and put the case back to active."""
    effects = visit.live_effects(EffectKind.DISCHARGE)
    if not visit.discharged:
        step.note("event.A13", "nothing-to-undo", visit.case_id, None, Flag.NOTHING_TO_UNDO)
        return visit
    cleared = visit.model_copy(update={"discharge_time": None})
    if not effects:  # a discharge that opened no case: only the visit memory changes
        step.note("event.A13", "discharge-cancelled", None)
        return cleared
    effect = effects[-1]
    step.last_discharge = effect.last_discharge_before
    case = step.cases.get(effect.case_id)
    undone = tuple(
        e.model_copy(update={"undone": True}) if e == effect else e for e in visit.effects
    )
    cleared = cleared.model_copy(update={"effects": undone})
    if case is None or case.is_final:
        step.note("event.A13", "case-final", effect.case_id, None, Flag.CASE_FINAL)
        return cleared
    case = step.withdraw(case, effect.task_ids, effect.referral_ids, "cancel", "event.A13")
    if effect.plan_before is not None and case.discharge_plan is not None:
        restored = case.discharge_plan.model_copy(
            update={
                "status": effect.plan_before.status,
                "disposition": effect.plan_before.disposition,
            }
        )
        case = revalidated(case, discharge_plan=restored)
        step.cases[case.id] = case
    case = step.move(case, CaseStatus.ACTIVE, "event.A13")
    cleared = _replan(step, cleared, case, effect.withdrawn_task_ids)
    if effect.opened_case:
        # The discharge opened the case: it is an inpatient case now, admitted as usual.
        step.note("event.A13", "case-admitted", case.id)
        return admission_work(step, cleared, step.cases[case.id], opened=True)
    return cleared


def _replan(step: Step, visit: VisitMemory, case: Case, withdrawn: tuple[str, ...]) -> VisitMemory:
    """A13: planning work the cancelled discharge cancelled is needed again, as new tasks."""
    sequence = visit.discharges + 1
    rules = step.rules.pending_discharge.tasks
    team = team_party(step.rules, visit.team)
    created: list[str] = []
    for old in withdrawn:
        name = rule_name(old)
        rule = rules.get(name)
        if rule is None:
            continue
        task_id = facts.item_id(name, f"p{sequence}")
        due = due_before_discharge(step, visit, rule.due, rule.before_discharge)
        case, added = step.add_task(case, "event.A13", rule, task_id, team, due)
        created += [task_id] if added else []
    if not created:
        return visit
    effect = EventEffect(
        kind=EffectKind.PENDING_DISCHARGE,
        message_control_id=step.control_id or "",
        sequence=sequence,
        case_id=case.id,
        task_ids=tuple(created),
    )
    return visit.model_copy(update={"effects": (*visit.effects, effect)})
