"""A Task as an EHR holds it, and what it changes in our case. Pure: no I/O.

:func:`read_remote_task` reads a FHIR Task that an EHR returned (a search, a read, a Subscription
notification) into a :class:`RemoteTask`, or None when it is not one of ours (no identifier in our
task system). Our Tasks carry the identifier ``<base>/sid/task|<case>.<task>`` (a case task) or
``<case>.<referral>.fulfilment`` (a referral's fulfilment Task), so the case and the local id come
from the identifier, never from the server's id.

:func:`apply_remote_task` applies what the EHR says of one task to the case, following the Task
state machine (:mod:`cm_fhir.domain.task_states`): a status the machine cannot reach from ours,
even through statuses in between (a poll sees only the latest version), leaves the case
unchanged (:attr:`Applied.outcome` ``illegal``); otherwise the status, the status reason, the
business status, the owner and the completion time follow the EHR. A referral's fulfilment Task
moves the referral's fulfilment status and business status (the performer stays the referral's).
An assessment's Task (identifier in the assessment system) moves the assessment
(:mod:`cm_fhir.sync.assessment_states`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from cm_fhir.domain.case import Case
from cm_fhir.domain.codes import PartyKind, TaskStatus
from cm_fhir.domain.common import Identifier, PartyRef
from cm_fhir.domain.task_states import TERMINAL_TASK_STATUSES, Verdict, judge_transition
from cm_fhir.errors import MappingError
from cm_fhir.fhir import datatypes as dt
from cm_fhir.fhir.ids import SEPARATOR
from cm_fhir.fhir.work import FULFILMENT
from cm_fhir.sync.assessment_states import apply_assessment
from cm_fhir.workflow.actions import revalidated

__all__ = ["Applied", "Outcome", "RemoteTask", "apply_remote_task", "read_remote_task"]

Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class RemoteTask:
    """What an EHR holds of one of our Tasks (no patient data beyond the ids it names)."""

    server_id: str
    version_id: str | None
    last_updated: datetime | None
    identifier: str  # system|value, the key of the sync state
    case_id: str
    local_id: str
    fulfilment: bool  # a referral's fulfilment Task, not a case task
    status: TaskStatus
    owner: PartyRef | None
    status_reason: str | None
    business_status: str | None
    ended_at: datetime | None
    assessment: bool = False  # an assessment's Task (identifier in the assessment system)
    summary: str | None = None  # an assessment Task's output "summary"

    @property
    def reference(self) -> str:
        """``Task/<id>/_history/<version>`` (or ``Task/<id>`` without a version)."""
        base = f"Task/{self.server_id}"
        return f"{base}/_history/{self.version_id}" if self.version_id else base


def _text(concept: Any) -> str | None:
    if not isinstance(concept, dict):
        return None
    if concept.get("text"):
        return str(concept["text"])
    for coding in concept.get("coding") or []:
        if isinstance(coding, dict) and (coding.get("display") or coding.get("code")):
            return str(coding.get("display") or coding.get("code"))
    return None


def _owner(data: Any, base_url: str) -> PartyRef | None:
    """The owner as a party: by type and identifier as we write it, or by the EHR's literal
    reference (``Practitioner/123``), kept as an identifier in the EHR's namespace."""
    if not isinstance(data, dict) or not data:
        return None
    literal = str(data.get("reference") or "")
    kind_name = data.get("type") or (literal.split("/")[-2] if literal.count("/") >= 1 else None)
    try:
        kind = PartyKind(str(kind_name))
    except ValueError as exc:
        raise MappingError("the owner's type is not a known party", path="Task.owner") from exc
    if data.get("identifier") or (data.get("display") and not literal):
        return dt.parse_reference({**data, "type": kind.value}, "Task.owner")
    if not literal:
        raise MappingError("the owner names no one", path="Task.owner")
    server_id = literal.rstrip("/").split("/")[-1]
    system = f"{base_url.rstrip('/')}/{kind.value}"
    ident = Identifier(system=system, value=server_id)
    return PartyRef(kind=kind, identifier=ident, display=data.get("display"))


def _instant(value: Any, path: str) -> datetime | None:
    return dt.parse_instant(value, path) if value else None


def _our_value(resource: Json, system: str | None) -> str | None:
    if system is None:
        return None
    return next(
        (
            str(i.get("value"))
            for i in resource.get("identifier") or []
            if isinstance(i, dict) and i.get("system") == system and i.get("value")
        ),
        None,
    )


def _summary(resource: Json) -> str | None:
    for output in resource.get("output") or []:
        if isinstance(output, dict) and (output.get("type") or {}).get("text") == "summary":
            value = output.get("valueString")
            return str(value) if isinstance(value, str) and value.strip() else None
    return None


