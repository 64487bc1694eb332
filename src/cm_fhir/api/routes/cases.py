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
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from cm_fhir.api import case_changes as changes
from cm_fhir.api.deps import AuditDep, EngineDep, ReadPrincipal, WritePrincipal
from cm_fhir.api.errors import FHIR_JSON, error_response
from cm_fhir.domain import (
    CarePlan,
    Case,
    CaseStatus,
    DischargePlan,
    Goal,
    Programme,
    Referral,
    Task,
    TaskStatus,
)
from cm_fhir.errors import FhirConflictError, ResourceNotFound
from cm_fhir.fhir import WriteMode, map_case
from cm_fhir.mapping.registry import default_registry
from cm_fhir.store.case_repo import (
    CaseFilter,
    StoredCase,
    change_case,
    create_case,
    list_cases,
    read_case,
)

__all__ = ["router"]

router = APIRouter(prefix="/api/cases", tags=["cases"])

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
    programme: Programme
    opened: datetime
    closed: datetime | None
    version: int
    updated_at: datetime


class CasePage(BaseModel):
    items: list[CaseSummary]
    next: str | None = Field(None, description="The next page, or null")


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


def _server_error(request: Request, exc: FhirConflictError | ResourceNotFound) -> Response:
    message = str(exc).removeprefix(f"HTTP {exc.status}: ")
    return error_response(request, exc.status, message)


@router.post("", status_code=201, summary="Open a case (the body is a case document)")
async def post_case(
    request: Request, case: Case, engine: EngineDep, audit: AuditDep, _: WritePrincipal
) -> Response:
    now = datetime.now(UTC)
    async with engine.begin() as connection:
        stored = await connection.run_sync(create_case, case, default_registry(), now)
        await audit.record("create", "case", case.id, connection=connection)
    return _case_response(stored, 201)


@router.get("", summary="List and search cases", response_model=CasePage)
async def get_cases(
    request: Request,
    engine: EngineDep,
    audit: AuditDep,
    _: ReadPrincipal,
    patient: Annotated[str | None, Query(description="system|value, or value (any system)")] = None,
    status: CaseStatus | None = None,
    programme: Programme | None = None,
    team: str | None = None,
    owner: str | None = None,
    opened_from: Annotated[datetime | None, Query(description="Opened at or after")] = None,
    opened_to: Annotated[datetime | None, Query(description="Opened before")] = None,
    updated_since: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    after: Annotated[str | None, Query(description="Case id the page starts after")] = None,
) -> CasePage:
    patient_token: tuple[str | None, str] | None = None
    if patient:
        system, sep, value = patient.rpartition("|")
        patient_token = (system if sep else None, value)
    filters = CaseFilter(
        patient=patient_token,
        status=status.value if status else None,
        programme=programme.value if programme else None,
        team=team,
        owner=owner,
        opened_from=_utc(opened_from),
        opened_to=_utc(opened_to),
        updated_since=_utc(updated_since),
    )
    async with engine.connect() as connection:
        found, more = await connection.run_sync(list_cases, filters, limit=limit, after=after)
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
    next_url = None
    if more and items:
        next_url = str(request.url.include_query_params(after=items[-1].id))
    return CasePage(items=items, next=next_url)


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
    bundle = map_case(stored.case, default_registry(), validate=False, mode=mode)
    headers = {"ETag": _etag(stored.version)}
    return JSONResponse(bundle, headers=headers, media_type=FHIR_JSON)


async def _change(
    request: Request,
    engine: EngineDep,
    audit: AuditDep,
    case_id: str,
    change: Callable[[Case], Case],
    if_match: str | None,
    action: str,
    target: str | None = None,
) -> Response:
    now = datetime.now(UTC)
    try:
        async with engine.begin() as connection:
            stored = await connection.run_sync(
                change_case,
                case_id,
                change,
                default_registry(),
                expected_version=_version(if_match),
                now=now,
                action=action,
                target=target,
            )
            await audit.record("update", "case", case_id, connection=connection)
    except (FhirConflictError, ResourceNotFound) as exc:
        return _server_error(request, exc)
    return _case_response(stored)


