"""Admission: screening a visit into a case, the admission work, and undoing it on A11. Pure.

An A01/A04 admit of a qualifying patient opens a case (programme and status from the rules) tied to
the visit, with an initial assessment task for the unit's case-management team, a draft discharge
plan, and a payer notification when the message carries IN1; the admit of a planned (pre-admitted)
case makes it active with the same work. A06, and an A02/A08 that changes the patient class, screen
the visit again through the same path. A second admit for a visit updates its case instead of
opening another. A patient known to have died is not screened. A11 marks a case the admission
opened, and everything in it, entered-in-error; when the case did not come from an admission of
this visit, it only voids the admission's work (entered-in-error where nobody acted on it, else
cancelled).
"""

from __future__ import annotations

from datetime import date

from cm_fhir.domain.case import Case
from cm_fhir.domain.codes import CaseStatus, GoalLifecycle, PlanStatus
from cm_fhir.domain.common import PartyRef
from cm_fhir.domain.referral import DischargePlan
from cm_fhir.hl7v2.events import AdtEvent
from cm_fhir.mapping.rules import DischargeRules
from cm_fhir.workflow import facts
from cm_fhir.workflow.actions import Step, revalidated
from cm_fhir.workflow.screening import ScreeningFacts, ScreeningResult, screen
from cm_fhir.workflow.state import EffectKind, EventEffect, Flag, VisitMemory

__all__ = [
    "admission_work",
    "admit",
    "cancel_admit",
    "refresh_case",
    "refresh_visit",
    "screen_visit",
    "screening_facts",
    "team_party",
]


def team_party(rules: DischargeRules, team: str | None) -> PartyRef:
    """The party of a team named in the visit memory (the default team if the name is gone)."""
    spec = rules.teams.get(team or "") or rules.teams[rules.default_team]
    return facts.party(spec)


def refresh_visit(step: Step, visit: VisitMemory, *, with_location: bool = True) -> VisitMemory:
    """The visit memory updated with the visit data the event carries (PV1/PV2)."""
    event = step.event
    if event is None or event.visit is None:
        return visit
    v = event.visit
    update: dict[str, object] = {}
    if v.patient_class is not None:
        if not v.patient_class.mapped:
            step.note(
                "adt-concept-maps.patient_class",
                "class-unmapped",
                visit.case_id,
                None,
                Flag.UNMAPPED_PATIENT_CLASS,
            )
        update["patient_class"] = v.patient_class.target
    if with_location and v.location is not None and v.location.point_of_care is not None:
        update["location"] = v.location.point_of_care
        update["team"] = step.rules.team(v.location.point_of_care)
    if v.hospital_service is not None:
        update["hospital_service"] = v.hospital_service
    if v.admit_time is not None:
        update["admit_time"] = facts.aware(v.admit_time, step.rules)
    if v.expected_discharge is not None:
        update["expected_discharge"] = v.expected_discharge.date()
    elif "PV2-9" in event.cleared:
        update["expected_discharge"] = None
    if visit.team is None and "team" not in update:
        update["team"] = step.rules.team(visit.location)
    return visit.model_copy(update=update) if update else visit


def screening_facts(
    step: Step, visit: VisitMemory, patient_class: str | None = None
) -> ScreeningFacts:
    """What screening looks at; ``patient_class`` stands in for the visit's class if given."""
    event = step.event
    assert event is not None
    return ScreeningFacts(
        at=step.at,
        patient_class=patient_class or visit.patient_class,
        birth_date=event.patient.birth_date,
        diagnoses=facts.reasons(event, step.rules),
        payers=tuple(i.payer_id for i in event.insurances if i.payer_id),
        location=visit.location,
        hospital_service=visit.hospital_service,
        last_discharge=step.last_discharge,
    )


def screen_visit(
    step: Step, visit: VisitMemory, patient_class: str | None = None
) -> ScreeningResult | None:
    """The screening result of a visit that qualifies; None (traced) if it does not."""
    if step.deceased is not None:
        step.note("screening", "patient-deceased", None, None, Flag.PATIENT_DECEASED)
        return None
    result = screen(screening_facts(step, visit, patient_class), step.rules)
    if not result.eligible:
        step.note("screening", "not-qualified", None, None, Flag.NOT_QUALIFIED)
        return None
    return result


