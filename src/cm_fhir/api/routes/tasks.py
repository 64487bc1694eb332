"""``GET /api/tasks``: the case managers' tasks across cases, by owner, team, status and due date.
I/O (database).

Tasks live inside their case (the case document is the unit of change), so the search reads the
cases that the case-level filters (``team``, ``programme``, ``patient``) select, then keeps the
tasks that match the task-level ones (``owner``, ``status``, ``due_before``, ``due_after``,
``overdue``). Tasks come in due-date order (then case id, then task id); paging is the cases
API's (every list's: :mod:`cm_fhir.api.paging`): ``limit`` and an opaque ``cursor``. A
task is changed through its case (``/api/cases/{case_id}/tasks/...``, with the case's ETag), so
each item carries the case's version. Every case a search returns tasks of is audited
(``search``, ``case``, its id); the filters, which may hold an identifier, are never recorded.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy.engine import Connection

from cm_fhir.api.deps import AuditDep, EngineDep, ReadPrincipal
from cm_fhir.api.paging import CursorQuery, PageLinks, RetiredPaging, decode_cursor, links
from cm_fhir.domain import CaseStatus, ProgrammeCode, Task, TaskStatus
from cm_fhir.domain.common import PartyRef
from cm_fhir.store.case_repo import CaseFilter, StoredCase, list_cases

__all__ = ["TaskFilter", "TaskItem", "TaskPage", "matching_tasks", "router"]

router = APIRouter(prefix="/api/tasks", tags=["tasks"])

_SCAN_PAGE = 200
_CURSOR = "tasks"


class TaskItem(BaseModel):
    """One task with the case it belongs to (change it through the case, with its ETag)."""

    case_id: str
    case_version: int
    case_status: CaseStatus
    programme: ProgrammeCode
    team: str | None = None
    id: str
    kind: str
    description: str
    status: TaskStatus
    business_status: str | None = None
    priority: str
    owner: str = Field(description="The owner's display name, else its identifier value")
    due: datetime
    overdue: bool
    notes: list[str] = Field(default_factory=list)


class TaskPage(PageLinks):
    """A page of tasks in due-date order (paged as every list: :mod:`cm_fhir.api.paging`)."""

    items: list[TaskItem]


@dataclass(frozen=True, slots=True)
class TaskFilter:
    """Task-level filters; None means "any"."""

    owner: str | None = None
    statuses: frozenset[TaskStatus] | None = None
    due_before: datetime | None = None
    due_after: datetime | None = None
    overdue: bool | None = None


def party_name(party: PartyRef) -> str:
    """How a party is shown and matched: its display name, else its identifier value."""
    if party.display:
        return party.display
    return party.identifier.value if party.identifier is not None else ""


def _owned_by(task: Task, owner: str) -> bool:
    wanted = owner.casefold()
    names = {party_name(task.owner).casefold()}
    if task.owner.identifier is not None:
        names.add(task.owner.identifier.value.casefold())
    return wanted in names


def _matches(task: Task, f: TaskFilter, now: datetime) -> bool:
    if f.owner is not None and not _owned_by(task, f.owner):
        return False
    if f.statuses is not None and task.status not in f.statuses:
        return False
    if f.due_before is not None and not task.due < f.due_before:
        return False
    if f.due_after is not None and not task.due >= f.due_after:
        return False
    return f.overdue is None or task.is_overdue(now) == f.overdue


def _item(stored: StoredCase, team: str | None, task: Task, now: datetime) -> TaskItem:
    case = stored.case
    return TaskItem(
        case_id=case.id,
        case_version=stored.version,
        case_status=case.status,
        programme=case.programme,
        team=team,
        id=task.id,
        kind=task.kind,
        description=task.description,
        status=task.status,
        business_status=task.business_status,
        priority=task.priority.value,
        owner=party_name(task.owner),
        due=task.due.astimezone(UTC),
        overdue=task.is_overdue(now),
        notes=list(task.notes),
    )


def _sort_key(item: TaskItem) -> tuple[str, str, str]:
    return (item.due.isoformat(), item.case_id, item.id)


def matching_tasks(
    connection: Connection, cases: CaseFilter, tasks: TaskFilter, now: datetime
) -> list[TaskItem]:
    """Every task of the selected cases that matches ``tasks``, in due-date order."""
    found: list[TaskItem] = []
    after: str | None = None
    while True:
        page, more = list_cases(connection, cases, limit=_SCAN_PAGE, after=after)
        for stored in page:
            team = stored.case.care_team.id if stored.case.care_team is not None else None
            found.extend(
                _item(stored, team, task, now)
                for task in stored.case.tasks
                if _matches(task, tasks, now)
            )
        if not more or not page:
            break
        after = page[-1].case.id
    return sorted(found, key=_sort_key)


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _statuses(values: Iterable[TaskStatus] | None) -> frozenset[TaskStatus] | None:
    chosen = frozenset(values or ())
    return chosen or None


@router.get(
    "",
    summary="Search tasks across cases (due-date order)",
    response_model=TaskPage,
    dependencies=[RetiredPaging],
)
async def get_tasks(
    request: Request,
    engine: EngineDep,
    audit: AuditDep,
    _: ReadPrincipal,
    owner: Annotated[
        str | None, Query(max_length=255, description="Owner display name or identifier value")
    ] = None,
    team: Annotated[str | None, Query(max_length=64, description="The case's team")] = None,
    programme: ProgrammeCode | None = None,
    status: Annotated[
        list[TaskStatus] | None, Query(description="Task status (repeat for several)")
    ] = None,
    due_before: Annotated[datetime | None, Query(description="Due before")] = None,
    due_after: Annotated[datetime | None, Query(description="Due at or after")] = None,
    overdue: Annotated[bool | None, Query(description="Open and past due (true) or not")] = None,
    patient: Annotated[
        str | None, Query(max_length=255, description="system|value, or value (any system)")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: CursorQuery = None,
) -> TaskPage:
    start = decode_cursor(_CURSOR, cursor, (str, str, str))
    patient_token: tuple[str | None, str] | None = None
    if patient:
        system, sep, value = patient.rpartition("|")
        patient_token = (system if sep else None, value)
    case_filter = CaseFilter(patient=patient_token, team=team, programme=programme)
    task_filter = TaskFilter(
        owner=owner,
        statuses=_statuses(status),
        due_before=_utc(due_before),
        due_after=_utc(due_after),
        overdue=overdue,
    )
    now = datetime.now(UTC)
    async with engine.connect() as connection:
        found = await connection.run_sync(matching_tasks, case_filter, task_filter, now)
    if start is not None:
        found = [item for item in found if _sort_key(item) > start]
    items = found[:limit]
    cases_listed: list[str | None] = list(dict.fromkeys(i.case_id for i in items))
    await audit.record_many("search", "case", cases_listed or [None])
    paged = links(request, _CURSOR, _sort_key(items[-1]) if len(found) > limit else None)
    return TaskPage(items=items, next=paged.next, next_cursor=paged.next_cursor)