@router.post("/{case_id}/status", summary="Move the case to another status")
async def post_status(
    request: Request,
    case_id: str,
    body: StatusChangeRequest,
    engine: EngineDep,
    audit: AuditDep,
    _: WritePrincipal,
    if_match: IfMatch = None,
) -> Response:
    at = body.at or datetime.now(UTC)
    if at.tzinfo is None:
        return error_response(request, 422, "'at' needs a timezone offset", fields=[("at", "")])
    change = changes.transition(body.status, at)
    return await _change(request, engine, audit, case_id, change, if_match, "case.status")


@router.put("/{case_id}/goals/{goal_id}", summary="Add or replace a SMART goal")
async def put_goal(
    request: Request,
    case_id: str,
    goal_id: str,
    goal: Goal,
    engine: EngineDep,
    audit: AuditDep,
    _: WritePrincipal,
    if_match: IfMatch = None,
) -> Response:
    if goal.id != goal_id:
        return error_response(request, 422, "the goal's id differs from the path")
    change = changes.put_goal(goal)
    return await _change(request, engine, audit, case_id, change, if_match, "goal.put", goal_id)


@router.put("/{case_id}/care-plan", summary="Set or replace the care plan")
async def put_care_plan(
    request: Request,
    case_id: str,
    plan: CarePlan,
    engine: EngineDep,
    audit: AuditDep,
    _: WritePrincipal,
    if_match: IfMatch = None,
) -> Response:
    change = changes.put_care_plan(plan)
    return await _change(request, engine, audit, case_id, change, if_match, "plan.put", plan.id)


@router.post("/{case_id}/care-plan/activities", summary="Add a task that carries out the plan")
async def post_activity(
    request: Request,
    case_id: str,
    task: Task,
    engine: EngineDep,
    audit: AuditDep,
    _: WritePrincipal,
    if_match: IfMatch = None,
) -> Response:
    change = changes.add_activity(task)
    return await _change(
        request, engine, audit, case_id, change, if_match, "plan.activity", task.id
    )


@router.put("/{case_id}/tasks/{task_id}", summary="Add or replace a task")
async def put_task(
    request: Request,
    case_id: str,
    task_id: str,
    task: Task,
    engine: EngineDep,
    audit: AuditDep,
    _: WritePrincipal,
    if_match: IfMatch = None,
) -> Response:
    if task.id != task_id:
        return error_response(request, 422, "the task's id differs from the path")
    change = changes.put_task(task)
    return await _change(request, engine, audit, case_id, change, if_match, "task.put", task_id)


@router.post("/{case_id}/tasks/{task_id}/status", summary="Move a task to another status")
async def post_task_status(
    request: Request,
    case_id: str,
    task_id: str,
    body: TaskStatusRequest,
    engine: EngineDep,
    audit: AuditDep,
    _: WritePrincipal,
    if_match: IfMatch = None,
) -> Response:
    change = changes.task_status(task_id, body.status, body.business_status)
    return await _change(request, engine, audit, case_id, change, if_match, "task.status", task_id)


@router.put("/{case_id}/referrals/{referral_id}", summary="Add or replace a referral")
async def put_referral(
    request: Request,
    case_id: str,
    referral_id: str,
    referral: Referral,
    engine: EngineDep,
    audit: AuditDep,
    _: WritePrincipal,
    if_match: IfMatch = None,
) -> Response:
    if referral.id != referral_id:
        return error_response(request, 422, "the referral's id differs from the path")
    change = changes.put_referral(referral)
    return await _change(
        request, engine, audit, case_id, change, if_match, "referral.put", referral_id
    )


@router.put("/{case_id}/discharge-plan", summary="Set or replace the discharge plan")
async def put_discharge_plan(
    request: Request,
    case_id: str,
    plan: DischargePlan,
    engine: EngineDep,
    audit: AuditDep,
    _: WritePrincipal,
    if_match: IfMatch = None,
) -> Response:
    change = changes.put_discharge_plan(plan)
    return await _change(
        request, engine, audit, case_id, change, if_match, "discharge.put", plan.id
    )
