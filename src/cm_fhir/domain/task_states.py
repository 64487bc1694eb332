"""The FHIR Task state machine, as our task statuses move along it. Pure.

The statuses are FHIR R4's (``http://hl7.org/fhir/task-status``) and the transitions follow the
R4 Task state diagram: ``draft`` becomes ``requested`` or ``ready``; a request is ``received``,
``accepted`` or ``rejected``; work is ``ready``, ``in-progress`` or ``on-hold``; ``completed``,
``failed``, ``cancelled``, ``rejected`` and ``entered-in-error`` are terminal; any status may
become ``entered-in-error``, and staying in a status is no transition. One table serves every
caller: the cases API and the workflow raise on a forbidden move (:func:`check_task_transition`),
status back from an EHR asks first and ignores it (:func:`judge_transition`), allowing a move
through statuses in between, since a poll sees only a Task's latest version.
"""

from __future__ import annotations

from enum import StrEnum

from cm_fhir.domain.codes import TaskStatus
from cm_fhir.errors import TransitionError

__all__ = [
    "OPEN_TASK_STATUSES",
    "TASK_REACHABLE",
    "TASK_TRANSITIONS",
    "TERMINAL_TASK_STATUSES",
    "UNTOUCHED_TASK_STATUSES",
    "Verdict",
    "check_task_transition",
    "judge_transition",
]

S = TaskStatus
TASK_TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    S.DRAFT: frozenset({S.REQUESTED, S.READY, S.CANCELLED}),
    S.REQUESTED: frozenset(
        {S.RECEIVED, S.ACCEPTED, S.REJECTED, S.READY, S.IN_PROGRESS, S.CANCELLED}
    ),
    S.RECEIVED: frozenset({S.ACCEPTED, S.REJECTED, S.CANCELLED}),
    S.ACCEPTED: frozenset({S.READY, S.IN_PROGRESS, S.CANCELLED}),
    S.READY: frozenset({S.IN_PROGRESS, S.CANCELLED, S.FAILED, S.COMPLETED}),
    S.IN_PROGRESS: frozenset({S.ON_HOLD, S.COMPLETED, S.FAILED, S.CANCELLED}),
    S.ON_HOLD: frozenset({S.IN_PROGRESS, S.CANCELLED, S.FAILED}),
    S.COMPLETED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELLED: frozenset(),
    S.REJECTED: frozenset(),
    S.ENTERED_IN_ERROR: frozenset(),
}


def _closure(
    step: dict[TaskStatus, frozenset[TaskStatus]],
) -> dict[TaskStatus, frozenset[TaskStatus]]:
    out = {}
    for start in step:
        seen: set[TaskStatus] = set()
        todo = list(step[start])
        while todo:
            status = todo.pop()
            if status not in seen:
                seen.add(status)
                todo.extend(step[status])
        out[start] = frozenset(seen)
    return out


#: Every status reachable from each status by one or more allowed transitions.
TASK_REACHABLE = _closure(TASK_TRANSITIONS)
#: Statuses in which a task is still open work.
OPEN_TASK_STATUSES = frozenset(
    {S.DRAFT, S.REQUESTED, S.RECEIVED, S.ACCEPTED, S.READY, S.IN_PROGRESS, S.ON_HOLD}
)
#: Statuses a task never leaves (except to ``entered-in-error``).
TERMINAL_TASK_STATUSES = frozenset(s for s, targets in TASK_TRANSITIONS.items() if not targets)
#: Statuses in which nobody has acted on the task yet (undo may use ``entered-in-error``).
UNTOUCHED_TASK_STATUSES = frozenset({S.DRAFT, S.REQUESTED})


class Verdict(StrEnum):
    """What the state machine says of a proposed move."""

    SAME = "same"  # no move: the status stays
    LEGAL = "legal"
    ILLEGAL = "illegal"


def judge_transition(current: TaskStatus, target: TaskStatus, *, through: bool = False) -> Verdict:
    """Whether ``current -> target`` is no move, an allowed move or a forbidden one.

    ``through``: also allow a move through statuses in between (``requested`` to ``completed``
    by way of ``in-progress``), for a status read from elsewhere whose intermediate versions
    may never have been seen (a poll reads only the latest version).
    """
    if target == current:
        return Verdict.SAME
    if current == S.ENTERED_IN_ERROR:
        return Verdict.ILLEGAL
    allowed = TASK_REACHABLE[current] if through else TASK_TRANSITIONS[current]
    if target == S.ENTERED_IN_ERROR or target in allowed:
        return Verdict.LEGAL
    return Verdict.ILLEGAL


def check_task_transition(current: TaskStatus, target: TaskStatus, entity: str = "task") -> None:
    """Raise TransitionError unless ``current -> target`` is allowed (or no move)."""
    if judge_transition(current, target) is Verdict.ILLEGAL:
        allowed = TASK_TRANSITIONS[current]
        raise TransitionError(
            entity, current.value, target.value, frozenset(a.value for a in allowed)
        )
