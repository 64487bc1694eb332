"""Discharge: the work A03 creates, and undoing it on A13. Pure.

A03 records the discharge, settles the planning work still open (cancel, flag or keep, per task
rule), creates the post-discharge tasks, the catch-up tasks no planning created, and the
post-acute referral if none was arranged for that disposition (flagged late); it activates the
plan and moves the case to ``transition``. An unmapped disposition creates no work and is flagged.
A qualifying discharge of a visit without a case opens one in ``transition``. A13 cancels exactly
the work of the discharge it cancels, asks again (new tasks) for the planning work that discharge
cancelled, and puts the case back to ``active``; when that discharge opened the case, the case gets
the admission work, as if the admit had come first. The planning before the discharge is
:mod:`cm_fhir.workflow.planning`; a death at discharge is :mod:`cm_fhir.workflow.lifecycle`.
"""

from __future__ import annotations

from cm_fhir.domain.case import Case
from cm_fhir.domain.codes import CaseStatus, DispositionCode, PlanStatus
from cm_fhir.workflow import facts
from cm_fhir.workflow.actions import Step, revalidated
from cm_fhir.workflow.admission import (
    admission_work,
    open_visit_case,
    refresh_case,
    screen_visit,
    team_party,
)
from cm_fhir.workflow.planning import (
    DISPOSITION_CHANGED,
    due_before_discharge,
    live_referrals,
    planned_rules,
    planning_effects,
    planning_tag,
    rule_name,
)
from cm_fhir.workflow.state import EffectKind, EventEffect, Flag, VisitMemory, latest

__all__ = ["cancel_discharge", "discharge"]

#: Business status of planning work A03 cancels because the patient left before it was done.
LEFT_BEFORE_DONE = "discharged before this was done"


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
    planned = planned_rules(visit, sequence)
    for name in rules.discharge.catch_up:
        if name in planned:
            continue
        rule = rules.pending_discharge.tasks[name]
        task_id = facts.item_id(name, planning_tag(visit, sequence))
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