def read_remote_task(
    resource: Json, task_system: str, base_url: str, assessment_system: str | None = None
) -> RemoteTask | None:
    """The Task as a :class:`RemoteTask`; None if it carries no identifier of ours (in the task
    system, or in ``assessment_system``: an assessment's Task).

    Raises :class:`~cm_fhir.errors.MappingError` (naming the element, not the value) when it is
    ours but unreadable: an unknown status, an owner that names no one, a bad instant.
    """
    if resource.get("resourceType") != "Task":
        raise MappingError("not a Task", path="resourceType")
    system, value = task_system, _our_value(resource, task_system)
    assessment = False
    if value is None:
        system, value = assessment_system or "", _our_value(resource, assessment_system)
        assessment = True
    if value is None:
        return None
    parts = value.split(SEPARATOR)
    fulfilment = not assessment and len(parts) == 3 and parts[2] == FULFILMENT
    if len(parts) != 2 and not fulfilment:
        return None
    if not resource.get("id"):
        raise MappingError("the Task has no id", path="Task.id")
    try:
        status = TaskStatus(str(resource.get("status")))
    except ValueError as exc:
        raise MappingError("unknown Task status", path="Task.status") from exc
    meta = resource.get("meta") or {}
    last_updated = _instant(meta.get("lastUpdated"), "Task.meta.lastUpdated")
    ended = _instant((resource.get("executionPeriod") or {}).get("end"), "Task.executionPeriod")
    if ended is None and status in TERMINAL_TASK_STATUSES:
        ended = _instant(resource.get("lastModified"), "Task.lastModified") or last_updated
    return RemoteTask(
        server_id=str(resource["id"]),
        version_id=str(meta["versionId"]) if meta.get("versionId") else None,
        last_updated=last_updated,
        identifier=f"{system}|{value}",
        case_id=parts[0],
        local_id=parts[1],
        fulfilment=fulfilment,
        status=status,
        owner=_owner(resource.get("owner"), base_url),
        status_reason=_text(resource.get("statusReason")),
        business_status=_text(resource.get("businessStatus")),
        ended_at=ended if status in TERMINAL_TASK_STATUSES else None,
        assessment=assessment,
        summary=_summary(resource) if assessment else None,
    )


class Outcome(StrEnum):
    """What one remote Task did to the case."""

    APPLIED = "applied"
    UNCHANGED = "unchanged"  # the case already says the same
    ILLEGAL = "illegal"  # the state machine forbids the move: ignored
    UNKNOWN = "unknown"  # the case has no such task or referral: ignored


@dataclass(frozen=True, slots=True)
class Applied:
    """The case after a remote Task, what changed (trace actions) and the move judged."""

    case: Case
    outcome: Outcome
    actions: tuple[str, ...] = ()
    moved: tuple[TaskStatus, TaskStatus] | None = None


def apply_remote_task(case: Case, remote: RemoteTask) -> Applied:
    """Apply what the EHR says of one task or referral fulfilment to ``case`` (see the module)."""
    if remote.fulfilment:
        return _apply_fulfilment(case, remote)
    if remote.assessment:
        return apply_assessment(case, remote)
    task = next((t for t in case.tasks if t.id == remote.local_id), None)
    if task is None:
        return Applied(case, Outcome.UNKNOWN)
    moved = (task.status, remote.status)
    verdict = judge_transition(task.status, remote.status, through=True)
    if verdict is Verdict.ILLEGAL:
        return Applied(case, Outcome.ILLEGAL, moved=moved)
    update: dict[str, object] = {}
    actions = []
    if verdict is Verdict.LEGAL:
        update["status"] = remote.status
        update["completed_at"] = remote.ended_at
        actions.append(f"status:{remote.status.value}")
    if remote.owner is not None and remote.owner != task.owner:
        update["owner"] = remote.owner
        actions.append("owner")
    for name, action in (("status_reason", "reason"), ("business_status", "business")):
        if getattr(remote, name) != getattr(task, name):
            update[name] = getattr(remote, name)
            actions.append(action)
    if not update:
        return Applied(case, Outcome.UNCHANGED, moved=moved)
    changed = task.model_copy(update=update)
    tasks = tuple(changed if t.id == task.id else t for t in case.tasks)
    return Applied(revalidated(case, tasks=tasks), Outcome.APPLIED, tuple(actions), moved)


def _apply_fulfilment(case: Case, remote: RemoteTask) -> Applied:
    referral = next((r for r in case.referrals if r.id == remote.local_id), None)
    if referral is None:
        return Applied(case, Outcome.UNKNOWN)
    moved = (referral.fulfilment_status, remote.status)
    verdict = judge_transition(referral.fulfilment_status, remote.status, through=True)
    if verdict is Verdict.ILLEGAL:
        return Applied(case, Outcome.ILLEGAL, moved=moved)
    update: dict[str, object] = {}
    actions = []
    if verdict is Verdict.LEGAL:
        update["fulfilment_status"] = remote.status
        actions.append(f"fulfilment:{remote.status.value}")
    if remote.business_status != referral.fulfilment_business_status:
        update["fulfilment_business_status"] = remote.business_status
        actions.append("business")
    if not update:
        return Applied(case, Outcome.UNCHANGED, moved=moved)
    changed = referral.model_copy(update=update)
    referrals = tuple(changed if r.id == referral.id else r for r in case.referrals)
    return Applied(revalidated(case, referrals=referrals), Outcome.APPLIED, tuple(actions), moved)
