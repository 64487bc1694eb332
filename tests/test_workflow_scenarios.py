"""Discharge-planning scenarios: ADT sequences in, cases and FHIR resources out."""

from __future__ import annotations

from collections import Counter

from cm_fhir.domain import Case, CaseStatus, PlanStatus, TaskStatus
from cm_fhir.fhir import map_case, map_case_json
from cm_fhir.workflow import Flag, PatientState, case_id
from workflow_messages import NOW, Visit, hours, rules, run

V = Visit()


def only_case(state: PatientState) -> Case:
    assert len(state.cases) == 1
    return state.cases[0]


def statuses(case: Case) -> dict[str, TaskStatus]:
    return {t.id: t.status for t in case.tasks}


def resources(case: Case) -> Counter[str]:
    bundle = map_case(case)  # validates every resource with fhir.resources R4B
    return Counter(e["resource"]["resourceType"] for e in bundle["entry"])


def team_display(name: str) -> str | None:
    return rules().teams[name].display


def test_admit_transfer_discharge() -> None:
    state, _ = run(
        [
            V.adt("A01", "M1", hours(0)),
            V.adt("A02", "M2", hours(6), location="5NORTH", prior_location="4WEST"),
            V.adt("A03", "M3", hours(72), disposition="03", discharge=hours(72)),
        ]
    )
    case = only_case(state)
    assert case.id == case_id(rules(), state.visits[0], 1)
    assert [s.status for s in case.status_history] == [CaseStatus.ACTIVE, CaseStatus.TRANSITION]
    assert case.status_history[1].start == hours(72)
    assert [e.value for e in case.encounters] == [V.visit]
    assert [c.code for c in case.reasons] == [V.diagnosis]
    assert case.coverage[0].member_id == "MEM-778"
    assert case.screening is not None
    assert case.screening.eligible
    tasks = {t.id: t for t in case.tasks}
    assessment = tasks["initial-assessment"]
    assert assessment.due == hours(0) + rules().admission.initial_assessment.due
    # the admission work moved with the patient to the surgical unit's team
    assert assessment.owner.display == team_display(rules().location_teams["5NORTH"])
    assert "payer-notification" in tasks
    # no discharge planning came before the A03: the follow-up booking is caught up there
    follow_up, med_rec = tasks["follow-up-p1"], tasks["med-rec-d1"]
    assert follow_up.due == hours(72) + rules().pending_discharge.tasks["follow-up"].due
    assert med_rec.due == hours(72) + rules().discharge.tasks["med-rec"].due
    assert follow_up.owner.display == team_display("cm-surgery")
    (referral,) = case.referrals
    assert referral.type == "skilled-nursing"
    assert case.discharge_plan is not None
    assert case.discharge_plan.status == PlanStatus.ACTIVE
    assert case.discharge_plan.disposition == "skilled-nursing"
    assert state.visits[0].discharge_time == hours(72)
    assert state.last_discharge == hours(72)
    counts = resources(case)
    assert counts["EpisodeOfCare"] == 1
    assert counts["CarePlan"] == 1
    assert counts["ServiceRequest"] == 1
    assert counts["Task"] == len(case.tasks) + len(case.referrals)


def test_admit_cancel_admit_admit_again_transfer_discharge() -> None:
    state, outcomes = run(
        [
            V.adt("A01", "M1", hours(0)),
            V.adt("A11", "M2", hours(1)),
            V.adt("A01", "M3", hours(2)),
            V.adt("A02", "M4", hours(5), location="5NORTH"),
            V.adt("A03", "M5", hours(48), disposition="06", discharge=hours(48)),
        ]
    )
    first, second = state.cases
    assert first.status == CaseStatus.ENTERED_IN_ERROR
    # the first admission never happened: its case and work were entered in error
    assert set(statuses(first).values()) == {TaskStatus.ENTERED_IN_ERROR}
    assert first.discharge_plan is not None
    assert first.discharge_plan.status == PlanStatus.ENTERED_IN_ERROR
    assert second.id == case_id(rules(), state.visits[0], 2) != first.id
    assert second.status == CaseStatus.TRANSITION
    assert second.referrals[0].type == "home-health"
    assert statuses(second)["initial-assessment"] == TaskStatus.REQUESTED
    assert outcomes[1].changed_cases == (first,)
    for case in state.cases:
        resources(case)


