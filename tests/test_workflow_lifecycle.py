"""The case lifecycle in the pure workflow: death, pre-admission, class changes, A25, A11, A13."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cm_fhir.domain import (
    Case,
    CaseStatus,
    ClosingReason,
    PlanStatus,
    TaskStatus,
)
from cm_fhir.fhir import case_to_resources, map_case, resources_to_case
from cm_fhir.mapping.registry import default_registry
from cm_fhir.mapping.rules import DischargeRules, load_discharge_rules
from cm_fhir.workflow import Flag, PatientState, apply_event, close_due_cases
from workflow_messages import NOW, Visit, hours, rules, run

V = Visit()
YOUNG = Visit(birth="19990101", diagnosis="S52.5", payer=None)


def only_case(state: PatientState) -> Case:
    assert len(state.cases) == 1
    return state.cases[0]


def statuses(case: Case) -> dict[str, TaskStatus]:
    return {t.id: t.status for t in case.tasks}


def site_rules(tmp_path: Path, text: str) -> DischargeRules:
    (tmp_path / "discharge-rules.yaml").write_text(text, encoding="utf-8")
    return load_discharge_rules(tmp_path)


def run_with(site: DischargeRules, events: list[Any], state: PatientState | None = None) -> Any:
    current = state or PatientState()
    outcomes = []
    for event in events:
        outcome = apply_event(event, current, site, now=NOW)
        outcomes.append(outcome)
        current = outcome.state
    return current, outcomes


def episode(case: Case) -> dict[str, Any]:
    return next(
        r
        for r in case_to_resources(case, default_registry())
        if r["resourceType"] == "EpisodeOfCare"
    )


# -- death ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("disposition", "indicator"),
    [("20", ""), ("40", ""), ("41", ""), ("42", ""), ("01", "Y"), ("", "Y")],
)
def test_death_at_discharge_closes_the_case_with_no_follow_up(
    disposition: str, indicator: str
) -> None:
    state, outcomes = run(
        [
            V.adt("A01", "D1", hours(0)),
            V.adt("A16", "D2", hours(20), expected="20240309"),
            V.adt(
                "A03",
                "D3",
                hours(30),
                disposition=disposition,
                discharge=hours(30),
                death_indicator=indicator,
            ),
        ]
    )
    case = only_case(state)
    assert case.status == CaseStatus.CLOSED
    assert case.closed == hours(30)
    assert case.outcome is not None
    assert case.outcome.closing_reason == ClosingReason.DECEASED
    # nothing patient-facing after a death, and nothing left open
    assert not [t for t in case.tasks if t.id.endswith("-d1")]
    assert not any(t.is_open for t in case.tasks)
    cancelled = [t for t in case.tasks if t.status == TaskStatus.CANCELLED]
    assert {t.id for t in cancelled} >= {"initial-assessment", "follow-up-p1", "dme-p1"}
    assert {t.business_status for t in cancelled} == {"the patient died"}
    assert case.discharge_plan is not None
    assert case.discharge_plan.status == PlanStatus.REVOKED
    assert case.discharge_plan.disposition == "expired"
    assert state.deceased == hours(30)
    assert state.visits[0].discharge_time == hours(30)
    assert any(t.action == "case-closed" and t.rule == "death" for t in outcomes[2].trace)
    eoc = episode(case)
    assert eoc["status"] == "finished"
    (outcome_ext,) = [e for e in eoc["extension"] if e["url"].endswith("cm-outcome-evaluation")]
    reason = next(e for e in outcome_ext["extension"] if e["url"] == "closingReason")
    assert reason["valueCoding"]["code"] == "deceased"
    map_case(case)  # every resource validates with fhir.resources R4B
    assert (
        resources_to_case(case_to_resources(case, default_registry()), default_registry()) == case
    )


def test_death_reported_after_discharge_cancels_the_follow_up() -> None:
    state, _outcomes = run(
        [
            V.adt("A01", "E1", hours(0)),
            V.adt("A03", "E2", hours(30), disposition="06", discharge=hours(30)),
            V.adt("A08", "E3", hours(50), died=hours(49), death_indicator="Y"),
        ]
    )
    case = only_case(state)
    assert case.status == CaseStatus.CLOSED
    assert case.outcome is not None
    assert case.outcome.closing_reason == ClosingReason.DECEASED
    assert not any(t.is_open for t in case.tasks)
    assert statuses(case)["follow-up-call-d1"] == TaskStatus.CANCELLED
    (referral,) = case.referrals
    assert referral.status == PlanStatus.REVOKED
    assert referral.fulfilment_status == TaskStatus.CANCELLED
    assert referral.fulfilment_business_status == "the patient died"
    assert state.deceased == hours(49)  # PID-29, not the message time
    # the same death reported again changes nothing
    again, more = run([V.adt("A08", "E4", hours(51), died=hours(49), death_indicator="Y")], state)
    assert again.cases == state.cases
    assert more[0].changed_cases == ()


def test_a_site_adds_death_work_and_the_case_closes_when_it_is_done(tmp_path: Path) -> None:
    site = site_rules(
        tmp_path,
        "death:\n  tasks:\n    bereavement:\n      kind: follow-up-call\n"
        "      description: Bereavement contact with the family\n      due: 7d\n",
    )
    state, _ = run_with(
        site,
        [
            V.adt("A01", "B1", hours(0)),
            V.adt("A03", "B2", hours(30), disposition="20", discharge=hours(30)),
        ],
    )
    case = only_case(state)
    assert case.status == CaseStatus.TRANSITION
    assert case.outcome is not None
    assert case.outcome.closing_reason == ClosingReason.DECEASED
    assert [t.id for t in case.tasks if t.is_open] == ["bereavement"]
    assert not [t for t in case.tasks if t.id.endswith(("-d1", "-p1"))]  # no discharge work
    assert close_due_cases(state, site, hours(31)).changed_cases == ()
    done = case.update_task_status("bereavement", TaskStatus.IN_PROGRESS)
    done = done.update_task_status("bereavement", TaskStatus.COMPLETED)
    closed = close_due_cases(state.model_copy(update={"cases": (done,)}), site, hours(40))
    (case,) = closed.changed_cases
    assert case.status == CaseStatus.CLOSED
    assert closed.trace[-1].rule == "discharge.close_when_follow_up_done"


def test_no_case_opens_for_a_patient_who_died() -> None:
    other = Visit(visit="V999")
    state, outcomes = run(
        [
            V.adt("A01", "X1", hours(0)),
            V.adt("A03", "X2", hours(5), disposition="41", discharge=hours(5)),
            other.adt("A01", "X3", hours(9)),
        ]
    )
    assert len(state.cases) == 1
    assert Flag.PATIENT_DECEASED in outcomes[2].flags


# -- pre-admission -------------------------------------------------------------------------------


@pytest.mark.parametrize("pre", ["A05", "A14"])
def test_pre_admission_plans_a_case_that_the_admit_activates(pre: str) -> None:
    state, _outcomes = run([V.adt(pre, "P1", hours(-48), patient_class="P")])
    case = only_case(state)
    assert case.status == CaseStatus.PLANNED
    assert case.tasks == ()
    assert episode(case)["status"] == "planned"
    map_case(case)
    state, _ = run([V.adt("A01", "P2", hours(0))], state)
    case = only_case(state)
    assert [s.status for s in case.status_history] == [CaseStatus.PLANNED, CaseStatus.ACTIVE]
    assert statuses(case)["initial-assessment"] == TaskStatus.REQUESTED
    assert (
        case.task("initial-assessment").due == hours(0) + rules().admission.initial_assessment.due
    )


@pytest.mark.parametrize("cancel", ["A27", "A38"])
def test_cancelled_pre_admission_cancels_the_planned_case(tmp_path: Path, cancel: str) -> None:
    site = site_rules(
        tmp_path,
        "pre_admission:\n  tasks:\n    pre-admission-review:\n      kind: discharge-planning\n"
        "      description: Review the planned admission\n      due: 1d\n",
    )
    state, _ = run_with(
        site,
        [
            V.adt("A05", "C1", hours(-48), patient_class="P", expected="20240309"),
            V.adt(cancel, "C2", hours(-24), patient_class="P"),
        ],
    )
    case = only_case(state)
    assert case.status == CaseStatus.CANCELLED
    assert statuses(case)["pre-admission-review"] == TaskStatus.CANCELLED
    assert case.task("pre-admission-review").business_status == (
        "the planned admission was cancelled"
    )
    assert all(s == TaskStatus.CANCELLED for s in statuses(case).values())
    assert episode(case)["status"] == "cancelled"


def test_cancelled_admit_of_a_pre_admitted_case_plans_it_again(tmp_path: Path) -> None:
    site = site_rules(
        tmp_path,
        "pre_admission:\n  tasks:\n    pre-admission-review:\n      kind: discharge-planning\n"
        "      description: Review the planned admission\n      due: 3d\n",
    )
    planned, _ = run_with(site, [V.adt("A05", "C1", hours(-48), patient_class="P")])
    state, _ = run_with(site, [V.adt("A01", "C2", hours(0)), V.adt("A11", "C3", hours(1))], planned)
    case = only_case(state)
    assert case.status == CaseStatus.PLANNED
    assert case.status_history == only_case(planned).status_history
    assert case.closed is None
    assert statuses(case) == {
        "pre-admission-review": TaskStatus.REQUESTED,
        "initial-assessment": TaskStatus.ENTERED_IN_ERROR,
        "payer-notification": TaskStatus.ENTERED_IN_ERROR,
    }
    assert episode(case)["status"] == "planned"
    map_case(case)
    # the admission can still come: the case becomes active again with new admission work
    state, _ = run_with(site, [V.adt("A01", "C4", hours(5))], state)
    assert only_case(state).status == CaseStatus.ACTIVE


def test_cancelled_death_discharge_reopens_the_case(tmp_path: Path) -> None:
    site = site_rules(
        tmp_path,
        "death:\n  tasks:\n    bereavement:\n      kind: follow-up-call\n"
        "      description: Bereavement contact with the family\n      due: 7d\n",
    )
    before, _ = run_with(
        site,
        [V.adt("A01", "K1", hours(0)), V.adt("A16", "K2", hours(20), expected="20240309")],
    )
    died, _ = run_with(
        site, [V.adt("A03", "K3", hours(30), disposition="20", discharge=hours(30))], before
    )
    assert died.deceased is not None
    state, outcomes = run_with(site, [V.adt("A13", "K4", hours(31))], died)
    case, was = only_case(state), only_case(before)
    assert Flag.CASE_FINAL not in outcomes[0].flags
    assert state.deceased is None
    assert (case.status, case.status_history, case.closed) == (
        was.status,
        was.status_history,
        None,
    )
    assert case.outcome is None
    assert case.discharge_plan == was.discharge_plan
    assert {t.id: t for t in case.tasks if t.id != "bereavement"} == {t.id: t for t in was.tasks}
    assert case.task("bereavement").status == TaskStatus.CANCELLED
    map_case(case)
    # a new admission of another visit is screened again (the patient is not known to be dead)
    state, _ = run_with(site, [Visit(visit="V777").adt("A01", "K5", hours(40))], state)
    assert len(state.cases) == 2


def test_cancel_pre_admit_after_the_admit_changes_nothing() -> None:
    state, outcomes = run(
        [
            V.adt("A05", "C1", hours(-48), patient_class="P"),
            V.adt("A01", "C2", hours(0)),
            V.adt("A38", "C3", hours(1)),
        ]
    )
    assert only_case(state).status == CaseStatus.ACTIVE
    assert Flag.NOTHING_TO_UNDO in outcomes[2].flags


def test_pre_admission_of_a_patient_who_does_not_qualify_plans_nothing() -> None:
    state, outcomes = run([YOUNG.adt("A05", "Y1", hours(-48), patient_class="P")])
    assert state.cases == ()
    assert Flag.NOT_QUALIFIED in outcomes[0].flags


# -- class changes -------------------------------------------------------------------------------


@pytest.mark.parametrize("event", ["A07", "A08"])
def test_an_inpatient_who_becomes_an_outpatient_is_closed(event: str) -> None:
    state, outcomes = run(
        [
            V.adt("A01", "O1", hours(0)),
            V.adt(event, "O2", hours(10), patient_class="O"),
        ]
    )
    case = only_case(state)
    assert case.status == CaseStatus.CLOSED
    assert case.outcome is not None
    assert case.outcome.closing_reason == ClosingReason.NOT_ELIGIBLE
    assert statuses(case)["initial-assessment"] == TaskStatus.CANCELLED
    assert case.task("initial-assessment").business_status == "the patient no longer qualifies"
    assert any(t.rule == "class_change.not_qualified" for t in outcomes[1].trace)
    map_case(case)


def test_class_change_flags_instead_of_closing_when_the_rules_say_so(tmp_path: Path) -> None:
    site = site_rules(tmp_path, "class_change:\n  not_qualified: flag\n")
    state, outcomes = run_with(
        site, [V.adt("A01", "F1", hours(0)), V.adt("A07", "F2", hours(10), patient_class="O")]
    )
    case = only_case(state)
    assert case.status == CaseStatus.ACTIVE
    assert statuses(case)["initial-assessment"] == TaskStatus.REQUESTED
    assert Flag.NO_LONGER_QUALIFIED in outcomes[1].flags


def test_class_change_screens_with_the_case_diagnoses_when_the_event_has_none(
    tmp_path: Path,
) -> None:
    site = site_rules(
        tmp_path,
        "screening:\n  all:\n    - patient_class: [IMP, AMB]\n"
        "    - diagnosis: {sets: {http://hl7.org/fhir/sid/icd-10: [I50]}}\n",
    )
    bare = Visit(diagnosis=None, payer=None)  # the A07 carries no DG1 and no IN1
    state, outcomes = run_with(
        site, [V.adt("A01", "K1", hours(0)), bare.adt("A07", "K2", hours(5), patient_class="O")]
    )
    case = only_case(state)
    assert case.status == CaseStatus.ACTIVE  # still qualifies: an outpatient with I50.9
    assert [c.code for c in case.reasons] == [V.diagnosis]
    assert not outcomes[1].flags


# -- A25 cancel pending discharge ----------------------------------------------------------------


def test_cancel_pending_discharge_undoes_the_planning() -> None:
    state, _outcomes = run(
        [
            V.adt("A01", "Q1", hours(0)),
            V.adt("A16", "Q2", hours(20), expected="20240309", disposition="03"),
            V.adt("A25", "Q3", hours(22)),
        ]
    )
    case = only_case(state)
    planned = [t for t in case.tasks if t.id.endswith("-p1")]
    assert len(planned) == len(rules().pending_discharge.tasks)
    assert all(t.status == TaskStatus.CANCELLED for t in planned)
    assert {t.business_status for t in planned} == {"the pending discharge was cancelled"}
    (referral,) = case.referrals
    assert referral.status == PlanStatus.REVOKED
    assert case.discharge_plan is not None
    assert case.discharge_plan.expected_discharge is None
    assert case.discharge_plan.disposition is None
    assert statuses(case)["initial-assessment"] == TaskStatus.REQUESTED
    assert state.visits[0].expected_discharge is None
    # planning again later creates new work, under new ids
    state, _ = run([V.adt("A16", "Q4", hours(30))], state)
    fresh = [t for t in only_case(state).tasks if t.id.endswith("-p1r1")]
    assert len(fresh) == len(rules().pending_discharge.tasks)
    assert all(t.status == TaskStatus.REQUESTED for t in fresh)


def test_cancel_pending_discharge_without_planning_is_flagged() -> None:
    _state, outcomes = run([V.adt("A01", "R1", hours(0)), V.adt("A25", "R2", hours(1))])
    assert Flag.NOTHING_TO_UNDO in outcomes[1].flags
    assert outcomes[1].changed_cases == ()


# -- A11 and A13 ---------------------------------------------------------------------------------


def test_cancel_admit_marks_the_episode_and_every_resource_entered_in_error() -> None:
    state, _ = run(
        [
            V.adt("A01", "A1", hours(0), disposition="03", expected="20240309"),
            V.adt("A11", "A2", hours(2)),
        ]
    )
    case = only_case(state)
    assert case.status == CaseStatus.ENTERED_IN_ERROR
    assert case.referrals  # the early referral is voided with the rest
    found = case_to_resources(case, default_registry())
    statuses_by_type = {(r["resourceType"], r.get("status")) for r in found}
    assert {s for _, s in statuses_by_type} == {"entered-in-error"}
    assert {t for t, _ in statuses_by_type} >= {
        "EpisodeOfCare",
        "CarePlan",
        "Task",
        "ServiceRequest",
    }
    map_case(case)


def test_cancel_discharge_of_a_discharge_that_opened_the_case_admits_it() -> None:
    state, _outcomes = run(
        [
            V.adt("A03", "N1", hours(30), disposition="03", discharge=hours(30)),
            V.adt("A13", "N2", hours(31)),
        ]
    )
    case = only_case(state)
    assert case.status == CaseStatus.ACTIVE
    tasks = statuses(case)
    assert tasks["initial-assessment"] == TaskStatus.REQUESTED
    assert (
        case.task("initial-assessment").due == hours(31) + rules().admission.initial_assessment.due
    )
    assert tasks["med-rec-d1"] == TaskStatus.CANCELLED
    assert case.discharge_plan is not None
    assert case.discharge_plan.status == PlanStatus.DRAFT
    # as if the admit had come first: a later A11 voids the case and all of it
    state, _ = run([V.adt("A11", "N3", hours(32))], state)
    assert only_case(state).status == CaseStatus.ENTERED_IN_ERROR


@pytest.mark.parametrize(
    ("indicator", "deceased"), [("Y", True), ("y", True), ("N", False), ("", None), ("X", None)]
)
def test_pid_29_and_30_are_read(indicator: str, deceased: bool | None) -> None:
    event = V.adt("A08", "R1", hours(1), died=hours(1), death_indicator=indicator)
    assert event.patient.deceased is deceased
    assert event.patient.death_time == hours(1)
    assert V.adt("A08", "R2", hours(1)).patient.death_time is None
