"""Discharge-planning timing, dispositions and closing in the pure workflow."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cm_fhir.domain import Case, CaseStatus, PlanStatus, TaskStatus
from cm_fhir.fhir import case_to_resources
from cm_fhir.hl7v2.adt import parse_adt
from cm_fhir.hl7v2.events import AdtEvent
from cm_fhir.mapping.adt_maps import load_adt_concept_maps
from cm_fhir.mapping.catalog import check_mappings
from cm_fhir.mapping.registry import default_registry
from cm_fhir.mapping.rules import load_discharge_rules
from cm_fhir.workflow import Flag, PatientState, apply_event, close_due_cases
from workflow_messages import NOW, Visit, hours, rules, run

V = Visit()
EXPECTED = "20240309"  # the visit starts 2024-03-05 09:00 UTC
EXPECTED_DAY = datetime(2024, 3, 9, tzinfo=UTC)


def only_case(state: PatientState) -> Case:
    assert len(state.cases) == 1
    return state.cases[0]


def complete(case: Case, task_ids: set[str], referrals: bool = True) -> Case:
    tasks = tuple(
        t.transition(TaskStatus.IN_PROGRESS).transition(TaskStatus.COMPLETED)
        if t.id in task_ids and t.is_open
        else t
        for t in case.tasks
    )
    done = {"fulfilment_status": TaskStatus.COMPLETED}
    refs = tuple(r.model_copy(update=done) if referrals else r for r in case.referrals)
    return Case.model_validate({**dict(case), "tasks": tasks, "referrals": refs})


# -- post-acute referrals start when the need is known --------------------------------------------


def test_referral_starts_on_a_pre_discharge_disposition_and_is_due_before_discharge() -> None:
    state, outcomes = run(
        [
            V.adt("A01", "T1", hours(0)),
            V.adt("A08", "T2", hours(21), disposition="03", expected=EXPECTED),
        ]
    )
    case = only_case(state)
    (referral,) = case.referrals
    assert referral.id == "referral-skilled-nursing-p1"
    assert referral.type == "skilled-nursing"
    assert referral.authored_on == hours(21)
    rule = rules().discharge.referrals["skilled-nursing"]
    assert rule.before_discharge is not None
    assert referral.due == EXPECTED_DAY - rule.before_discharge < hours(21) + rule.due
    assert case.discharge_plan is not None
    assert case.discharge_plan.status == PlanStatus.DRAFT
    # the discharge with the same disposition finds it arranged: no second referral, no flag
    state, outcomes = run(
        [V.adt("A03", "T3", hours(90), disposition="03", discharge=hours(90))], state
    )
    case = only_case(state)
    assert [r.id for r in case.referrals] == ["referral-skilled-nursing-p1"]
    assert case.referrals[0].status == PlanStatus.ACTIVE
    assert Flag.LATE_REFERRAL not in outcomes[0].flags
    assert any(t.action == "referral-arranged" for t in outcomes[0].trace)
    assert case.discharge_plan is not None
    assert case.discharge_plan.status == PlanStatus.ACTIVE


def test_a_rule_at_admission_starts_the_referral(tmp_path: Path) -> None:
    (tmp_path / "discharge-rules.yaml").write_text(
        "admission:\n  post_acute:\n"
        "    - when: {hospital_service: [ORT]}\n      disposition: home-health\n"
        "    - when: {hospital_service: [MED]}\n      disposition: inpatient-rehab\n",
        encoding="utf-8",
    )
    site = load_discharge_rules(tmp_path)
    state = PatientState()
    outcomes = []
    for event in (
        V.adt("A01", "R1", hours(0), expected=EXPECTED),  # PV1-10 is MED
        V.adt("A08", "R2", hours(5), expected=EXPECTED),  # no new referral on later events
        V.adt("A03", "R3", hours(80), disposition="62", discharge=hours(80)),
    ):
        outcome = apply_event(event, state, site, now=NOW)
        outcomes.append(outcome)
        state = outcome.state
    case = only_case(state)
    (referral,) = case.referrals
    assert referral.id == "referral-inpatient-rehab-p1"
    assert referral.type == "rehabilitation"
    assert referral.authored_on == hours(0)
    assert referral.due < EXPECTED_DAY
    assert any(t.rule == "admission.post_acute[1]" for t in outcomes[0].trace)
    assert Flag.LATE_REFERRAL not in outcomes[2].flags
    # without a matching rule nothing starts at admission
    state, _ = run([V.adt("A01", "R4", hours(0))])
    assert only_case(state).referrals == ()


def test_a_changed_disposition_replaces_the_referral() -> None:
    state, outcomes = run(
        [
            V.adt("A01", "W1", hours(0), disposition="06"),  # known at admission
            V.adt("A08", "W2", hours(10), disposition="03"),
            V.adt("A03", "W3", hours(40), disposition="50", discharge=hours(40)),
        ]
    )
    refs = {r.id: r for r in only_case(state).referrals}
    assert refs["referral-home-health-p1"].status == PlanStatus.REVOKED
    assert refs["referral-home-health-p1"].fulfilment_business_status == (
        "the discharge disposition changed"
    )
    assert refs["referral-skilled-nursing-p1"].status == PlanStatus.REVOKED
    # hospice only became known at the discharge: arranged late, and flagged so
    assert refs["referral-d1"].type == "hospice"
    assert refs["referral-d1"].status == PlanStatus.ACTIVE
    assert Flag.LATE_REFERRAL in outcomes[2].flags


def test_planning_due_dates_follow_a_moved_expected_date() -> None:
    state, outcomes = run(
        [
            V.adt("A01", "Y1", hours(0)),
            V.adt("A16", "Y2", hours(20), expected=EXPECTED, disposition="03"),
        ]
    )
    before = only_case(state)
    assert before.task("dme-p1").due == hours(44)  # 24 h after the A16, before the day
    assert before.referrals[0].due == EXPECTED_DAY - timedelta(days=1)
    state, outcomes = run([V.adt("A08", "Y3", hours(21), expected="20240307")], state)
    case = only_case(state)
    new_day = datetime(2024, 3, 7, tzinfo=UTC)
    assert case.task("dme-p1").due == new_day  # brought forward to the new day
    assert case.task("post-acute-needs-p1").due == hours(20)  # a day before it: due at once
    assert case.referrals[0].due == hours(20)
    assert case.task("initial-assessment").due == before.task("initial-assessment").due
    moved = {t.target for t in outcomes[0].trace if t.action == "due-moved"}
    assert moved == {
        "dme-p1",
        "education-p1",
        "follow-up-p1",
        "post-acute-needs-p1",
        case.referrals[0].id,
    }


def test_due_dates_never_fall_before_the_event() -> None:
    state, _ = run(
        [V.adt("A01", "Z1", hours(0)), V.adt("A16", "Z2", hours(20), expected="20240301")]
    )
    case = only_case(state)
    assert all(t.due >= hours(20) for t in case.tasks)
    assert case.task("dme-p1").due == hours(20)  # the expected day has passed: due now


# -- the follow-up appointment, the call, and planning work open at discharge ---------------------


def test_follow_up_is_booked_before_discharge_and_open_planning_is_settled_per_rules() -> None:
    state, outcomes = run(
        [
            V.adt("A01", "F1", hours(0)),
            V.adt("A16", "F2", hours(20), expected=EXPECTED),
            V.adt("A03", "F3", hours(90), disposition="01", discharge=hours(90)),
        ]
    )
    case = only_case(state)
    follow_up = case.task("follow-up-p1")
    assert follow_up.kind == "follow-up-appointment"
    assert follow_up.authored_on == hours(20)
    assert follow_up.due <= EXPECTED_DAY
    assert "7 days" in follow_up.description
    tasks = {t.id: t for t in case.tasks}
    assert not any(i.startswith("follow-up-p") and i != "follow-up-p1" for i in tasks)
    assert tasks["follow-up-p1"].status == TaskStatus.REQUESTED  # at_discharge: keep
    assert tasks["dme-p1"].status == TaskStatus.CANCELLED  # at_discharge: cancel
    assert tasks["dme-p1"].business_status == "discharged before this was done"
    assert tasks["post-acute-needs-p1"].status == TaskStatus.REQUESTED  # at_discharge: flag
    flagged = [t for t in outcomes[2].trace if Flag.PRE_DISCHARGE_WORK_OPEN in t.flags]
    assert [t.target for t in flagged] == ["post-acute-needs-p1"]
    call = tasks["follow-up-call-d1"]
    assert call.kind == "follow-up-call"
    assert call.due == hours(90) + timedelta(hours=72)
    assert call.not_before == hours(90) + timedelta(hours=48)  # a 48-72 h window
    (fhir_call,) = [
        r
        for r in case_to_resources(case, default_registry())
        if r["resourceType"] == "Task" and r["identifier"][0]["value"].endswith("follow-up-call-d1")
    ]
    assert fhir_call["restriction"]["period"] == {
        "start": "2024-03-11T03:00:00+00:00",
        "end": "2024-03-12T03:00:00+00:00",
    }
    assert "48 to 72 hours" in call.description


def test_planning_work_done_before_discharge_is_left_alone() -> None:
    state, _ = run([V.adt("A01", "G1", hours(0)), V.adt("A16", "G2", hours(20))])
    case = only_case(state)
    done = complete(case, {"dme-p1", "education-p1", "post-acute-needs-p1"})
    state = state.model_copy(update={"cases": (done,)})
    state, outcomes = run(
        [V.adt("A03", "G3", hours(50), disposition="01", discharge=hours(50))], state
    )
    assert Flag.PRE_DISCHARGE_WORK_OPEN not in outcomes[0].flags
    assert only_case(state).task("dme-p1").status == TaskStatus.COMPLETED


def test_planning_holds_across_a_cancelled_discharge() -> None:
    state, outcomes = run(
        [
            V.adt("A01", "C1", hours(0)),
            V.adt("A16", "C2", hours(20), expected=EXPECTED),
            V.adt("A03", "C3", hours(40), disposition="01", discharge=hours(40)),
            V.adt("A13", "C4", hours(41)),
            V.adt("A16", "C5", hours(45)),
            V.adt("A03", "C6", hours(60), disposition="01", discharge=hours(60)),
        ]
    )
    tasks = {t.id: t.status for t in only_case(state).tasks}
    # one follow-up booking for the visit: planned before the first discharge, still open
    assert [i for i in tasks if i.startswith("follow-up-p")] == ["follow-up-p1"]
    assert tasks["follow-up-p1"] == TaskStatus.REQUESTED
    assert tasks["med-rec-d1"] == TaskStatus.CANCELLED
    assert tasks["med-rec-d2"] == TaskStatus.REQUESTED
    assert not [t for t in outcomes[4].trace if t.action == "task-created"]
    # the first A03 cancelled the open DME and education work; its A13 asked for them again
    after_a13 = {t.id: t.status for t in outcomes[3].state.cases[0].tasks}
    assert after_a13["dme-p1"] == after_a13["education-p1"] == TaskStatus.CANCELLED
    assert after_a13["dme-p2"] == after_a13["education-p2"] == TaskStatus.REQUESTED
    assert "post-acute-needs-p2" not in after_a13  # flagged, never cancelled: still open
    assert tasks["dme-p2"] == TaskStatus.CANCELLED  # the second discharge settled them again


# -- dispositions --------------------------------------------------------------------------------


def test_unmapped_disposition_before_discharge_creates_nothing() -> None:
    """Only a pending discharge's PV1-36 is flagged; on an admit or update it is noise."""
    state, outcomes = run(
        [
            V.adt("A01", "H1", hours(0), disposition="ZZ"),
            V.adt("A08", "H2", hours(5), disposition="ZZ"),
            V.adt("A16", "H3", hours(6), disposition="ZZ", expected="20240309"),
        ]
    )
    assert only_case(state).referrals == ()
    assert outcomes[1].changed_cases == ()
    assert [Flag.UNMAPPED_DISPOSITION in o.flags for o in outcomes] == [False, False, True]