def test_discharge_cancel_discharge_discharge_again() -> None:
    state, outcomes = run(
        [
            V.adt("A01", "M1", hours(0)),
            V.adt("A02", "M2", hours(4), location="5NORTH"),
            V.adt("A03", "M3", hours(48), disposition="03", discharge=hours(48)),
            V.adt("A13", "M4", hours(49)),
            V.adt("A03", "M5", hours(60), disposition="50", discharge=hours(60)),
        ]
    )
    case = only_case(state)
    assert [s.status for s in case.status_history] == [
        CaseStatus.ACTIVE,
        CaseStatus.TRANSITION,
        CaseStatus.ACTIVE,
        CaseStatus.TRANSITION,
    ]
    tasks = statuses(case)
    assert tasks["follow-up-p1"] == TaskStatus.CANCELLED
    assert tasks["med-rec-d1"] == TaskStatus.CANCELLED
    assert tasks["follow-up-p2"] == TaskStatus.REQUESTED
    assert tasks["initial-assessment"] == TaskStatus.REQUESTED  # the admission's work stays
    refs = {r.id: r for r in case.referrals}
    assert refs["referral-d1"].status == PlanStatus.REVOKED
    assert refs["referral-d1"].fulfilment_status == TaskStatus.CANCELLED
    assert refs["referral-d2"].type == "hospice"
    assert state.last_discharge == hours(60)
    # after the A13 the case was active again and the plan back to draft
    after_a13 = outcomes[3].changed_cases[0]
    assert after_a13.status == CaseStatus.ACTIVE
    assert after_a13.discharge_plan is not None
    assert after_a13.discharge_plan.status == PlanStatus.DRAFT
    assert outcomes[3].state.last_discharge is None
    resources(case)


def test_transfers_and_cancel_transfer() -> None:
    state, outcomes = run(
        [
            V.adt("A01", "M1", hours(0)),
            V.adt("A02", "M2", hours(3), location="5NORTH"),
            V.adt("A02", "M3", hours(6), location="ED"),
            V.adt("A12", "M4", hours(7), location="5NORTH"),
            V.adt("A02", "M5", hours(9), location="3EAST"),
            V.adt("A03", "M6", hours(30), disposition="01", discharge=hours(30)),
        ]
    )
    owners = [o.state.cases[0].task("initial-assessment").owner.display for o in outcomes]
    assert owners == [
        team_display("cm-medicine"),
        team_display("cm-surgery"),
        team_display("cm-emergency"),
        team_display("cm-surgery"),  # A12 put the task back
        team_display("cm-medicine"),
        team_display("cm-medicine"),
    ]
    visit = state.visits[0]
    assert visit.location == "3EAST"
    assert [f.location for f in visit.transfers] == ["4WEST", "5NORTH"]
    case = only_case(state)
    assert case.referrals == ()  # home: no post-acute referral
    assert case.status == CaseStatus.TRANSITION


def test_cancel_transfer_leaves_tasks_someone_reassigned() -> None:
    state, _ = run([V.adt("A01", "M1", hours(0)), V.adt("A02", "M2", hours(3), location="5NORTH")])
    case = only_case(state)
    nurse = case.task("payer-notification").owner.model_copy(update={"display": "UR nurse"})
    tasks = tuple(t.reassign(nurse) if t.id == "payer-notification" else t for t in case.tasks)
    changed = case.model_copy(update={"tasks": tasks})
    state = state.model_copy(update={"cases": (changed,)})
    state, _ = run([V.adt("A12", "M3", hours(4))], state)
    case = only_case(state)
    assert case.task("payer-notification").owner == nurse
    assert case.task("initial-assessment").owner.display == team_display("cm-medicine")


def test_duplicates_change_nothing() -> None:
    events = [
        V.adt("A01", "M1", hours(0)),
        V.adt("A02", "M2", hours(3), location="5NORTH"),
        V.adt("A03", "M3", hours(30), disposition="06", discharge=hours(30)),
        V.adt("A13", "M4", hours(31)),
    ]
    once, _ = run(events)
    twice, outcomes = run([e for e in events for _ in range(2)])
    assert twice == once
    for duplicate in outcomes[1::2]:
        assert duplicate.flags == {Flag.DUPLICATE_MESSAGE}
        assert duplicate.changed_cases == ()
    # the same discharge resent under a new control id creates no new work either
    resend = V.adt("A03", "M9", hours(32), disposition="06", discharge=hours(32))
    resent, _ = run([resend], twice)
    again, _ = run([V.adt("A03", "M10", hours(33), disposition="06", discharge=hours(32))], resent)
    assert len(only_case(again).tasks) == len(only_case(resent).tasks)
    assert len(only_case(again).referrals) == len(only_case(resent).referrals)


