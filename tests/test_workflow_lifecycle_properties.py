"""Any order of lifecycle events: the workflow never raises, and what it leaves is consistent."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from cm_fhir.domain import CaseStatus, ClosingReason
from cm_fhir.fhir import map_case_json
from cm_fhir.hl7v2.events import AdtEvent
from cm_fhir.workflow import close_due_cases
from workflow_messages import Visit, hours, rules, run

EVENTS = ["A01", "A02", "A03", "A04", "A05", "A06", "A07", "A08", "A11", "A12", "A13", "A14"]
EVENTS += ["A16", "A25", "A27", "A38"]
VISITS = [Visit(), Visit(visit="V2"), Visit(birth="19990101", diagnosis=None, payer=None)]


@st.composite
def feeds(draw: st.DrawFn) -> list[AdtEvent]:
    out: list[AdtEvent] = []
    for i in range(draw(st.integers(1, 8))):
        at: datetime = hours(i * 10)
        fields: dict[str, Any] = {
            "disposition": draw(st.sampled_from(["", "01", "03", "06", "20", "50", "ZZ"])),
            "expected": draw(st.sampled_from(["", "20240309", "20240301", '""'])),
            "patient_class": draw(st.sampled_from(["I", "I", "O", "E", "P"])),
            "location": draw(st.sampled_from(["4WEST", "5NORTH", "ED"])),
            "death_indicator": draw(st.sampled_from(["", "", "", "", "Y"])),
        }
        event = draw(st.sampled_from(EVENTS))
        if event == "A03":
            fields["discharge"] = at
        out.append(draw(st.sampled_from(VISITS)).adt(event, f"M{i}", at, **fields))
    return out


@settings(max_examples=150, deadline=None)
@given(feeds())
def test_any_feed_leaves_valid_cases(events: list[AdtEvent]) -> None:
    state, _ = run(events)
    closed = close_due_cases(state, rules(), hours(100) + rules().discharge.close_after)
    for case in (*state.cases, *closed.changed_cases):
        map_case_json(case)  # every resource validates with fhir.resources R4B
        if case.is_final:  # a final case leaves no open work behind
            assert not any(t.is_open for t in case.tasks)
    for case in closed.state.cases:
        assert case.status != CaseStatus.TRANSITION  # the clock closes every discharged case
    if state.deceased is not None:
        for case in state.cases:
            assert case.is_final or (
                case.outcome is not None and case.outcome.closing_reason == ClosingReason.DECEASED
            )
