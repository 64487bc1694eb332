"""The changes the cases API makes to a case, as pure functions ``Case -> Case``. No I/O.

Each keeps the domain's rules: status changes follow ``CASE_TRANSITIONS`` and the Task state
machine (a replaced task or referral fulfilment may only move along it), a closed or cancelled
case takes no new work (:class:`~cm_fhir.errors.DomainError`, answered 409), and the whole
aggregate is validated again, so a change that would break an invariant (a task naming an absent
plan, a goal id used twice) raises :class:`~cm_fhir.errors.ValidationError` (answered 422) with
the field and the reason, never the value.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import pydantic

from cm_fhir.domain import (
    CarePlan,
    Case,
    CaseStatus,
    DischargePlan,
    Goal,
    Referral,
    Task,
    TaskStatus,
)
from cm_fhir.domain.task import check_task_transition
from cm_fhir.errors import DomainError, ValidationError
from cm_fhir.fhir.outcome import Issue, operation_outcome

__all__ = [
    "add_activity",
    "put_care_plan",
    "put_discharge_plan",
    "put_goal",
    "put_referral",
    "put_task",
    "revalidate",
    "task_status",
    "transition",
]

_T = TypeVar("_T", Task, Goal, Referral)


def revalidate(case: Case, **update: Any) -> Case:
    """``case`` with ``update`` applied, the aggregate checked again (ValidationError if not)."""
    try:
        return Case.model_validate({**dict(case), **update})
    except pydantic.ValidationError as exc:
        issues = []
        for error in exc.errors():
            where = ".".join(str(p) for p in error["loc"]) or "case"
            issues.append(Issue("error", "invariant", str(error["msg"]), where))
        first = issues[0]
        raise ValidationError(
            f"the change breaks the case: {first.expression}: {first.text}",
            operation_outcome(issues),
        ) from exc


def _replace(items: tuple[_T, ...], item: _T) -> tuple[_T, ...]:
    return tuple(item if existing.id == item.id else existing for existing in items)


def _find(items: tuple[_T, ...], item_id: str) -> _T | None:
    return next((existing for existing in items if existing.id == item_id), None)


def _require_open(case: Case, what: str) -> None:
    if case.is_final:
        raise DomainError(f"case '{case.id}' is {case.status.value}: it takes no new {what}")


def transition(status: CaseStatus, at: datetime) -> Callable[[Case], Case]:
    """Move the case through its state machine (TransitionError if not allowed)."""
    return lambda case: case.transition(status, at)


def put_goal(goal: Goal) -> Callable[[Case], Case]:
    """Add the goal, or replace the goal with its id."""

    def change(case: Case) -> Case:
        if _find(case.goals, goal.id) is None:
            _require_open(case, "goals")
            return revalidate(case, goals=(*case.goals, goal))
        return revalidate(case, goals=_replace(case.goals, goal))

    return change


def put_task(task: Task) -> Callable[[Case], Case]:
    """Add the task, or replace it; a status change must follow the Task state machine."""

    def change(case: Case) -> Case:
        old = _find(case.tasks, task.id)
        if old is None:
            _require_open(case, "tasks")
            return revalidate(case, tasks=(*case.tasks, task))
        check_task_transition(old.status, task.status, f"task '{task.id}'")
        return revalidate(case, tasks=_replace(case.tasks, task))

    return change


def add_activity(task: Task) -> Callable[[Case], Case]:
    """Add a task that carries out the case's care plan (its ``care_plan`` is set to the plan)."""

    def change(case: Case) -> Case:
        if case.care_plan is None:
            raise DomainError(f"case '{case.id}' has no care plan to add an activity to")
        if _find(case.tasks, task.id) is not None:
            raise DomainError(f"case '{case.id}' already has a task '{task.id}'")
        planned = task.model_copy(update={"care_plan": case.care_plan.id})
        _require_open(case, "tasks")
        return revalidate(case, tasks=(*case.tasks, planned))

    return change


def task_status(
    task_id: str, status: TaskStatus, business_status: str | None
) -> Callable[[Case], Case]:
    """Move one task along the Task state machine (DomainError if the task is unknown)."""

    def change(case: Case) -> Case:
        moved = case.task(task_id).transition(status, business_status=business_status)
        return revalidate(case, tasks=_replace(case.tasks, moved))

    return change


def put_referral(referral: Referral) -> Callable[[Case], Case]:
    """Add the referral, or replace it; its fulfilment status follows the Task state machine."""

    def change(case: Case) -> Case:
        old = _find(case.referrals, referral.id)
        if old is None:
            _require_open(case, "referrals")
            return revalidate(case, referrals=(*case.referrals, referral))
        check_task_transition(
            old.fulfilment_status,
            referral.fulfilment_status,
            f"referral '{referral.id}' fulfilment",
        )
        return revalidate(case, referrals=_replace(case.referrals, referral))

    return change


def put_care_plan(plan: CarePlan) -> Callable[[Case], Case]:
    """Set or replace the care plan (a closed case takes no new plan)."""

    def change(case: Case) -> Case:
        if case.care_plan is None:
            _require_open(case, "care plan")
        return revalidate(case, care_plan=plan)

    return change


def put_discharge_plan(plan: DischargePlan) -> Callable[[Case], Case]:
    """Set or replace the discharge plan (a closed case takes no new plan)."""

    def change(case: Case) -> Case:
        if case.discharge_plan is None:
            _require_open(case, "discharge plan")
        return revalidate(case, discharge_plan=plan)

    return change
