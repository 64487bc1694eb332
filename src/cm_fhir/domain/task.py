"""Interventions as tasks, following the FHIR Task state machine. Pure.

The allowed transitions are :mod:`cm_fhir.domain.task_states` (the FHIR R4 Task state diagram);
anything else raises :class:`~cm_fhir.errors.TransitionError`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Self

from pydantic import Field, model_validator

from cm_fhir.domain.codes import Priority, TaskIntent, TaskKind, TaskStatus
from cm_fhir.domain.common import DomainModel, Instant, LocalId, NonEmptyStr, PartyRef
from cm_fhir.domain.task_states import (
    OPEN_TASK_STATUSES,
    TASK_TRANSITIONS,
    UNTOUCHED_TASK_STATUSES,
    check_task_transition,
)

__all__ = [
    "OPEN_TASK_STATUSES",
    "TASK_TRANSITIONS",
    "UNTOUCHED_TASK_STATUSES",
    "Task",
    "check_task_transition",
]


class Task(DomainModel):
    """A piece of case-management work: an assessment, a follow-up call, a medication review..."""

    id: LocalId
    """Case-local id."""
    kind: TaskKind
    """What the work is (initial assessment, follow-up call, medication reconciliation...)."""
    description: NonEmptyStr
    """The task in words for the person doing it."""
    status: TaskStatus = TaskStatus.REQUESTED
    """Where the task stands in the FHIR Task state machine."""
    intent: TaskIntent = TaskIntent.ORDER
    """Whether it is ordered, planned or proposed."""
    priority: Priority = Priority.ROUTINE
    """Routine, urgent, asap or stat."""
    owner: PartyRef
    """Who does it (a person or a team)."""
    requester: PartyRef | None = None
    """Who asked for it."""
    authored_on: Instant
    """When the task was created."""
    not_before: Instant | None = Field(
        default=None, description="Work starts no earlier than this (a window with ``due``)"
    )
    due: Instant
    """When it must be done by."""
    business_status: str | None = Field(
        default=None, description="Free text, e.g. 'left voicemail'"
    )
    status_reason: str | None = Field(
        default=None, description="Why the status is what it is, e.g. 'patient declined'"
    )
    completed_at: Instant | None = Field(
        default=None, description="When the work ended (completed, failed, cancelled...)"
    )
    care_plan: LocalId | None = Field(default=None, description="The plan this task carries out")
    focus_goal: LocalId | None = None
    """Id of the goal this task works towards."""
    notes: tuple[NonEmptyStr, ...] = ()
    """Notes added while working the task, oldest first."""

    @model_validator(mode="after")
    def _window(self) -> Self:
        if self.not_before is not None and self.not_before > self.due:
            raise ValueError("not_before is after the due date")
        return self

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_TASK_STATUSES

    def transition(self, target: TaskStatus, *, business_status: str | None = None) -> Task:
        """This task in ``target`` status; TransitionError if the state machine forbids it."""
        check_task_transition(self.status, target, f"task '{self.id}'")
        update: dict[str, object] = {"status": target}
        if business_status is not None:
            update["business_status"] = business_status
        return self.model_copy(update=update)

    def reassign(self, owner: PartyRef) -> Task:
        """A copy owned by ``owner`` (status unchanged)."""
        return self.model_copy(update={"owner": owner})

    def is_overdue(self, now: datetime) -> bool:
        """Whether the task is still open after its due time."""
        return self.is_open and self.due < now
