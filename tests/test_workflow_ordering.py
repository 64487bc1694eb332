"""Clinical order: events take effect by event time; cancels undo the event they name."""

from __future__ import annotations

import random

from cm_fhir.domain import Case, CaseStatus, TaskStatus
from cm_fhir.fhir import map_case_json
from cm_fhir.hl7v2.events import AdtEvent
from cm_fhir.workflow import Flag, PatientState
from workflow_messages import Visit, hours, rules, run

V = Visit()


def team(name: str) -> str | None:
    return rules().teams[name].display


def owner(state: PatientState, task_id: str = "initial-assessment") -> str | None:
    (case,) = state.cases
    return case.task(task_id).owner.display


def same_outcome(a: PatientState, b: PatientState) -> None:
    """Equal cases (and FHIR output) and equal visit memory, whatever the arrival order."""
    assert a.cases == b.cases
    assert [map_case_json(c) for c in a.cases] == [map_case_json(c) for c in b.cases]
    assert a.visits == b.visits
    assert a.last_discharge == b.last_discharge


def test_a_late_transfer_does_not_override_a_newer_one() -> None:
    admit = V.adt("A01", "M1", hours(0))
    to_ed = V.adt("A02", "M2", hours(3), location="ED", prior_location="4WEST")
    to_surgery = V.adt("A02", "M3", hours(5), location="5NORTH", prior_location="ED")
    in_order, _ = run([admit, to_ed, to_surgery])
    late, outcomes = run([admit, to_surgery, to_ed])
    assert late.visits[0].location == "5NORTH"
    assert owner(late) == team("cm-surgery")
    assert Flag.STALE_EVENT in outcomes[2].flags
    assert [t.action for t in outcomes[2].trace if Flag.STALE_EVENT in t.flags] == ["stale-event"]
    same_outcome(in_order, late)


def test_a_late_transfer_before_the_discharge_gives_the_discharge_work_its_team() -> None:
    admit = V.adt("A01", "M1", hours(0))
    to_surgery = V.adt("A02", "M2", hours(10), location="5NORTH")
    to_ed = V.adt("A02", "M3", hours(20), location="ED")
    discharge = V.adt("A03", "M4", hours(48), disposition="01", discharge=hours(48))
    in_order, _ = run([admit, to_surgery, to_ed, discharge])
    late, _ = run([admit, to_surgery, discharge, to_ed])
    assert owner(late, "med-rec-d1") == team("cm-emergency")
    same_outcome(in_order, late)


def test_a_stale_event_keeps_what_someone_else_changed() -> None:
    admit = V.adt("A01", "M1", hours(0))
    to_surgery = V.adt("A02", "M2", hours(5), location="5NORTH")
    state, _ = run([admit, to_surgery])
    (case,) = state.cases
    nurse = case.task("payer-notification").owner.model_copy(update={"display": "UR nurse"})
    started = case.update_task_status("initial-assessment", TaskStatus.IN_PROGRESS)
    tasks = tuple(t.reassign(nurse) if t.id == "payer-notification" else t for t in started.tasks)
    state = state.model_copy(update={"cases": (started.model_copy(update={"tasks": tasks}),)})
    late, outcomes = run([V.adt("A08", "M3", hours(2), expected="20240309")], state)
    (case,) = late.cases
    assert case.task("payer-notification").owner == nurse
    assert case.task("initial-assessment").status == TaskStatus.IN_PROGRESS
    # the late A08's own effect still lands: the expected date and the planning work
    assert case.discharge_plan is not None
    assert str(case.discharge_plan.expected_discharge) == "2024-03-09"
    assert {t.id for t in case.tasks} >= {"post-acute-needs-p1", "dme-p1"}
    assert case.task("dme-p1").owner.display == team("cm-surgery")
    assert Flag.STALE_EVENT in outcomes[0].flags


def test_cancelling_a_bed_move_keeps_the_unit_transfer() -> None:
    admit = V.adt("A01", "M1", hours(0))
    to_surgery = V.adt("A02", "M2", hours(2), location="5NORTH", room="501", bed="A")
    bed_move = V.adt("A02", "M3", hours(4), location="5NORTH", room="502", bed="B")
    cancel = V.adt(
        "A12",
        "M4",
        hours(5),
        occurred=hours(4),  # EVN-6: the time of the transfer it cancels
        location="5NORTH",
        room="501",
        bed="A",
        prior_location="5NORTH^502^B",
    )
    state, outcomes = run([admit, to_surgery, bed_move, cancel])
    visit = state.visits[0]
    assert (visit.location, visit.place) == ("5NORTH", "5NORTH^501^A")
    assert owner(state) == team("cm-surgery")
    assert [f.message_control_id for f in visit.transfers] == ["M2"]
    assert Flag.NOTHING_TO_UNDO not in outcomes[3].flags


