"""What an EHR says of an assessment's Task, applied to the case. Pure: no I/O.

An assessment is written as a Task whose identifier is in the assessment system (not the task
system), so status back reads it as a :class:`~cm_fhir.sync.task_states.RemoteTask` with
``assessment`` set. The move is judged by the Task state machine from the assessment's status in
Task terms; a legal move to ``requested``, ``in-progress``, ``completed`` or ``cancelled`` sets
that assessment status (other Task statuses have none: the status stays, the owner still
follows). Completing needs a summary: the Task's ``output`` of type ``summary``, or the one the
assessment holds; without one the move is ``illegal`` (ignored and logged). The owner becomes
the assessment's performer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cm_fhir.domain.case import Case
from cm_fhir.domain.codes import AssessmentStatus, TaskStatus
from cm_fhir.domain.task_states import Verdict, judge_transition
from cm_fhir.workflow.actions import revalidated

if TYPE_CHECKING:
    from cm_fhir.sync.task_states import Applied, RemoteTask

__all__ = ["apply_assessment"]


def apply_assessment(case: Case, remote: RemoteTask) -> Applied:
    """Apply what the EHR says of one assessment's Task to ``case`` (see the module)."""
    from cm_fhir.sync.task_states import Applied, Outcome

    assessment = next((a for a in case.assessments if a.id == remote.local_id), None)
    if assessment is None:
        return Applied(case, Outcome.UNKNOWN)
    ours = TaskStatus(assessment.status.value)
    moved = (ours, remote.status)
    verdict = judge_transition(ours, remote.status, through=True)
    if verdict is Verdict.ILLEGAL:
        return Applied(case, Outcome.ILLEGAL, moved=moved)
    update: dict[str, object] = {}
    actions = []
    target = {s.value: s for s in AssessmentStatus}.get(remote.status.value)
    if verdict is Verdict.LEGAL and target is not None and target != assessment.status:
        summary = remote.summary or assessment.summary
        if target is AssessmentStatus.COMPLETED and not summary:
            return Applied(case, Outcome.ILLEGAL, moved=moved)
        update["status"] = target
        actions.append(f"assessment:{target.value}")
        if target is AssessmentStatus.COMPLETED and summary != assessment.summary:
            update["summary"] = summary
            actions.append("summary")
    if remote.owner is not None and remote.owner != assessment.performer:
        update["performer"] = remote.owner
        actions.append("performer")
    if not update:
        return Applied(case, Outcome.UNCHANGED, moved=moved)
    changed = assessment.model_copy(update=update)
    assessments = tuple(changed if a.id == assessment.id else a for a in case.assessments)
    return Applied(
        revalidated(case, assessments=assessments), Outcome.APPLIED, tuple(actions), moved
    )
