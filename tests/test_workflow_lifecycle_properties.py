"""Any feed of lifecycle events: the workflow never raises, and what it leaves is consistent.

The feeds come from the one feed generator (:func:`feed_strategies.feeds` with ``lifecycle``:
pre-admissions and their cancels, deaths by disposition and by PID-30, besides the visit events,
merges), applied as the worker files states: delivered in event-time order, and late and
repeated. The example is a late death once lost: the A05 of a patient who had died (the PID-30
arrived later) left a planned case open beside the death; it is now voided, as in-order delivery
never opens it.
"""

from __future__ import annotations

from hypothesis import HealthCheck, example, given, note, settings

from cm_fhir.domain import CaseStatus, ClosingReason
from cm_fhir.fhir import map_case_json
from cm_fhir.workflow import close_due_cases
from feed_strategies import Feed, feeds
from test_workflow_properties import run
from workflow_messages import START, rules

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@SETTINGS
@given(feeds(lifecycle=True, late=False))
def test_any_feed_in_order_leaves_valid_cases(feed: Feed) -> None:
    leaves_valid_cases(feed)


@SETTINGS
@example(
    Feed.parse(
        "patients: N:N1/1948/-/- S:S1/1999/-/MEDICARE; S8 A08 S:S1/V1 @11 class=O loc=3EAST edd;"
        " S1 A25 S:S1/V1 @1; S3 A03 S:S1/V1 @4 disp=20; S9 A08 S:S1/V2 @12 loc=3EAST;"
        " N3 A05 N:N1/V1 @8; S7 A08 S:S1/V1 @10 class=O; S5 A01 S:S1/V1 @7 loc=5NORTH edd;"
        " S2 A38 S:S1/V2 @2; S4 A03 S:S1/V2 @5 disp=03; N1 A08 N:N1/V1 @3 loc=5NORTH dead;"
        " S3 A03 S:S1/V1 @4 disp=20; S6 A03 S:S1/V2 @9; N2 A04 N:N1/V1 @6 class=P loc=5NORTH dead"
    )
)
@given(feeds(lifecycle=True))
def test_any_feed_late_and_repeated_leaves_valid_cases(feed: Feed) -> None:
    leaves_valid_cases(feed)


def leaves_valid_cases(feed: Feed) -> None:
    note(f"feed: {feed.short()}")
    last = START.replace(year=START.year + 1)
    for state in run(feed).states().values():
        closed = close_due_cases(state, rules(), last + rules().discharge.close_after)
        for case in (*state.cases, *closed.changed_cases):
            map_case_json(case)  # every resource validates with fhir.resources R4B
            if case.is_final:  # a final case leaves no open work behind
                assert not any(t.is_open for t in case.tasks), case.id
        for case in closed.state.cases:
            assert case.status != CaseStatus.TRANSITION  # the clock closes every discharged case
        if state.deceased is not None:
            for case in state.cases:
                assert case.is_final or (
                    case.outcome is not None
                    and case.outcome.closing_reason == ClosingReason.DECEASED
                )
