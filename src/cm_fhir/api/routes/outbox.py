"""The outbox over HTTP: pending, sent and failed FHIR writes. I/O (database).

``GET /api/outbox`` counts rows per endpoint and state with the oldest row of each group;
``GET /api/outbox/items`` lists rows (newest first, keyset cursor) by state or case, without the
Bundle bodies; every row listed is audited (``search``, ``outbox``, its id). The counts hold no
patient data and are not audited. The outbox has one target FHIR endpoint today, reported as
``default``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from sqlalchemy import func, select

from cm_fhir.api.deps import AuditDep, EngineDep, ReadPrincipal
from cm_fhir.api.routes.messages import outbox_columns
from cm_fhir.api.schemas import OutboxCount, OutboxItem, OutboxPage, OutboxSummary
from cm_fhir.store.case_tables import outbox

__all__ = ["DEFAULT_ENDPOINT", "router"]

router = APIRouter(prefix="/api/outbox", tags=["outbox"])
DEFAULT_ENDPOINT = "default"
OutboxStateName = Literal["pending", "sent", "failed"]


@router.get("", summary="Outbox counts per endpoint and state")
async def outbox_summary(engine: EngineDep, _: ReadPrincipal) -> OutboxSummary:
    query = select(
        outbox.c.state, func.count().label("n"), func.min(outbox.c.created_at).label("oldest")
    ).group_by(outbox.c.state)
    async with engine.connect() as connection:
        rows = (await connection.execute(query)).all()
    found = {str(row.state): row for row in rows}
    counts = [
        OutboxCount(
            endpoint=DEFAULT_ENDPOINT,
            state=state,
            count=int(found[state].n) if state in found else 0,
            oldest=found[state].oldest if state in found else None,
        )
        for state in ("pending", "sent", "failed")
    ]
    return OutboxSummary(counts=counts)


@router.get("/items", summary="Outbox rows (newest first), without the Bundle bodies")
async def outbox_items(
    request: Request,
    engine: EngineDep,
    audit: AuditDep,
    _: ReadPrincipal,
    state: Annotated[OutboxStateName | None, Query()] = None,
    case_id: Annotated[str | None, Query(max_length=64)] = None,
    before: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> OutboxPage:
    query = (
        select(*outbox_columns())  # type: ignore[call-overload]
        .order_by(outbox.c.id.desc())
        .limit(limit + 1)
    )
    if state is not None:
        query = query.where(outbox.c.state == state)
    if case_id is not None:
        query = query.where(outbox.c.case_id == case_id)
    if before is not None:
        query = query.where(outbox.c.id < before)
    async with engine.connect() as connection:
        rows = (await connection.execute(query)).mappings().all()
    items = [OutboxItem.model_validate(dict(row)) for row in rows[:limit]]
    await audit.record_many("search", "outbox", [str(i.id) for i in items] or [None])
    cursor = items[-1].id if len(rows) > limit else None
    following = str(request.url.include_query_params(before=cursor)) if cursor else None
    return OutboxPage(items=items, next=following, next_before=cursor)