def test_a_site_concept_map_for_other_disposition_codes(tmp_path: Path) -> None:
    # German discharge reasons (Entlassungsgrund, first two digits), as a site would map them
    (tmp_path / "adt-concept-maps.yaml").write_text(
        "discharge_disposition:\n  map:\n"
        '    "01": home\n    "07": expired\n    "09": inpatient-rehab\n'
        '    "10": skilled-nursing\n    "11": hospice\n',
        encoding="utf-8",
    )
    maps = load_adt_concept_maps(tmp_path)

    def adt(event: str, control_id: str, at: datetime, **fields: object) -> AdtEvent:
        parsed = parse_adt(V.raw(event, control_id, at, **fields), maps)  # type: ignore[arg-type]
        assert isinstance(parsed, AdtEvent)
        return parsed

    state = PatientState()
    for event in (
        adt("A01", "I1", hours(0)),
        adt("A08", "I2", hours(5), disposition="10"),
        adt("A03", "I3", hours(30), disposition="07", discharge=hours(30)),
    ):
        state = apply_event(event, state, rules(), now=NOW).state
    case = only_case(state)
    assert case.referrals[0].type == "skilled-nursing"
    assert case.referrals[0].status == PlanStatus.REVOKED  # code 07: the patient died
    assert case.status == CaseStatus.CLOSED
    assert state.deceased == hours(30)


