"""``/api/cases``: create, read, list and change cases. I/O (database, through the case repository).

Every change runs in one transaction that updates the ``cases`` row, the case's ``fhir_resources``,
the outbox, the trace and the worker's patient state together, and writes the audit row
(:mod:`cm_fhir.store.case_repo`). Responses carry ``ETag: W/"<version>"``; a change sent with
``If-Match`` answers 412 when the case has moved on. Domain refusals answer 409 (a forbidden
transition, work on a closed case) or 422 (a change that breaks the case's invariants), as JSON
with a message that names ids and fields, never patient values. Scopes: ``read`` and ``write``.
``GET /api/cases/{id}/fhir`` is the mapper's transaction Bundle, the one the outbox sends.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from cm_fhir.api import case_changes as changes
from cm_fhir.api.deps import (
    AuditDep,
    Auditor,
    EngineDep,
    ReadPrincipal,
    WritePrincipal,
    get_context,
    get_registry,
    get_settings,
)
from cm_fhir.api.errors import FHIR_JSON, error_response
from cm_fhir.api.paging import CursorQuery, PageLinks, RetiredPaging, decode_cursor, links
from cm_fhir.domain import (
    CarePlan,
    Case,
    CaseStatus,
    DischargePlan,
    Goal,
    ProgrammeCode,
    Referral,
    Task,
    TaskStatus,
)
from cm_fhir.errors import RecordConflict, RecordNotFound
from cm_fhir.fhir import WriteMode, map_case
from cm_fhir.store.case_repo import (
    CaseFilter,
    StoredCase,
    change_case,
    create_case,
    list_cases,
    read_case,
)
from cm_fhir.sync.routing import outbox_routes
from cm_fhir.workflow.cadence import with_contacts

__all__ = ["router"]

router = APIRouter(prefix="/api/cases", tags=["cases"])

_CURSOR = "cases"

IfMatch = Annotated[str | None, Header(description='W/"<version>" from a previous ETag')]


class StatusChangeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: CaseStatus
    at: datetime | None = Field(None, description="When; now if absent (timezone required)")


class TaskStatusRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: TaskStatus
    business_status: str | None = Field(None, min_length=1)


class CaseSummary(BaseModel):
    id: str
    status: CaseStatus
    programme: ProgrammeCode
    opened: datetime
    closed: datetime | None
    version: int
    updated_at: datetime


class CasePage(PageLinks):
    """A page of cases in case-id order (paged as every list: :mod:`cm_fhir.api.paging`)."""

    items: list[CaseSummary]


def _etag(version: int) -> str:
    return f'W/"{version}"'


def _version(if_match: str | None) -> int | None:
    """The version an If-Match names; -1 (never a version) if it names none we could have sent."""
    if if_match is None or if_match.strip() == "*":
        return None
    text = if_match.strip().removeprefix("W/").strip('"')
    return int(text) if text.isdigit() else -1


def _case_response(stored: StoredCase, status: int = 200) -> Response:
    headers = {"ETag": _etag(stored.version)}
    if status == 201:
        headers["Location"] = f"/api/cases/{stored.case.id}"
    return Response(stored.case.model_dump_json(), status, headers, media_type="application/json")


def _record_error(request: Request, exc: RecordConflict | RecordNotFound) -> Response:
    return error_response(request, exc.status, str(exc))


@router.post("", status_code=201, summary="Open a case (the body is a case document)")
async def post_case(
    request: Request, case: Case, engine: EngineDep, audit: AuditDep, _: WritePrincipal
) -> Response:
    now = datetime.now(UTC)
    case = with_contacts(case, get_context(request).programmes, now)
    async with engine.begin() as connection:
        stored = await connection.run_sync(
            lambda c: create_case(
                c, case, get_registry(request), now, routes=outbox_routes(get_settings(request))
            )
        )
        await audit.record("create", "case", case.id, connection=connection)
    return _case_response(stored, 201)


@router.get(
    "", summary="List and search cases", response_model=CasePage, dependencies=[RetiredPaging]
)
async def get_cases(
    request: Request,
    engine: EngineDep,
    audit: AuditDep,
    _: ReadPrincipal,
    patient: Annotated[str | None, Query(description="system|value, or value (any system)")] = None,
    status: CaseStatus | None = None,
    programme: ProgrammeCode | None = None,
    team: str | None = None,
    owner: str | None = None,
    opened_from: Annotated[datetime | None, Query(description="Opened at or after")] = None,
    opened_to: Annotated[datetime | None, Query(description="Opened before")] = None,
    updated_since: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: CursorQuery = None,
) -> CasePage:
    start = decode_cursor(_CURSOR, cursor, (str,))
    patient_token: tuple[str | None, str] | None = None
    if patient:
        system, sep, value = patient.rpartition("|")
        patient_token = (system if sep else None, value)
    filters = CaseFilter(
        patient=patient_token,
        status=status.value if status else None,
        programme=programme,
        team=team,
        owner=owner,
        opened_from=_utc(opened_from),
        opened_to=_utc(opened_to),
        updated_since=_utc(updated_since),
    )
    async with engine.connect() as connection:
        found, more = await connection.run_sync(
            lambda c: list_cases(c, filters, limit=limit, after=str(start[0]) if start else None)
        )
    audited: list[str | None] = [s.case.id for s in found] or [None]
    await audit.record_many("search", "case", audited)
    items = [
        CaseSummary(
            id=s.case.id,
            status=s.case.status,
            programme=s.case.programme,
            opened=s.case.opened,
            closed=s.case.closed,
            version=s.version,
            updated_at=s.updated_at,
        )
        for s in found
    ]
    paged = links(request, _CURSOR, (items[-1].id,) if more and items else None)
    return CasePage(items=items, next=paged.next, next_cursor=paged.next_cursor)


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


async def _stored_or_404(engine: Any, case_id: str) -> StoredCase | None:
    async with engine.connect() as connection:
        stored: StoredCase | None = await connection.run_sync(read_case, case_id)
    return stored


@router.get("/{case_id}", summary="Read a case (ETag: its version)")
async def get_case(
    request: Request, case_id: str, engine: EngineDep, audit: AuditDep, _: ReadPrincipal
) -> Response:
    stored = await _stored_or_404(engine, case_id)
    if stored is None:
        return error_response(request, 404, f"case '{case_id}' does not exist")
    await audit.record("read", "case", case_id)
    return _case_response(stored)


@router.get("/{case_id}/fhir", summary="The case as the mapper's FHIR R4 transaction Bundle")
async def get_case_fhir(
    request: Request,
    case_id: str,
    engine: EngineDep,
    audit: AuditDep,
    _: ReadPrincipal,
    mode: WriteMode = WriteMode.CONDITIONAL_UPDATE,
) -> Response:
    stored = await _stored_or_404(engine, case_id)
    if stored is None:
        return error_response(request, 404, f"case '{case_id}' does not exist")
    await audit.record("read", "case", case_id)
    bundle = map_case(stored.case, get_registry(request), validate=False, mode=mode)
    headers = {"ETag": _etag(stored.version)}
    return JSONResponse(bundle, headers=headers, media_type=FHIR_JSON)


@dataclass(frozen=True, slots=True)
class CaseChange:
    """What every change route shares: the case, its If-Match, the database and the audit trail."""

    request: Request
    engine: AsyncEngine
    audit: Auditor
    case_id: str
    if_match: str | None

    async def apply(
        self,
        change: Callable[[Case], Case],
        action: str,
        target: str | None = None,
        *,
        then: Callable[[Connection, StoredCase], None] | None = None,
    ) -> Response:
        """Run ``change`` on the case in one transaction (see :func:`change_case`), then add the
        recurring contacts the case's models ask for (:func:`with_contacts`); ``then`` runs in
        the same transaction on the stored result (a message to enqueue with it, say)."""
        now = datetime.now(UTC)
        programmes = get_context(self.request).programmes

        def changed(case: Case) -> Case:
            return with_contacts(change(case), programmes, now)

        try:
            async with self.engine.begin() as connection:
                stored = await connection.run_sync(
                    change_case,
                    self.case_id,
                    changed,
                    get_registry(self.request),
                    expected_version=_version(self.if_match),
                    now=now,
                    action=action,
                    target=target,
                    routes=outbox_routes(get_settings(self.request)),
                )
                if then is not None:
                    await connection.run_sync(then, stored)
                await self.audit.record("update", "case", self.case_id, connection=connection)
        except (RecordConflict, RecordNotFound) as exc:
            return _record_error(self.request, exc)
        return _case_response(stored)

    def refuse(self, message: str) -> Response:
        return error_response(self.request, 422, message)


async def _case_change(
    request: Request,
    case_id: str,
    engine: EngineDep,
    audit: AuditDep,
    _: WritePrincipal,
    if_match: IfMatch = None,
) -> CaseChange:
    return CaseChange(request, engine, audit, case_id, if_match)


ChangeDep = Annotated[CaseChange, Depends(_case_change)]


@router.post("/{case_id}/status", summary="Move the case to another status")
async def post_status(body: StatusChangeRequest, write: ChangeDep) -> Response:
    at = body.at or datetime.now(UTC)
    if at.tzinfo is None:
        return error_response(
            write.request, 422, "'at' needs a timezone offset", fields=[("at", "")]
        )
    return await write.apply(changes.transition(body.status, at), "case.status")


@router.put("/{case_id}/goals/{goal_id}", summary="Add or replace a SMART goal")
async def put_goal(goal_id: str, goal: Goal, write: ChangeDep) -> Response:
    if goal.id != goal_id:
        return write.refuse("the goal's id differs from the path")
    return await write.apply(changes.put_goal(goal), "goal.put", goal_id)


@router.put("/{case_id}/care-plan", summary="Set or replace the care plan")
async def put_care_plan(plan: CarePlan, write: ChangeDep) -> Response:
    return await write.apply(changes.put_care_plan(plan), "plan.put", plan.id)


@router.post("/{case_id}/care-plan/activities", summary="Add a task that carries out the plan")
async def post_activity(task: Task, write: ChangeDep) -> Response:
    return await write.apply(changes.add_activity(task), "plan.activity", task.id)


@router.put("/{case_id}/tasks/{task_id}", summary="Add or replace a task")
async def put_task(task_id: str, task: Task, write: ChangeDep) -> Response:
    if task.id != task_id:
        return write.refuse("the task's id differs from the path")
    return await write.apply(changes.put_task(task), "task.put", task_id)


@router.post("/{case_id}/tasks/{task_id}/status", summary="Move a task to another status")
async def post_task_status(task_id: str, body: TaskStatusRequest, write: ChangeDep) -> Response:
    change = changes.task_status(task_id, body.status, body.business_status)
    return await write.apply(change, "task.status", task_id)


@router.put("/{case_id}/referrals/{referral_id}", summary="Add or replace a referral")
async def put_referral(referral_id: str, referral: Referral, write: ChangeDep) -> Response:
    if referral.id != referral_id:
        return write.refuse("the referral's id differs from the path")
    return await write.apply(changes.put_referral(referral), "referral.put", referral_id)


@router.put("/{case_id}/discharge-plan", summary="Set or replace the discharge plan")
async def put_discharge_plan(plan: DischargePlan, write: ChangeDep) -> Response:
    return await write.apply(changes.put_discharge_plan(plan), "discharge.put", plan.id)
