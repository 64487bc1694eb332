"""The case lifecycle around admission and discharge: pre-admission, class changes, a cancelled
pending discharge, and death. Pure.

A05 (pre-admit) and A14 (pending admit) screen the visit as ``pre_admission.screen_as`` and open
a ``planned`` case with the ``pre_admission`` tasks; the admit makes it active; A27 and A38
cancel it. A07, and an A02/A08 that changes PV1-2, screen an open case again: one that no longer
qualifies is closed (outcome ``not-eligible``) or flagged, as ``class_change.not_qualified`` says.
A25 undoes the planning of the pending discharge. A death (a discharge whose PV1-36 maps to
``expired``, or PID-30 = Y on any event) cancels the open work of every open case of the patient
with a reason, creates no follow-up, and closes the case with the outcome ``deceased``; the
``death`` tasks a site lists are created instead, and the case closes when they are done.
"""

from __future__ import annotations

from dataclasses import replace

from cm_fhir.domain.assessment import OutcomeEvaluation
from cm_fhir.domain.case import Case
from cm_fhir.domain.codes import (
    DISPOSITION_EXPIRED,
    CaseStatus,
    ClosingReason,
    DispositionCode,
    GoalAchievement,
    PlanStatus,
)
from cm_fhir.domain.common import Instant
from cm_fhir.hl7v2.events import AdtEvent
from cm_fhir.workflow import facts
from cm_fhir.workflow.actions import Step, revalidated
from cm_fhir.workflow.admission import (
    admit,
    open_visit_case,
    refresh_case,
    refresh_visit,
    screen_visit,
    screening_facts,
    team_party,
)
from cm_fhir.workflow.discharge import cancel_discharge, discharge
from cm_fhir.workflow.planning import live_referrals, plan_discharge, planning_effects
from cm_fhir.workflow.screening import screen
from cm_fhir.workflow.state import (
    EffectKind,
    EventEffect,
    Flag,
    VisitMemory,
    latest,
)

__all__ = [
    "cancel_discharge_or_death",
    "cancel_pending_discharge",
    "cancel_pre_admission",
    "discharge_or_death",
    "is_death",
    "outpatient",
    "pre_admit",
    "reclassify",
    "record_death",
    "undo_death",
]

#: Business status of work cancelled because the patient died.
DECEASED = "the patient died"
#: Business status of work cancelled because the case no longer qualifies.
NOT_ELIGIBLE = "the patient no longer qualifies"
#: Business status of work cancelled with the admission it was planned for.
ADMISSION_CANCELLED = "the planned admission was cancelled"
#: Business status of death tasks cancelled because the death was cancelled (A13).
DEATH_CANCELLED = "the discharge reporting the death was cancelled"
#: Business status of planning work undone by A25.
DISCHARGE_CANCELLED = "the pending discharge was cancelled"

_PRE_ADMIT_CLASSES = frozenset({None, "PRENC"})


# -- pre-admission ---------------------------------------------------------------------------------


def pre_admit(step: Step, visit: VisitMemory) -> VisitMemory:
    """A05 / A14: a planned case for a visit that will qualify once admitted."""
    visit = refresh_visit(step, visit)
    case = step.open_case_of(visit)
    if case is not None:
        refresh_case(step, case, visit)
        return plan_discharge(step, visit, pending=False)
    rules = step.rules
    as_class = rules.pre_admission.screen_as if visit.patient_class in _PRE_ADMIT_CLASSES else None
    result = screen_visit(step, visit, as_class)
    if result is None:
        return visit
    case = open_visit_case(
        step, visit, result, CaseStatus.PLANNED, expected_discharge=visit.expected_discharge
    )
    step.note("pre_admission", "case-planned", case.id)
    team = team_party(rules, visit.team)
    created: list[str] = []
    for name, rule in rules.pre_admission.tasks.items():
        task_id = facts.item_id(name)
        case, added = step.add_task(case, f"pre_admission.tasks.{name}", rule, task_id, team)
        created += [task_id] if added else []
    effect = EventEffect(
        kind=EffectKind.PRE_ADMISSION,
        message_control_id=step.control_id or "",
        sequence=visit.discharges + 1,
        case_id=case.id,
        opened_case=True,
        task_ids=tuple(created),
    )
    visit = visit.model_copy(
        update={
            "case_id": case.id,
            "admissions": visit.admissions + 1,
            "effects": (*visit.effects, effect),
        }
    )
    return plan_discharge(step, visit, pending=False)