# -- closing -------------------------------------------------------------------------------------


def test_a_referral_arranged_before_discharge_must_be_done_before_the_case_closes() -> None:
    state, _ = run(
        [
            V.adt("A01", "J1", hours(0)),
            V.adt("A08", "J2", hours(10), disposition="06"),
            V.adt("A03", "J3", hours(30), disposition="06", discharge=hours(30)),
        ]
    )
    case = only_case(state)
    discharge_work = {t.id for t in case.tasks if t.id.endswith(("-d1", "-p1"))}
    tasks_only = complete(case, discharge_work, referrals=False)
    still = close_due_cases(state.model_copy(update={"cases": (tasks_only,)}), rules(), hours(31))
    assert still.changed_cases == ()
    everything = complete(case, discharge_work)
    closed = close_due_cases(state.model_copy(update={"cases": (everything,)}), rules(), hours(31))
    (case,) = closed.changed_cases
    assert case.status == CaseStatus.CLOSED
    assert case.referrals[0].status == PlanStatus.COMPLETED
    assert case.discharge_plan is not None
    assert case.discharge_plan.status == PlanStatus.COMPLETED
    # admission work nobody finished does not stay open on a closed case
    assert case.task("initial-assessment").status == TaskStatus.CANCELLED
    assert case.task("initial-assessment").business_status == "the case closed"


