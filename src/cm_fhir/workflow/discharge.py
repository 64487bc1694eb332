"""Discharge: the planning before it, the work it creates, undoing it on A13, and closing. Pure.

A16, or a PV2-9 expected discharge date on any event, sets the plan's expected date and creates
the discharge-planning tasks once per discharge. A03 records the discharge, creates the follow-up
tasks and the post-acute referral chosen by the mapped disposition (a generic task, flagged, for
a disposition the map does not know), activates the plan and moves the case to ``transition``; a
qualifying discharge of a visit without a case opens one in ``transition``. A13 cancels exactly the
work of the discharge it cancels and puts the case back to ``active``. :func:`close_due_cases`
closes cases whose follow-up work is done, or whose time in transition is up.
"""

from __future__ import annotations

from datetime import datetime

from cm_fhir.domain.case import Case
from cm_fhir.domain.codes import CaseStatus, Disposition, PlanStatus
from cm_fhir.domain.task import OPEN_TASK_STATUSES
from cm_fhir.mapping.rules import DischargeRules
from cm_fhir.workflow import facts
from cm_fhir.workflow.actions import Step, revalidated
from cm_fhir.workflow.admission import (
    open_visit_case,
    refresh_case,
    screening_facts,
    team_party,
)
from cm_fhir.workflow.screening import screen
from cm_fhir.workflow.state import (
    EffectKind,
    EventEffect,
    Flag,
    Outcome,
    PatientState,
    VisitMemory,
    changed_cases,
    latest,
)

__all__ = ["cancel_discharge", "close_due_cases", "discharge", "plan_discharge"]


def plan_discharge(step: Step, visit: VisitMemory, *, pending: bool) -> VisitMemory:
    """The expected date on the plan and, once per discharge, the discharge-planning tasks."""
    case = step.open_case_of(visit)
    if case is None or case.discharge_plan is None or visit.discharged:
        return visit
    plan = case.discharge_plan
    if plan.expected_discharge != visit.expected_discharge:
        plan = plan.model_copy(update={"expected_discharge": visit.expected_discharge})
        case = revalidated(case, discharge_plan=plan)
        step.cases[case.id] = case
        step.note("pending_discharge", "expected-date-updated", case.id, plan.id)
    if not (pending or visit.expected_discharge is not None):
        return visit
    sequence = visit.discharges + 1
    team = team_party(step.rules, visit.team)
    created: list[str] = []
    for name, rule in step.rules.pending_discharge.tasks.items():
        task_id = facts.item_id(name, f"p{sequence}")
        case, added = step.add_task(case, f"pending_discharge.tasks.{name}", rule, task_id, team)
        if added:
            created.append(task_id)
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
        result = screen(screening_facts(step, visit), rules)
        if not result.eligible:
            step.note("screening", "not-qualified", None, None, Flag.NOT_QUALIFIED)
            step.last_discharge = latest([before, when])
            return visit.model_copy(update={"discharge_time": when, "discharges": sequence})
        admissions = visit.admissions + 1
        case = open_visit_case(step, visit, result, CaseStatus.TRANSITION)
        step.note("screening", "case-opened-at-discharge", case.id)
        visit = visit.model_copy(update={"case_id": case.id, "admissions": admissions})
        opened = True
    else:
        case = refresh_case(step, case, visit)
    team = team_party(rules, visit.team)
    plan_before = case.discharge_plan
    task_ids: list[str] = []
    for name, rule in rules.discharge.tasks.items():
        task_id = facts.item_id(name, f"d{sequence}")
        case, added = step.add_task(case, f"discharge.tasks.{name}", rule, task_id, team)
        task_ids += [task_id] if added else []
    referral_ids: list[str] = []
    disposition = event.visit.discharge_disposition
    chosen: Disposition | None = None
    if disposition is None:
        step.note("discharge.referrals", "no-disposition", case.id, None, Flag.NO_DISPOSITION)
    elif not disposition.mapped or disposition.target is None:
        task_id = facts.item_id("post-acute", f"d{sequence}")
        rule = rules.discharge.unmapped_disposition
        case, added = step.add_task(case, "discharge.unmapped_disposition", rule, task_id, team)
        task_ids += [task_id] if added else []
        step.note(
            "discharge.unmapped_disposition",
            "unmapped-disposition",
            case.id,
            task_id,
            Flag.UNMAPPED_DISPOSITION,
        )
        if disposition.target is not None:
            chosen = Disposition(disposition.target)
    else:
        chosen = Disposition(disposition.target)
        referral_rule = rules.discharge.referrals.get(chosen)
        if referral_rule is None:
            step.note("discharge.referrals", f"no-referral-for-{chosen.value}", case.id)
        else:
            ref_id = facts.item_id("referral", f"d{sequence}")
            case, added = step.add_referral(
                case,
                f"discharge.referrals.{chosen.value}",
                referral_rule,
                ref_id,
                facts.party(rules.discharge.referral_requester),
            )
            referral_ids += [ref_id] if added else []
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
        referral_ids=tuple(referral_ids),
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
    step.move(case, CaseStatus.ACTIVE, "event.A13")
    return cleared


def close_due_cases(state: PatientState, rules: DischargeRules, now: datetime) -> Outcome:
    """Close the cases in transition whose follow-up work is done, or whose time is up."""
    step = Step(state, rules, now)
    for visit in state.visits:
        case = step.open_case_of(visit)
        effects = visit.live_effects(EffectKind.DISCHARGE)
        if case is None or case.status != CaseStatus.TRANSITION or not effects:
            continue
        effect = effects[-1]
        done = rules.discharge.close_when_follow_up_done and _follow_up_done(case, effect)
        start = visit.discharge_time or case.status_history[-1].start
        expired = now >= start + rules.discharge.close_after
        if not (done or expired):
            continue
        rule = "discharge.close_when_follow_up_done" if done else "discharge.close_after"
        if not done:
            still_open = tuple(t.id for t in case.tasks if t.is_open)
            live_refs = tuple(r.id for r in case.referrals if r.status == PlanStatus.ACTIVE)
            case = step.withdraw(case, still_open, live_refs, "cancel", rule)
        if case.discharge_plan is not None and case.discharge_plan.status == PlanStatus.ACTIVE:
            plan = case.discharge_plan.model_copy(update={"status": PlanStatus.COMPLETED})
            case = revalidated(case, discharge_plan=plan)
            step.cases[case.id] = case
        step.move(case, CaseStatus.CLOSED, rule)
    after = step.state()
    return Outcome(
        state=after,
        changed_cases=changed_cases(state, after),
        trace=tuple(step.trace),
        lock_keys=state.patient_keys,
    )


def _follow_up_done(case: Case, effect: EventEffect) -> bool:
    tasks_done = all(
        t.status not in OPEN_TASK_STATUSES for t in case.tasks if t.id in effect.task_ids
    )
    referrals_done = all(
        r.fulfilment_status not in OPEN_TASK_STATUSES
        for r in case.referrals
        if r.id in effect.referral_ids
    )
    return tasks_done and referrals_done