def cancel_pre_admission(step: Step, visit: VisitMemory) -> VisitMemory:
    """A27 / A38: the planned admission will not happen; its planned case is cancelled."""
    rule = f"event.{step.event.event if step.event else 'tick'}"
    effects = visit.live_effects(EffectKind.PRE_ADMISSION)
    case = step.open_case_of(visit)
    if case is None or not effects or case.status != CaseStatus.PLANNED:
        flag = Flag.NOTHING_TO_UNDO
        step.note(rule, "nothing-to-undo", visit.case_id, None, flag)
        return visit
    task_ids = tuple(t.id for t in case.tasks)
    referral_ids = live_referrals(case, [r.id for r in case.referrals])
    case = step.withdraw(case, task_ids, referral_ids, "cancel", rule, ADMISSION_CANCELLED)
    case = _revoke_plan(step, case, None)
    step.move(case, CaseStatus.CANCELLED, rule)
    undone = tuple(e.model_copy(update={"undone": True}) for e in visit.effects)
    return visit.model_copy(update={"effects": undone, "expected_discharge": None})


# -- class changes ---------------------------------------------------------------------------------


def outpatient(step: Step, visit: VisitMemory) -> VisitMemory:
    """A07: the inpatient became an outpatient; screen the visit again."""
    return reclassify(step, refresh_visit(step, visit), "screening.A07")


def reclassify(step: Step, visit: VisitMemory, rule: str) -> VisitMemory:
    """Screen a visit whose patient class changed: open a case, keep it, or let it go."""
    case = step.open_case_of(visit)
    if case is None:
        return admit(step, visit, rule)
    if case.status == CaseStatus.TRANSITION:  # already discharged: the class no longer matters
        refresh_case(step, case, visit)
        return visit
    found = screening_facts(step, visit)
    # A class change often carries no DG1 or IN1: the case's own diagnoses and payers count.
    found = replace(
        found,
        diagnoses=found.diagnoses or case.reasons,
        payers=found.payers
        or tuple(c.payer.identifier.value for c in case.coverage if c.payer.identifier),
    )
    if screen(found, step.rules).eligible:
        refresh_case(step, case, visit)
        return visit
    policy = "class_change.not_qualified"
    if step.rules.class_change.not_qualified == "flag":
        step.note(policy, "no-longer-qualified", case.id, None, Flag.NO_LONGER_QUALIFIED)
        refresh_case(step, case, visit)
        return visit
    case = _withdraw_all(step, case, policy, NOT_ELIGIBLE)
    case = _revoke_plan(step, case, None)
    case = _with_outcome(step, case, ClosingReason.NOT_ELIGIBLE, policy)
    step.move(case, CaseStatus.CLOSED, policy)
    return visit


# -- cancel pending discharge ----------------------------------------------------------------------


def cancel_pending_discharge(step: Step, visit: VisitMemory) -> VisitMemory:
    """A25: undo the planning of the pending discharge (its tasks, referral and expected date)."""
    sequence = visit.discharges + 1
    effects = planning_effects(visit, sequence)
    case = step.open_case_of(visit)
    if visit.discharged or case is None or not (effects or visit.expected_discharge):
        step.note("event.A25", "nothing-to-undo", visit.case_id, None, Flag.NOTHING_TO_UNDO)
        return visit
    task_ids = tuple(i for e in effects for i in e.task_ids)
    referral_ids = live_referrals(case, [i for e in effects for i in e.referral_ids])
    case = step.withdraw(case, task_ids, referral_ids, "cancel", "event.A25", DISCHARGE_CANCELLED)
    plan = case.discharge_plan
    if plan is not None and (plan.expected_discharge or plan.disposition):
        cleared = plan.model_copy(update={"expected_discharge": None, "disposition": None})
        case = revalidated(case, discharge_plan=cleared)
        step.cases[case.id] = case
        step.note("event.A25", "discharge-plan-reset", case.id, plan.id)
    undone = tuple(
        e.model_copy(update={"undone": True}) if e in effects else e for e in visit.effects
    )
    return visit.model_copy(update={"effects": undone, "expected_discharge": None})