def test_close_after_cancels_what_is_still_open_including_early_referrals() -> None:
    state, _ = run(
        [
            V.adt("A01", "L1", hours(0)),
            V.adt("A08", "L2", hours(10), disposition="06"),
            V.adt("A03", "L3", hours(30), disposition="06", discharge=hours(30)),
        ]
    )
    window = rules().discharge.close_after
    assert close_due_cases(state, rules(), hours(30) + window - timedelta(seconds=1)).trace == ()
    timed = close_due_cases(state, rules(), hours(30) + window)
    (case,) = timed.changed_cases
    assert case.status == CaseStatus.CLOSED
    assert case.closed == hours(30) + window
    assert not any(t.is_open for t in case.tasks)
    assert case.referrals[0].status == PlanStatus.REVOKED
    assert {t.rule for t in timed.trace} == {"discharge.close_after"}


@pytest.mark.parametrize("pre", ["A05", "A01"])
def test_cases_not_in_transition_never_close_on_the_clock(pre: str) -> None:
    state, _ = run([V.adt(pre, "M1", hours(0), patient_class="P" if pre == "A05" else "I")])
    later = hours(0) + 10 * rules().discharge.close_after
    assert close_due_cases(state, rules(), later).changed_cases == ()


def test_without_close_when_follow_up_done_only_the_clock_closes(tmp_path: Path) -> None:
    (tmp_path / "discharge-rules.yaml").write_text(
        "discharge:\n  close_when_follow_up_done: false\n", encoding="utf-8"
    )
    site = load_discharge_rules(tmp_path)
    state = PatientState()
    for event in (
        V.adt("A01", "K1", hours(0)),
        V.adt("A03", "K2", hours(30), disposition="01", discharge=hours(30)),
    ):
        state = apply_event(event, state, site, now=NOW).state
    case = only_case(state)
    done = complete(case, {t.id for t in case.tasks})
    state = state.model_copy(update={"cases": (done,)})
    assert close_due_cases(state, site, hours(31)).changed_cases == ()
    (closed,) = close_due_cases(state, site, hours(30) + site.discharge.close_after).changed_cases
    assert closed.status == CaseStatus.CLOSED


# -- the rules file ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "key", "reason"),
    [
        ("discharge:\n  catch_up: [book-taxi]\n", "", "book-taxi"),
        ("pre_admission:\n  screen_as: INPATIENT\n", "pre_admission.screen_as", "INPATIENT"),
        ("class_change:\n  not_qualified: ignore\n", "class_change.not_qualified", "close"),
        (
            "pending_discharge:\n  tasks:\n    dme:\n      at_discharge: later\n",
            "pending_discharge.tasks.dme.at_discharge",
            "cancel",
        ),
        ("death:\n  tasks:\n    wake:\n      kind: party\n", "death.tasks.wake", ""),
        (
            "discharge:\n  tasks:\n    follow-up-call:\n      not_before: 4d\n",
            "discharge.tasks.follow-up-call",
            "later than due",
        ),
        (
            "admission:\n  post_acute:\n    - when: {age: {min: 80}}\n      disposition: moon\n",
            "admission.post_acute[0].disposition",
            "unknown code 'moon'",
        ),
        (
            "discharge:\n  unmapped_disposition: {}\n",
            "discharge.unmapped_disposition",
            "unknown key",
        ),
    ],
)
def test_bad_lifecycle_rules_name_the_key(
    tmp_path: Path, override: str, key: str, reason: str
) -> None:
    (tmp_path / "discharge-rules.yaml").write_text(override, encoding="utf-8")
    [problem] = check_mappings(tmp_path).problems  # the file, then its codes across files
    assert problem.key.startswith(key)
    assert reason in problem.reason