def refresh_case(step: Step, case: Case, visit: VisitMemory) -> Case:
    """Bring a case's patient, visits, diagnoses and coverage up to date with the event."""
    event = step.event
    if event is None or case.is_final:
        return case
    update: dict[str, object] = {}
    if step.patient is not None and case.patient != step.patient:
        update["patient"] = step.patient
    enc = facts.encounter(visit, step.rules)
    if enc not in case.encounters:
        update["encounters"] = (*case.encounters, enc)
    reasons = facts.reasons(event, step.rules)
    if reasons and reasons != case.reasons:
        update["reasons"] = reasons
    coverage = facts.coverage(event, step.rules)
    if coverage and coverage != case.coverage:
        update["coverage"] = coverage
    if not update:
        return case
    changed = revalidated(case, **update)
    step.cases[case.id] = changed
    step.note(f"event.{event.event}", "case-updated", case.id)
    return changed


def open_visit_case(
    step: Step,
    visit: VisitMemory,
    result: ScreeningResult,
    status: CaseStatus,
    *,
    expected_discharge: date | None = None,
) -> Case:
    """Open the case of a visit screening found eligible, with its draft discharge plan."""
    event, rules = step.event, step.rules
    assert event is not None
    assert step.patient is not None
    return step.open_case(
        facts.case_id(rules, visit, visit.admissions + 1),
        step.patient,
        status,
        screening=result.screening(rules, step.at),
        encounters=(facts.encounter(visit, rules),),
        reasons=facts.reasons(event, rules),
        coverage=facts.coverage(event, rules),
        discharge_plan=DischargePlan(
            id=facts.DISCHARGE_PLAN_ID,
            expected_discharge=expected_discharge,
            created=step.at,
            author=team_party(rules, visit.team),
        ),
    )


def admit(step: Step, visit: VisitMemory, rule: str) -> VisitMemory:
    """Screen the visit and open its case, or update the case it already has."""
    event = step.event
    assert event is not None
    case = step.open_case_of(visit)
    if case is not None and case.status == CaseStatus.PLANNED:
        refresh_case(step, case, visit)
        case = step.move(step.cases[case.id], CaseStatus.ACTIVE, rule)
        return admission_work(step, visit, case, opened=False)
    if case is not None:
        case = refresh_case(step, case, visit)
        created = _payer_notification(step, case, visit, event)
        if not created:
            return visit
        effect = EventEffect(
            kind=EffectKind.ADMISSION,
            message_control_id=event.message_control_id,
            sequence=visit.discharges + 1,
            case_id=case.id,
            task_ids=created,
        )
        return visit.model_copy(update={"effects": (*visit.effects, effect)})
    result = screen_visit(step, visit)
    if result is None:
        return visit
    case = open_visit_case(
        step, visit, result, CaseStatus.ACTIVE, expected_discharge=visit.expected_discharge
    )
    step.note(rule, "case-opened", case.id)
    step.note("admission", "discharge-plan-drafted", case.id, facts.DISCHARGE_PLAN_ID)
    visit = visit.model_copy(update={"case_id": case.id, "admissions": visit.admissions + 1})
    return admission_work(step, visit, case, opened=True)


def admission_work(step: Step, visit: VisitMemory, case: Case, *, opened: bool) -> VisitMemory:
    """The initial assessment, payer notification and the site's admission tasks of an admission,
    recorded as its effect.

    ``opened`` says the admission opened the case, so an A11 marks the case entered-in-error.
    """
    event = step.event
    assert event is not None
    rules = step.rules
    task_id = facts.item_id("initial-assessment")
    team = team_party(rules, visit.team)
    case, _ = step.add_task(
        case, "admission.initial_assessment", rules.admission.initial_assessment, task_id, team
    )
    created = [task_id]
    for name, rule in rules.admission.tasks.items():
        more_id = facts.item_id(name)
        case, added = step.add_task(case, f"admission.tasks.{name}", rule, more_id, team)
        created += [more_id] if added else []
    created += _payer_notification(step, case, visit, event)
    effect = EventEffect(
        kind=EffectKind.ADMISSION,
        message_control_id=event.message_control_id,
        sequence=visit.discharges + 1,
        case_id=case.id,
        opened_case=opened,
        task_ids=tuple(created),
    )
    return visit.model_copy(update={"effects": (*visit.effects, effect)})