# -- death -----------------------------------------------------------------------------------------


def is_death(event: AdtEvent) -> bool:
    """PID-30 = Y, or a discharge whose PV1-36 maps to ``expired``."""
    if event.patient.deceased:
        return True
    code = event.visit.discharge_disposition if event.visit is not None else None
    return (
        event.event == "A03"
        and code is not None
        and code.mapped
        and code.target == DISPOSITION_EXPIRED
    )


def discharge_or_death(step: Step, visit: VisitMemory) -> VisitMemory:
    """A03: a discharge, or the death of the patient (no follow-up work)."""
    event = step.event
    assert event is not None
    if not is_death(event):
        return discharge(step, visit)
    assert event.visit is not None
    when = (
        facts.aware(event.visit.discharge_time, step.rules)
        if event.visit.discharge_time
        else step.at
    )
    if visit.discharged:
        step.note("discharge", "discharge-time-updated", visit.case_id)
        visit = visit.model_copy(update={"discharge_time": when})
    else:
        case = step.open_case_of(visit)
        sequence = visit.discharges + 1
        effects = visit.effects
        if case is not None:
            effect = EventEffect(
                kind=EffectKind.DISCHARGE,
                message_control_id=event.message_control_id,
                sequence=sequence,
                case_id=case.id,
                plan_before=case.discharge_plan,
                last_discharge_before=step.last_discharge,
            )
            effects = (*effects, effect)
        step.last_discharge = latest([step.last_discharge, when])
        visit = visit.model_copy(
            update={"discharge_time": when, "discharges": sequence, "effects": effects}
        )
    step.put_visit(visit)
    key = next(k for k, v in step.visits.items() if v is visit)
    record_death(step)  # ends this visit's case too, through the visits of the step
    return step.visits[key]


def record_death(step: Step) -> None:
    """After any event: if it reports the patient's death, end every open case of the patient."""
    event = step.event
    if event is None or not is_death(event):
        return
    known = step.deceased
    if step.deceased is None:
        died = event.patient.death_time or (event.visit.discharge_time if event.visit else None)
        step.deceased = facts.aware(died, step.rules) if died is not None else step.at
        step.note("death", "patient-deceased")
    for number, visit in list(step.visits.items()):
        case = step.open_case_of(visit)
        if case is None or (case.outcome and case.outcome.closing_reason == ClosingReason.DECEASED):
            continue
        step.visits[number] = _end_case(step, visit, case, known)


def _end_case(
    step: Step, visit: VisitMemory, case: Case, deceased_before: Instant | None
) -> VisitMemory:
    before = case
    case = _withdraw_all(step, case, "death", DECEASED)
    case = _revoke_plan(step, case, DISPOSITION_EXPIRED)
    case = _with_outcome(step, case, ClosingReason.DECEASED, "death")
    team = team_party(step.rules, visit.team)
    created: list[str] = []
    for name, rule in step.rules.death.tasks.items():
        task_id = facts.item_id(name)
        case, added = step.add_task(case, f"death.tasks.{name}", rule, task_id, team)
        created += [task_id] if added else []
    step.move(case, CaseStatus.TRANSITION if created else CaseStatus.CLOSED, "death")
    effect = EventEffect(
        kind=EffectKind.DEATH,
        message_control_id=step.control_id or "",
        sequence=max(visit.discharges, 1),
        case_id=case.id,
        task_ids=tuple(created),
        case_before=before,
        deceased_before=deceased_before,
    )
    return visit.model_copy(update={"effects": (*visit.effects, effect)})