def test_a_cancel_names_its_transfer_by_location_without_evn_6() -> None:
    admit = V.adt("A01", "M1", hours(0))
    to_surgery = V.adt("A02", "M2", hours(2), location="5NORTH", room="501")
    bed_move = V.adt("A02", "M3", hours(4), location="5NORTH", room="502")
    # EVN-6 is the cancel's own time; PV1-6 names the cancelled location
    cancel = V.adt(
        "A12", "M4", hours(6), location="5NORTH", room="501", prior_location="5NORTH^502^A"
    )
    state, _ = run([admit, to_surgery, bed_move, cancel])
    assert state.visits[0].place == "5NORTH^501^A"
    assert owner(state) == team("cm-surgery")


def test_cancelling_an_earlier_transfer_leaves_the_patient_where_a_later_move_took_them() -> None:
    admit = V.adt("A01", "M1", hours(0))
    to_surgery = V.adt("A02", "M2", hours(2), location="5NORTH")
    to_ed = V.adt("A02", "M3", hours(4), location="ED")
    cancel = V.adt("A12", "M4", hours(6), location="4WEST", prior_location="5NORTH^401^A")
    state, _ = run([admit, to_surgery, to_ed, cancel])
    visit = state.visits[0]
    assert visit.location == "ED"
    assert owner(state) == team("cm-emergency")
    assert [f.message_control_id for f in visit.transfers] == ["M3"]


def test_a_cancel_that_arrives_after_later_moves_undoes_its_transfer_in_place() -> None:
    admit = V.adt("A01", "M1", hours(0))
    to_surgery = V.adt("A02", "M2", hours(2), location="5NORTH")
    to_ed = V.adt("A02", "M3", hours(4), location="ED")
    cancel = V.adt("A12", "M4", hours(6), occurred=hours(2), location="4WEST")
    late, outcomes = run([admit, to_surgery, to_ed, cancel])
    assert Flag.STALE_EVENT in outcomes[3].flags
    # as if the cancel had come before the move to ED: ED still stands, from 4WEST
    frames = late.visits[0].transfers
    assert [(f.message_control_id, f.location) for f in frames] == [("M3", "4WEST")]
    assert owner(late) == team("cm-emergency")
    in_order, _ = run([admit, to_surgery, cancel, to_ed])
    same_outcome(in_order, late)


def _feed() -> list[AdtEvent]:
    return [
        V.adt("A01", "F1", hours(0)),
        V.adt("A02", "F2", hours(2), location="5NORTH"),
        V.adt("A08", "F3", hours(3), location="5NORTH", expected="20240310"),
        V.adt("A02", "F4", hours(6), location="ED"),
        V.adt("A02", "F5", hours(8), location="3EAST"),
        V.adt("A12", "F6", hours(9), occurred=hours(8), location="ED"),
        V.adt("A03", "F7", hours(30), disposition="03", discharge=hours(30)),
    ]


def test_the_result_does_not_depend_on_arrival_order() -> None:
    feed = _feed()
    in_order, _ = run(feed)
    (case,) = in_order.cases
    assert case.status == CaseStatus.TRANSITION
    assert in_order.visits[0].location == "ED"
    shuffler = random.Random(20240305)
    for _ in range(12):
        shuffled = feed[:]
        shuffler.shuffle(shuffled)
        state, _ = run(shuffled)
        same_outcome(in_order, state)


def test_a_resent_stale_event_is_a_duplicate() -> None:
    feed = _feed()
    state, _ = run([*feed[:1], *feed[3:], *feed[1:3]])
    again, outcomes = run(feed[1:3], state)
    assert again == state
    assert all(o.flags == {Flag.DUPLICATE_MESSAGE} for o in outcomes)


def test_a_case_someone_closed_stays_closed_when_a_stale_event_arrives() -> None:
    from cm_fhir.workflow import close_due_cases

    admit = V.adt("A01", "C1", hours(0))
    discharge = V.adt("A03", "C2", hours(20), disposition="01", discharge=hours(20))
    state, _ = run([admit, discharge])
    state = close_due_cases(state, rules(), hours(20) + rules().discharge.close_after).state
    # a closed case's visit is settled: its log is dropped, late events are only recorded
    assert [e.payload for e in state.visits[0].log] == [""]
    late, outcomes = run([V.adt("A02", "C3", hours(5), location="5NORTH")], state)
    assert [t.action for t in outcomes[0].trace] == ["stale-not-applied"]
    (case,) = late.cases
    assert case.status == CaseStatus.CLOSED
    assert not any(t.is_open for t in case.tasks)


def test_a_visit_without_a_case_drops_its_log_a_while_after_its_discharge() -> None:
    young = Visit(birth="19990101", diagnosis="S52.5", payer=None, visit="VY1")
    later = Visit(birth="19990101", diagnosis="S52.5", payer=None, visit="VY2")
    state, _ = run([young.adt("A01", "Y1", hours(0)), young.adt("A03", "Y2", hours(5))])
    assert len(state.visits[0].log) == 2  # late events for it may still come
    after = hours(5) + rules().discharge.close_after
    state, _ = run([later.adt("A01", "Y3", after)], state)
    first = next(v for v in state.visits if v.visit_number == young.visit)
    assert ([e.payload for e in first.log], first.log_complete) == ([""], False)