def test_reused_control_id_with_new_content_is_applied_and_flagged() -> None:
    state, _ = run([V.adt("A01", "M1", hours(0))])
    state, outcomes = run([V.adt("A02", "M1", hours(2), location="5NORTH")], state)
    assert Flag.CONTROL_ID_REUSED in outcomes[0].flags
    assert state.visits[0].location == "5NORTH"


def test_two_admits_then_discharge_and_cancel_discharge() -> None:
    state, outcomes = run(
        [
            V.adt("A01", "M1", hours(0)),
            V.adt("A01", "M2", hours(1), location="5NORTH"),
            V.adt("A03", "M3", hours(40), disposition="62", discharge=hours(40)),
            V.adt("A13", "M4", hours(41)),
        ]
    )
    case = only_case(state)
    assert case.status == CaseStatus.ACTIVE
    assert sum(t.id == "initial-assessment" for t in case.tasks) == 1
    assert statuses(case)["follow-up-p1"] == TaskStatus.CANCELLED
    assert case.referrals[0].type == "rehabilitation"
    assert case.referrals[0].status == PlanStatus.REVOKED
    # the second admit moved the visit (and its open work) to the surgical unit, nothing new
    assert [t.action for t in outcomes[1].trace].count("task-created") == 0
    assert outcomes[1].state.cases[0].task("initial-assessment").owner.display == team_display(
        "cm-surgery"
    )
    resources(case)


def test_merge_moves_cases_to_the_surviving_patient() -> None:
    alpha = Visit(mrn="MRN-A1", visit="VA1")
    beta = Visit(mrn="MRN-B2", visit="VB2")
    state_a, _ = run([alpha.adt("A01", "A1", hours(0))])
    state_b, _ = run(
        [beta.adt("A01", "B1", hours(1)), beta.adt("A02", "B2", hours(2), location="5NORTH")]
    )
    ids_before = {e["fullUrl"] for e in map_case(state_b.cases[0])["entry"]}
    merge = alpha.adt("A40", "A2", hours(3), prior_mrn=beta.mrn)
    state, outcomes = run([merge], state_a, merged=(state_b,))
    outcome = outcomes[0]
    assert set(outcome.lock_keys) == {state_a.patient_keys[0], state_b.patient_keys[0]}
    assert outcome.retired_keys == (state_b.patient_keys[0],)
    assert state.patient_keys == (state_a.patient_keys[0], state_b.patient_keys[0])
    assert {c.id for c in state.cases} == {state_a.cases[0].id, state_b.cases[0].id}
    for case in state.cases:
        assert case.patient.primary.value == alpha.mrn
    moved = next(c for c in state.cases if c.id == state_b.cases[0].id)
    assert {e["fullUrl"] for e in map_case(moved)["entry"]} == ids_before
    assert {v.visit_number for v in state.visits} == {alpha.visit, beta.visit}
    # the merged visit's work goes on under the surviving patient
    survivor = Visit(mrn=alpha.mrn, visit=beta.visit)
    discharge = survivor.adt("A03", "A4", hours(30), disposition="03", discharge=hours(30))
    state, _ = run([discharge], state)
    assert next(c for c in state.cases if c.id == moved.id).status == CaseStatus.TRANSITION


def test_non_qualifying_patient_gets_no_case() -> None:
    young = Visit(birth="19990101", diagnosis="S52.5", payer=None)
    state, outcomes = run(
        [
            young.adt("A01", "Y1", hours(0)),
            young.adt("A03", "Y2", hours(20), disposition="01", discharge=hours(20)),
        ]
    )
    assert state.cases == ()
    assert all(Flag.NOT_QUALIFIED in o.flags for o in outcomes)
    assert state.last_discharge == hours(20)  # remembered for readmission screening


def test_readmission_within_the_window_qualifies() -> None:
    first = Visit(birth="19990101", diagnosis="S52.5", payer=None, visit="VR1")
    soon = Visit(birth="19990101", diagnosis="S52.5", payer=None, visit="VR2")
    late = Visit(birth="19990101", diagnosis="S52.5", payer=None, visit="VR3")
    state, _ = run(
        [
            first.adt("A01", "R1", hours(0)),
            first.adt("A03", "R2", hours(10), discharge=hours(10)),
            soon.adt("A01", "R3", hours(10 + 24 * 5)),
        ]
    )
    case = only_case(state)
    assert case.screening is not None
    assert [c.code for c in case.screening.criteria] == ["patient-class", "readmission-within"]
    state, _ = run([late.adt("A01", "R4", hours(10 + 24 * 90))], state)
    assert len(state.cases) == 1


