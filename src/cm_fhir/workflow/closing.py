"""Closing cases on the clock: :func:`close_due_cases`, run on a schedule. Pure.

A case in ``transition`` closes once the work of its latest discharge is done (the planning and
discharge tasks and the referral of that discharge; for a patient who died, the ``death`` tasks),
when ``discharge.close_when_follow_up_done`` is on; or ``discharge.close_after`` after the
discharge. Whatever is still open at closing is cancelled. Fulfilled live referrals and an active
discharge plan are completed at closing. Cases in any other status never close on the clock.
"""

from __future__ import annotations

from datetime import datetime

from cm_fhir.domain.case import Case
from cm_fhir.domain.codes import CaseStatus, PlanStatus
from cm_fhir.domain.task import OPEN_TASK_STATUSES
from cm_fhir.mapping.rules import DischargeRules
from cm_fhir.workflow.actions import Step, revalidated
from cm_fhir.workflow.planning import live_referrals, planning_effects
from cm_fhir.workflow.state import EffectKind, Outcome, PatientState, VisitMemory, changed_cases

__all__ = ["close_due_cases"]

#: Business status of work cancelled because its case closed.
CASE_CLOSED = "the case closed"


def close_due_cases(state: PatientState, rules: DischargeRules, now: datetime) -> Outcome:
    """Close the cases in transition whose follow-up work is done, or whose time is up.

    The follow-up work is what the latest discharge created, before and at the discharge (its
    tasks and referrals), or the death tasks of a patient who died. Work still open at closing
    (any of it when ``close_after`` ends; otherwise work outside the follow-up, such as an
    unfinished admission task) is cancelled; referrals whose fulfilment is done are completed.
    """
    step = Step(state, rules, now)
    for visit in state.visits:
        case = step.open_case_of(visit)
        work = _follow_up_work(visit)
        if case is None or case.status != CaseStatus.TRANSITION or work is None:
            continue
        task_ids, referral_ids = work
        done = rules.discharge.close_when_follow_up_done and _done(case, task_ids, referral_ids)
        start = visit.discharge_time or case.status_history[-1].start
        expired = now >= start + rules.discharge.close_after
        if not (done or expired):
            continue
        rule = "discharge.close_when_follow_up_done" if done else "discharge.close_after"
        still_open = tuple(t.id for t in case.tasks if t.is_open)
        live = tuple(r.id for r in case.referrals if r.fulfilment_status in OPEN_TASK_STATUSES)
        live = live_referrals(case, live)
        if still_open or live:
            case = step.withdraw(case, still_open, live, "cancel", rule, CASE_CLOSED)
        case = _complete_plan(case)
        step.cases[case.id] = case
        step.move(case, CaseStatus.CLOSED, rule)
    after = step.state()
    return Outcome(
        state=after,
        changed_cases=changed_cases(state, after),
        trace=tuple(step.trace),
        lock_keys=state.patient_keys,
    )


def _follow_up_work(visit: VisitMemory) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """The task and referral ids whose completion lets the case close; None if not discharged."""
    effects = visit.live_effects(EffectKind.DEATH)
    if not effects:
        discharges = visit.live_effects(EffectKind.DISCHARGE)
        if not discharges:
            return None
        sequence = discharges[-1].sequence
        effects = [*planning_effects(visit, sequence), discharges[-1]]
    tasks = tuple(i for e in effects for i in e.task_ids)
    referrals = tuple(i for e in effects for i in e.referral_ids)
    return tasks, referrals


def _done(case: Case, task_ids: tuple[str, ...], referral_ids: tuple[str, ...]) -> bool:
    tasks_done = all(t.status not in OPEN_TASK_STATUSES for t in case.tasks if t.id in task_ids)
    live = live_referrals(case, referral_ids)
    referrals_done = all(
        r.fulfilment_status not in OPEN_TASK_STATUSES for r in case.referrals if r.id in live
    )
    return tasks_done and referrals_done


def _complete_plan(case: Case) -> Case:
    """At closing: the active discharge plan and the fulfilled live referrals are completed."""
    update: dict[str, object] = {}
    plan = case.discharge_plan
    if plan is not None and plan.status == PlanStatus.ACTIVE:
        update["discharge_plan"] = plan.model_copy(update={"status": PlanStatus.COMPLETED})
    live = set(live_referrals(case, [r.id for r in case.referrals]))
    if live:
        update["referrals"] = tuple(
            r.model_copy(update={"status": PlanStatus.COMPLETED})
            if r.id in live and r.fulfilment_status not in OPEN_TASK_STATUSES
            else r
            for r in case.referrals
        )
    return revalidated(case, **update) if update else case
