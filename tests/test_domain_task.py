"""The Task state machine: every allowed move, terminal states and entered-in-error."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cm_fhir.domain import TASK_TRANSITIONS, PartyKind, PartyRef, Task, TaskStatus
from cm_fhir.errors import TransitionError

S = TaskStatus
T0 = datetime(2026, 2, 1, 8, 0, tzinfo=UTC)
TERMINAL = {S.COMPLETED, S.FAILED, S.CANCELLED, S.REJECTED, S.ENTERED_IN_ERROR}


def task(status: TaskStatus) -> Task:
    return Task(
        id="t1",
        kind="medication-adherence",
        description="Check the refill",
        status=status,
        owner=PartyRef(kind=PartyKind.PRACTITIONER, display="Case manager"),
        authored_on=T0,
        due=T0 + timedelta(days=3),
    )


ALLOWED = [(a, b) for a, targets in TASK_TRANSITIONS.items() for b in sorted(targets)]
FORBIDDEN = [
    (a, b)
    for a in S
    for b in S
    if a != b and b != S.ENTERED_IN_ERROR and b not in TASK_TRANSITIONS[a]
]


@pytest.mark.parametrize(("current", "target"), ALLOWED)
def test_allowed_transitions(current: TaskStatus, target: TaskStatus) -> None:
    moved = task(current).transition(target, business_status="done by phone")
    assert moved.status is target
    assert moved.business_status == "done by phone"


@pytest.mark.parametrize(("current", "target"), FORBIDDEN)
def test_forbidden_transitions(current: TaskStatus, target: TaskStatus) -> None:
    with pytest.raises(TransitionError):
        task(current).transition(target)


@pytest.mark.parametrize("status", sorted(TERMINAL))
def test_terminal_states_have_no_way_out(status: TaskStatus) -> None:
    assert TASK_TRANSITIONS[status] == frozenset()
    assert not task(status).is_open


@pytest.mark.parametrize("status", list(S))
def test_entered_in_error_from_anywhere(status: TaskStatus) -> None:
    assert task(status).transition(S.ENTERED_IN_ERROR).status is S.ENTERED_IN_ERROR


def test_completed_cannot_go_back_to_draft() -> None:
    with pytest.raises(TransitionError) as caught:
        task(S.COMPLETED).transition(S.DRAFT)
    assert str(caught.value) == (
        "task 't1' cannot go from 'completed' to 'draft'; "
        "allowed from 'completed': none (terminal state)"
    )


def test_forbidden_message_lists_the_allowed_targets() -> None:
    with pytest.raises(TransitionError) as caught:
        task(S.DRAFT).transition(S.COMPLETED)
    assert str(caught.value) == (
        "task 't1' cannot go from 'draft' to 'completed'; "
        "allowed from 'draft': cancelled, ready, requested"
    )


def test_overdue_only_while_open() -> None:
    late = T0 + timedelta(days=4)
    assert task(S.IN_PROGRESS).is_overdue(late)
    assert not task(S.IN_PROGRESS).is_overdue(T0)
    assert not task(S.COMPLETED).is_overdue(late)