def test_ed_patient_becomes_inpatient() -> None:
    for change in ("A06", "A08", "A02"):
        state, outcomes = run(
            [
                V.adt("A04", "E1", hours(0), patient_class="E", location="ED"),
                V.adt(change, "E2", hours(3), patient_class="I", location="ED"),
            ]
        )
        assert Flag.NOT_QUALIFIED in outcomes[0].flags
        case = only_case(state)
        assert case.status == CaseStatus.ACTIVE
        assert case.task("initial-assessment").owner.display == team_display("cm-emergency")
        assert case.status_history[0].start == hours(3)


def test_discharge_without_admit_opens_case_in_transition() -> None:
    state, _ = run([V.adt("A03", "D1", hours(50), disposition="06", discharge=hours(50))])
    case = only_case(state)
    assert [s.status for s in case.status_history] == [CaseStatus.TRANSITION]
    assert "initial-assessment" not in statuses(case)
    assert {"follow-up-p1", "med-rec-d1"} <= set(statuses(case))
    assert case.referrals[0].type == "home-health"
    resources(case)
    state, _ = run([V.adt("A13", "D2", hours(51))], state)
    # the discharge that opened the case is cancelled: an inpatient case, admitted as usual
    case = only_case(state)
    assert case.status == CaseStatus.ACTIVE
    assert statuses(case)["initial-assessment"] == TaskStatus.REQUESTED
    assert statuses(case)["payer-notification"] == TaskStatus.REQUESTED
    assert statuses(case)["med-rec-d1"] == TaskStatus.CANCELLED


def test_unmapped_disposition_creates_no_work_and_is_flagged() -> None:
    state, outcomes = run(
        [
            V.adt("A01", "U1", hours(0)),
            V.adt("A03", "U2", hours(20), disposition="ZZ", discharge=hours(20)),
        ]
    )
    case = only_case(state)
    assert case.referrals == ()
    discharge_work = {t.id for t in case.tasks} - {"initial-assessment", "payer-notification"}
    # only the rules' discharge tasks: nothing for the unknown disposition
    assert discharge_work == {"follow-up-p1", *(f"{n}-d1" for n in rules().discharge.tasks)}
    flagged = [t for t in outcomes[1].trace if Flag.UNMAPPED_DISPOSITION in t.flags]
    assert len(flagged) == 1
    assert flagged[0].message_control_id == "U2"
    assert flagged[0].rule == "adt-concept-maps.discharge_disposition"
    assert flagged[0].target is None
    resources(case)


def test_pending_discharge_and_expected_date() -> None:
    state, _ = run(
        [
            V.adt("A01", "P1", hours(0)),
            V.adt("A16", "P2", hours(20)),
            V.adt("A08", "P3", hours(21), expected="20240309"),
            V.adt("A16", "P4", hours(22)),
        ]
    )
    case = only_case(state)
    pending = [t for t in case.tasks if t.id.endswith("-p1")]
    assert len(pending) == len(rules().pending_discharge.tasks)
    assert case.discharge_plan is not None
    assert str(case.discharge_plan.expected_discharge) == "2024-03-09"
    assert all(t.care_plan == case.discharge_plan.id for t in pending)
    state, _ = run([V.adt("A08", "P5", hours(23), expected='""')], state)
    plan = only_case(state).discharge_plan
    assert plan is not None
    assert plan.expected_discharge is None


def test_replay_gives_identical_output_and_state_survives_json() -> None:
    other = Visit(visit="VX#9/2024")  # not id-safe: hashed into the case id
    events = [
        V.adt("A01", "Q1", hours(0)),
        V.adt("A02", "Q2", hours(2), location="5NORTH"),
        V.adt("A02", "Q3", hours(4), location="3EAST"),
        V.adt("A12", "Q4", hours(5)),
        V.adt("A03", "Q5", hours(40), disposition="03", discharge=hours(40)),
        V.adt("A13", "Q6", hours(41)),
        V.adt("A03", "Q7", hours(50), disposition="ZZ", discharge=hours(50)),
        other.adt("A01", "Q8", hours(60)),
        other.adt("A11", "Q9", hours(61)),
        other.adt("A01", "Q10", hours(62)),
    ]
    first, _ = run(events)
    second, _ = run(events)
    assert first == second
    assert [map_case_json(c) for c in first.cases] == [map_case_json(c) for c in second.cases]
    assert len(first.cases) == 3
    restored = PatientState.model_validate_json(first.model_dump_json())
    assert restored == first
    hashed = [c.id for c in first.cases if c.encounters[0].value == other.visit]
    assert all(i.startswith(f"{rules().case_id_prefix}-x-") for i in hashed)