def _payer_notification(
    step: Step, case: Case, visit: VisitMemory, event: AdtEvent
) -> tuple[str, ...]:
    rule = step.rules.admission.payer_notification
    if rule is None or not event.insurances:
        return ()
    task_id = facts.item_id("payer-notification")
    _, created = step.add_task(
        case, "admission.payer_notification", rule, task_id, team_party(step.rules, visit.team)
    )
    return (task_id,) if created else ()


def cancel_admit(step: Step, visit: VisitMemory) -> VisitMemory:
    """A11: undo the admission of this visit."""
    effects = visit.live_effects(EffectKind.ADMISSION)
    case = step.cases.get(visit.case_id) if visit.case_id is not None else None
    cleared = visit.model_copy(update={"admit_time": None})
    if case is None or not effects:
        step.note("event.A11", "nothing-to-undo", None, None, Flag.NOTHING_TO_UNDO)
        return cleared
    if case.is_final:
        step.note("event.A11", "case-final", case.id, None, Flag.CASE_FINAL)
        return cleared
    if any(e.opened_case for e in effects):
        # The admission made the case: it never existed, nor did anything in it.
        task_ids = tuple(t.id for t in case.tasks)
        referral_ids = tuple(r.id for r in case.referrals)
        case = step.withdraw(case, task_ids, referral_ids, "error", "event.A11")
        case = _void_plans(step, case)
        step.move(case, CaseStatus.ENTERED_IN_ERROR, "event.A11")
        undone = tuple(e.model_copy(update={"undone": True}) for e in visit.effects)
        return cleared.model_copy(
            update={
                "effects": undone,
                "discharge_time": None,
                "expected_discharge": None,
                "transfers": (),
            }
        )
    task_ids = tuple(i for e in effects for i in e.task_ids)
    referral_ids = tuple(i for e in effects for i in e.referral_ids)
    case = step.withdraw(case, task_ids, referral_ids, "void", "event.A11")
    step.note("event.A11", "case-reverted", case.id)
    planned = [e for e in visit.live_effects(EffectKind.PRE_ADMISSION) if e.case_id == case.id]
    statuses = [s.status for s in case.status_history]
    if planned and case.status == CaseStatus.ACTIVE and CaseStatus.PLANNED in statuses:
        # The admit of a pre-admitted case is cancelled: it is planned again, with its work.
        last = len(statuses) - 1 - statuses[::-1].index(CaseStatus.PLANNED)
        step.rewind(case, last + 1, "event.A11")
    undone = tuple(
        e.model_copy(update={"undone": True}) if e in effects else e for e in visit.effects
    )
    return cleared.model_copy(update={"effects": undone})


def _void_plans(step: Step, case: Case) -> Case:
    """The discharge plan, care plan and goals of a case entered in error, entered-in-error."""
    update: dict[str, object] = {}
    error = PlanStatus.ENTERED_IN_ERROR
    for name, plan in (("discharge_plan", case.discharge_plan), ("care_plan", case.care_plan)):
        if plan is not None and plan.status != error:
            update[name] = plan.model_copy(update={"status": error})
            step.note("event.A11", "plan-entered-in-error", case.id, plan.id)
    if any(g.lifecycle != GoalLifecycle.ENTERED_IN_ERROR for g in case.goals):
        update["goals"] = tuple(
            g.model_copy(update={"lifecycle": GoalLifecycle.ENTERED_IN_ERROR}) for g in case.goals
        )
    if not update:
        return case
    changed = revalidated(case, **update)
    step.cases[case.id] = changed
    return changed