def test_the_log_survives_json_and_stays_compact() -> None:
    state, _ = run(_feed())
    restored = PatientState.model_validate_json(state.model_dump_json())
    assert restored == state
    (visit,) = state.visits
    bare = state.model_copy(
        update={"visits": (visit.model_copy(update={"log": (), "log_basis": None}),)}
    )
    # the events share most of their content with the first: about 200 bytes each
    per_event = (len(state.model_dump_json()) - len(bare.model_dump_json())) / len(_feed())
    assert per_event < 400, per_event
    # and the log reads back as the events applied, in order
    from cm_fhir.workflow.ordering import logged_events

    assert [a.event for a in logged_events(visit)] == sorted(_feed(), key=_event_time)


def _event_time(event: AdtEvent) -> object:
    assert event.trigger_time is not None
    return (event.trigger_time, event.event == "A12")


def test_a_visit_without_its_first_events_is_not_rederived() -> None:
    state, _ = run(_feed()[:2])
    visit = state.visits[0]
    # a state stored before visits kept their log
    old = state.model_copy(
        update={"visits": (visit.model_copy(update={"log": (), "log_complete": True}),)}
    )
    state, _ = run([V.adt("A02", "O1", hours(4), location="ED")], old)
    assert state.visits[0].log_complete is False
    late, outcomes = run([V.adt("A02", "O2", hours(3), location="3EAST")], state)
    assert outcomes[0].flags == {Flag.STALE_EVENT}
    assert [t.action for t in outcomes[0].trace] == ["stale-not-applied"]
    assert late.cases == state.cases
    assert late.visits[0].location == "ED"


def test_ordering_case_example_is_valid_fhir() -> None:
    state, _ = run(list(reversed(_feed())))
    for case in state.cases:
        map_case_json(case)  # validates with fhir.resources R4B
    assert isinstance(state.cases[0], Case)


def test_events_of_the_same_time_keep_their_arrival_order() -> None:
    # control ids carry no order ("MSG10" sorts before "MSG9"): equal times are taken as they come
    admit = V.adt("A01", "MSG9", hours(0))
    bed = V.adt("A02", "MSG10", hours(0), location="5NORTH")
    state, outcomes = run([admit, bed])
    assert Flag.STALE_EVENT not in outcomes[1].flags
    assert owner(state) == team("cm-surgery")
    # a late event re-derives the visit with the equal-time pair still in arrival order
    late, outcomes = run([V.adt("A08", "MSG8", hours(-1), location="4WEST")], state)
    assert Flag.STALE_EVENT in outcomes[0].flags
    assert late.visits[0].location == "5NORTH"
    assert owner(late) == team("cm-surgery")


def test_an_order_that_breaks_a_domain_rule_leaves_the_visit_and_says_so() -> None:
    from datetime import datetime

    from cm_fhir.errors import DomainError
    from cm_fhir.workflow import facts, ordering
    from cm_fhir.workflow.actions import Step
    from cm_fhir.workflow.engine import _HANDLERS
    from cm_fhir.workflow.state import VisitMemory

    state, _ = run(_feed()[:2])
    late = V.adt("A08", "X1", hours(1), location="ED")

    def refuses(step: Step, visit: VisitMemory) -> VisitMemory:
        raise DomainError("this order is impossible")

    step = Step(state, rules(), datetime.now().astimezone(), late)
    identity = facts.visit_identity(late, rules())
    assert identity is not None
    visit = step.visit(
        identity, facts.patient_key(facts.patient_ref(late.patient.identifiers, rules()))
    )
    text = facts.event_json(late)
    arrival = ordering.Arrival(late, step.at, text, facts.digest(late, text))
    assert ordering.is_stale(step, visit, arrival)
    ordering.rederive(step, visit, arrival, {**_HANDLERS, "A08": refuses})
    after = step.state()
    assert after.cases == state.cases
    assert after.visits == state.visits
    assert step.trace[-1].flags == (Flag.STALE_EVENT, Flag.REORDER_CONFLICT)


def test_a_late_discharge_of_an_earlier_visit_counts_for_readmission() -> None:
    first = Visit(birth="19990101", diagnosis="S52.5", payer=None, visit="VR1")
    second = Visit(birth="19990101", diagnosis="S52.5", payer=None, visit="VR2")
    admit = first.adt("A01", "R1", hours(0))
    discharge = first.adt("A03", "R2", hours(10), discharge=hours(10))
    readmit = second.adt("A01", "R3", hours(10 + 24 * 5))
    in_order, _ = run([admit, discharge, readmit])
    (case,) = in_order.cases
    assert case.encounters[0].value == second.visit  # qualifies only as a readmission
    late, outcomes = run([admit, readmit, discharge])
    assert Flag.STALE_EVENT in outcomes[2].flags
    same_outcome(in_order, late)