def _complete(case: Case, task_ids: set[str]) -> Case:
    tasks = tuple(
        t.transition(TaskStatus.IN_PROGRESS).transition(TaskStatus.COMPLETED)
        if t.id in task_ids
        else t
        for t in case.tasks
    )
    done = {"fulfilment_status": TaskStatus.COMPLETED}
    refs = tuple(r.model_copy(update=done) for r in case.referrals)
    return Case.model_validate({**dict(case), "tasks": tasks, "referrals": refs})


def test_close_due_cases() -> None:
    from cm_fhir.workflow import close_due_cases

    state, _ = run(
        [
            V.adt("A01", "C1", hours(0)),
            V.adt("A03", "C2", hours(20), disposition="06", discharge=hours(20)),
        ]
    )
    early = hours(21)
    assert close_due_cases(state, rules(), early).changed_cases == ()
    case = only_case(state)
    done = _complete(case, {t.id for t in case.tasks if t.id.endswith(("-d1", "-p1"))})
    closed = close_due_cases(state.model_copy(update={"cases": (done,)}), rules(), early)
    (case,) = closed.changed_cases
    assert case.status == CaseStatus.CLOSED
    assert closed.trace[-1].rule == "discharge.close_when_follow_up_done"
    later = hours(20) + rules().discharge.close_after
    timed = close_due_cases(state, rules(), later)
    (case,) = timed.changed_cases
    assert case.status == CaseStatus.CLOSED
    assert case.closed == later
    assert not any(t.is_open for t in case.tasks)
    resources(case)
    assert later < NOW  # the runner's clock is past the window too


def test_cancel_admit_marks_even_started_work_entered_in_error() -> None:
    state, _ = run([V.adt("A01", "K1", hours(0))])
    case = only_case(state)
    started = case.update_task_status("initial-assessment", TaskStatus.IN_PROGRESS)
    state = state.model_copy(update={"cases": (started,)})
    state, _ = run([V.adt("A11", "K2", hours(1))], state)
    case = only_case(state)
    assert case.status == CaseStatus.ENTERED_IN_ERROR
    tasks = statuses(case)
    assert tasks["initial-assessment"] == TaskStatus.ENTERED_IN_ERROR
    assert tasks["payer-notification"] == TaskStatus.ENTERED_IN_ERROR


def test_cancel_admit_reverts_a_case_that_existed_before() -> None:
    no_payer = Visit(payer=None)
    state, _ = run(
        [
            no_payer.adt("A03", "L1", hours(30), disposition="01", discharge=hours(30)),
            V.adt("A01", "L2", hours(31)),  # late admit, now with IN1: a payer notification
            V.adt("A11", "L3", hours(32)),
        ]
    )
    case = only_case(state)
    assert case.status == CaseStatus.TRANSITION  # reverted, not cancelled
    tasks = statuses(case)
    assert tasks["payer-notification"] == TaskStatus.ENTERED_IN_ERROR
    assert tasks["follow-up-p1"] == TaskStatus.REQUESTED


def test_events_without_rule_or_visit_are_traced() -> None:
    state, outcomes = run(
        [
            V.adt("A15", "N1", hours(0)),
            Visit(visit="").adt("A01", "N2", hours(1)),
            V.adt("A12", "N3", hours(2)),
            V.adt("A13", "N4", hours(3)),
        ]
    )
    assert [o.flags for o in outcomes] == [
        {Flag.NO_RULE},
        {Flag.NO_VISIT_NUMBER},
        {Flag.NOTHING_TO_UNDO},
        {Flag.NOTHING_TO_UNDO},
    ]
    assert state.cases == ()
    # Only events applied to a visit are logged (and recognised when they come again).
    assert [e.message_control_id for v in state.visits for e in v.log] == ["N3", "N4"]
    again, repeated = run([V.adt("A12", "N3", hours(2)), V.adt("A15", "N1", hours(0))], state)
    assert again == state
    assert [o.flags for o in repeated] == [{Flag.DUPLICATE_MESSAGE}, {Flag.NO_RULE}]


def test_cancel_discharge_of_a_closed_case_is_flagged() -> None:
    from cm_fhir.workflow import close_due_cases

    state, _ = run([V.adt("A01", "F1", hours(0)), V.adt("A03", "F2", hours(5), discharge=hours(5))])
    state = close_due_cases(state, rules(), hours(5) + rules().discharge.close_after).state
    state, outcomes = run([V.adt("A13", "F3", hours(6))], state)
    assert Flag.CASE_FINAL in outcomes[0].flags
    assert only_case(state).status == CaseStatus.CLOSED
