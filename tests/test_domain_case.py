"""The case status machine, its history and ``closed``, and the work a final case refuses."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from itertools import pairwise
from typing import Any

import pytest

from cm_fhir.domain import (
    CASE_TRANSITIONS,
    Assessment,
    AssessmentKind,
    Case,
    CaseStatus,
    Goal,
    PartyKind,
    PartyRef,
    Referral,
    Task,
    TaskStatus,
)
from cm_fhir.domain.case import FINAL_CASE_STATUSES
from cm_fhir.errors import DomainError, TransitionError

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=timezone(timedelta(hours=-5)))
NURSE = PartyRef(kind=PartyKind.PRACTITIONER, display="Case manager")
S = CaseStatus
ALL_PAIRS = [(a, b) for a in S for b in S if a != b]


def new_case(status: CaseStatus = S.REFERRED, **extra: Any) -> Case:
    data: dict[str, Any] = {
        "id": "C-9",
        "patient": {"identifiers": [{"system": "urn:oid:1.2.3", "value": "M1"}]},
        "programme": "home-health",
        "status": status,
        "status_history": [{"status": status, "start": T0}],
        "closed": T0 if status in FINAL_CASE_STATUSES else None,
        **extra,
    }
    return Case.model_validate(data)


def a_task(task_id: str = "t1", **extra: Any) -> Task:
    return Task(
        id=task_id,
        kind="follow-up-call",
        description="Call",
        owner=NURSE,
        authored_on=T0,
        due=T0 + timedelta(days=1),
        **extra,
    )


def a_goal(goal_id: str = "g1") -> Goal:
    return Goal(
        id=goal_id,
        description="Walk",
        category="functional",
        qualitative_reason="Observed by PT",
        due=date(2026, 3, 1),
    )


@pytest.mark.parametrize(("current", "target"), ALL_PAIRS)
def test_every_transition_follows_the_table(current: CaseStatus, target: CaseStatus) -> None:
    case = new_case(current)
    at = T0 + timedelta(days=1)
    if target in CASE_TRANSITIONS[current]:
        moved = case.transition(target, at)
        assert moved.status is target
        assert moved.status_history[-2].end == at
        assert moved.status_history[-1].start == at
        assert (moved.closed == at) == (target in FINAL_CASE_STATUSES)
        assert moved.is_final == (target in FINAL_CASE_STATUSES)
    else:
        with pytest.raises(TransitionError) as caught:
            case.transition(target, at)
        assert caught.value.current == current
        assert caught.value.target == target


def test_the_table_has_the_process_shape() -> None:
    assert CASE_TRANSITIONS[S.CLOSED] == frozenset()
    assert CASE_TRANSITIONS[S.CANCELLED] == frozenset()
    assert S.ACTIVE in CASE_TRANSITIONS[S.ON_HOLD]
    assert S.ACTIVE in CASE_TRANSITIONS[S.TRANSITION]
    assert S.REFERRED not in set().union(*CASE_TRANSITIONS.values())


def test_transition_error_message() -> None:
    with pytest.raises(TransitionError) as caught:
        new_case(S.CLOSED).transition(S.ACTIVE, T0)
    assert str(caught.value) == (
        "case 'C-9' cannot go from 'closed' to 'active'; "
        "allowed from 'closed': none (terminal state)"
    )


def test_a_full_life_keeps_history_and_closed_consistent() -> None:
    case = new_case()
    steps = [S.SCREENING, S.ACTIVE, S.ON_HOLD, S.ACTIVE, S.TRANSITION, S.CLOSED]
    for day, status in enumerate(steps, start=1):
        case = case.transition(status, T0 + timedelta(days=day))
    assert [c.status for c in case.status_history] == [S.REFERRED, *steps]
    assert all(c.end == n.start for c, n in pairwise(case.status_history))
    assert case.closed == T0 + timedelta(days=6)
    assert case.opened == T0


def test_same_status_is_a_no_op() -> None:
    case = new_case(S.ACTIVE)
    assert case.transition(S.ACTIVE, T0 + timedelta(days=1)) is case


def test_a_change_cannot_predate_the_current_status() -> None:
    with pytest.raises(DomainError, match="a status change cannot predate the current one"):
        new_case(S.ACTIVE).transition(S.ON_HOLD, T0 - timedelta(seconds=1))


@pytest.mark.parametrize("final", [S.CLOSED, S.CANCELLED])
def test_final_case_takes_no_new_work(final: CaseStatus) -> None:
    case = new_case(final)
    referral = Referral(
        id="r1", type="social", performer=NURSE, requester=NURSE, authored_on=T0, due=T0
    )
    assessment = Assessment(
        id="a1", kind=AssessmentKind.SOCIAL, requested=T0, due=T0, performer=NURSE
    )
    for add, item, what in [
        (case.add_task, a_task(), "tasks"),
        (case.add_goal, a_goal(), "goals"),
        (case.add_referral, referral, "referrals"),
        (case.add_assessment, assessment, "assessments"),
    ]:
        with pytest.raises(DomainError) as caught:
            add(item)  # type: ignore[operator]
        assert str(caught.value) == f"case 'C-9' is {final.value}: it takes no new {what}"


def test_open_case_takes_new_work_and_checks_it() -> None:
    case = new_case(S.ACTIVE).add_goal(a_goal()).add_task(a_task(focus_goal="g1"))
    assert [t.id for t in case.tasks] == ["t1"]
    with pytest.raises(ValueError, match="task id 't1' is used twice"):
        case.add_task(a_task())
    with pytest.raises(ValueError, match="focuses on goal 'nope', absent"):
        case.add_task(a_task("t2", focus_goal="nope"))


def test_update_task_status_uses_the_task_machine() -> None:
    case = new_case(S.ACTIVE).add_task(a_task())
    moved = case.update_task_status("t1", TaskStatus.IN_PROGRESS)
    assert moved.task("t1").status is TaskStatus.IN_PROGRESS
    with pytest.raises(TransitionError):
        moved.update_task_status("t1", TaskStatus.DRAFT)
    with pytest.raises(DomainError, match="case 'C-9' has no task 'x'"):
        case.task("x")