def cancel_discharge_or_death(step: Step, visit: VisitMemory) -> VisitMemory:
    """A13: cancel the latest discharge; when it reported the patient's death, the cases that
    death ended are reopened first, as they were before it (see :func:`undo_death`)."""
    discharges = visit.live_effects(EffectKind.DISCHARGE)
    if visit.discharged and discharges:
        visit = undo_death(step, visit, discharges[-1].message_control_id)
    return cancel_discharge(step, visit)


def undo_death(step: Step, visit: VisitMemory, control_id: str) -> VisitMemory:
    """Reopen every case the death reported by message ``control_id`` ended: its status, work,
    plan and outcome as before the death, the death tasks cancelled; the patient is no longer
    known to have died (unless known before)."""
    rule = f"event.{step.event.event if step.event else 'tick'}"
    step.put_visit(visit)
    found = False
    for key, memory in list(step.visits.items()):
        effects = []
        for effect in memory.effects:
            if (
                effect.kind == EffectKind.DEATH
                and not effect.undone
                and effect.message_control_id == control_id
            ):
                found = True
                step.deceased = effect.deceased_before
                _reopen(step, effect, rule)
                effect = effect.model_copy(update={"undone": True})
            effects.append(effect)
        step.visits[key] = memory.model_copy(update={"effects": tuple(effects)})
    if found:
        step.note(rule, "death-cancelled")
    return step.visits[visit.key]


def _reopen(step: Step, effect: EventEffect, rule: str) -> None:
    before, case = effect.case_before, step.cases.get(effect.case_id)
    if before is None or case is None:
        return
    case = step.withdraw(case, effect.task_ids, (), "cancel", rule, DEATH_CANCELLED)
    old_tasks = {t.id: t for t in before.tasks}
    old_referrals = {r.id: r for r in before.referrals}
    restored = revalidated(
        case,
        tasks=tuple(old_tasks.get(t.id, t) for t in case.tasks),
        referrals=tuple(old_referrals.get(r.id, r) for r in case.referrals),
        discharge_plan=before.discharge_plan,
        outcome=before.outcome,
        status=before.status,
        status_history=before.status_history,
        closed=before.closed,
    )
    step.cases[case.id] = restored
    step.note(rule, f"case-{restored.status.value}-again", case.id)


# -- shared ----------------------------------------------------------------------------------------


def _withdraw_all(step: Step, case: Case, rule: str, reason: str) -> Case:
    """Cancel every open task and live referral of the case, with ``reason``."""
    task_ids = tuple(t.id for t in case.tasks if t.is_open)
    referral_ids = live_referrals(case, [r.id for r in case.referrals])
    if not (task_ids or referral_ids):
        return case
    return step.withdraw(case, task_ids, referral_ids, "cancel", rule, reason)


def _revoke_plan(step: Step, case: Case, disposition: DispositionCode | None) -> Case:
    """The discharge plan will not be carried out: revoked (with ``disposition`` if given)."""
    plan = case.discharge_plan
    if plan is None or plan.status in (PlanStatus.COMPLETED, PlanStatus.ENTERED_IN_ERROR):
        return case
    update: dict[str, object] = {"status": PlanStatus.REVOKED}
    if disposition is not None:
        update["disposition"] = disposition
    changed = revalidated(case, discharge_plan=plan.model_copy(update=update))
    step.cases[case.id] = changed
    return changed


def _with_outcome(step: Step, case: Case, reason: ClosingReason, rule: str) -> Case:
    """The case's outcome evaluation, with why it ended."""
    met = sum(g.achievement == GoalAchievement.ACHIEVED for g in case.goals)
    outcome = OutcomeEvaluation(
        evaluated_on=step.at.date(),
        goals_met=met,
        goals_total=len(case.goals),
        closing_reason=reason,
    )
    if case.outcome is not None:
        outcome = case.outcome.model_copy(update={"closing_reason": reason})
    changed = revalidated(case, outcome=outcome)
    step.cases[case.id] = changed
    step.note(rule, f"outcome-{reason.value}", case.id)
    return changed
