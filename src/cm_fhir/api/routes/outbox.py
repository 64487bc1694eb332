"""The outbox over HTTP: pending, sent and failed FHIR writes. I/O (database).

``GET /api/outbox`` counts rows per endpoint and state with the oldest row of each group;
``GET /api/outbox/items`` lists rows (newest first, paged by ``cursor``) by state, endpoint or case,
without the Bundle bodies but with the endpoint's last error and OperationOutcome; every row
listed is audited (``search``, ``outbox``, its id). ``GET /api/outbox/endpoints`` describes each
configured FHIR endpoint (never its credentials) with its circuit breaker's state and the
delivery counts of the ``sync`` role when this process runs it. The counts hold no patient data
and are not audited. ``POST /api/outbox/resend`` (``write`` scope, audited) makes Bundles pending
again by the rules of ``cm-fhir outbox resend``, through the same store function.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select

from cm_fhir.api.deps import AuditDep, ContextDep, EngineDep, ReadPrincipal, WritePrincipal
from cm_fhir.api.paging import CursorQuery, RetiredPaging, decode_cursor, links
from cm_fhir.api.routes.messages import outbox_columns
from cm_fhir.api.schemas import OutboxCount, OutboxItem, OutboxPage, OutboxSummary
from cm_fhir.store.case_tables import outbox
from cm_fhir.store.outbox import DEFAULT_ENDPOINT, mark_for_resend

__all__ = ["DEFAULT_ENDPOINT", "router"]

router = APIRouter(prefix="/api/outbox", tags=["outbox"])
OutboxStateName = Literal["pending", "sent", "failed", "superseded"]
_STATES = ("pending", "sent", "failed", "superseded")
_CURSOR = "outbox"


class EndpointDelivery(BaseModel):
    """What the ``sync`` role of this process has done for one endpoint."""

    breaker: str = Field(description="The circuit breaker: closed, open or half-open.")
    requests: int = Field(description="HTTP requests made to the endpoint.")
    sent: int
    failed: int
    retried: int
    superseded: int
    conflicts: int = Field(description="412s answered by re-reading and re-applying our fields.")


class EndpointInfo(BaseModel):
    """One configured FHIR endpoint (its credentials are never shown)."""

    name: str
    kind: str = Field("ehr", description="ehr (case Bundles) or payer (messages)")
    base_url: str
    auth: str
    mode: str
    resource_types: list[str]
    programmes: list[str]
    rate_limit: float
    counts: dict[str, int] = Field(description="Outbox rows for this endpoint by state.")
    delivery: EndpointDelivery | None = Field(
        None, description="Null when the sync role does not run in this process."
    )


async def _counts(engine: Any) -> dict[tuple[str, str], Any]:
    query = select(
        outbox.c.endpoint,
        outbox.c.state,
        func.count().label("n"),
        func.min(outbox.c.created_at).label("oldest"),
    ).group_by(outbox.c.endpoint, outbox.c.state)
    async with engine.connect() as connection:
        rows = (await connection.execute(query)).all()
    return {(str(row.endpoint), str(row.state)): row for row in rows}


@router.get("", summary="Outbox counts per endpoint and state")
async def outbox_summary(context: ContextDep, _: ReadPrincipal) -> OutboxSummary:
    found = await _counts(context.engine)
    configured = [e.name for e in context.settings.endpoints] or [DEFAULT_ENDPOINT]
    endpoints = sorted(set(configured) | {endpoint for endpoint, _ in found})
    counts = [
        OutboxCount(
            endpoint=endpoint,
            state=state,
            count=int(found[endpoint, state].n) if (endpoint, state) in found else 0,
            oldest=found[endpoint, state].oldest if (endpoint, state) in found else None,
        )
        for endpoint in endpoints
        for state in _STATES
    ]
    return OutboxSummary(counts=counts)


@router.get("/endpoints", summary="The FHIR endpoints, their circuit breakers and deliveries")
async def outbox_endpoints(context: ContextDep, _: ReadPrincipal) -> list[EndpointInfo]:
    found = await _counts(context.engine)
    running = {s.name: s for s in context.sync.status()} if context.sync is not None else {}
    out = []
    settings = context.settings
    kinds = [("ehr", e) for e in settings.endpoints] + [
        ("payer", e) for e in settings.payer_endpoints
    ]
    for kind, e in kinds:
        status = running.get(e.name)
        delivery = None
        if status is not None:
            st = status.stats
            delivery = EndpointDelivery(
                breaker=status.breaker,
                requests=status.requests,
                sent=st.sent,
                failed=st.failed,
                retried=st.retried,
                superseded=st.superseded,
                conflicts=st.conflicts,
            )
        out.append(
            EndpointInfo(
                name=e.name,
                kind=kind,
                base_url=e.base_url,
                auth=e.auth.kind,
                mode=e.mode,
                resource_types=list(e.resource_types),
                programmes=list(e.programmes),
                rate_limit=e.rate_limit,
                counts={s: int(found[e.name, s].n) for s in _STATES if (e.name, s) in found},
                delivery=delivery,
            )
        )
    return out


@router.get(
    "/items",
    summary="Outbox rows (newest first), without the Bundle bodies",
    dependencies=[RetiredPaging],
)
async def outbox_items(
    request: Request,
    engine: EngineDep,
    audit: AuditDep,
    _: ReadPrincipal,
    state: Annotated[OutboxStateName | None, Query()] = None,
    endpoint: Annotated[str | None, Query(max_length=64)] = None,
    case_id: Annotated[str | None, Query(max_length=64)] = None,
    cursor: CursorQuery = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> OutboxPage:
    start = decode_cursor(_CURSOR, cursor, (int,))
    query = (
        select(*outbox_columns())  # type: ignore[call-overload]
        .order_by(outbox.c.id.desc())
        .limit(limit + 1)
    )
    if state is not None:
        query = query.where(outbox.c.state == state)
    if endpoint is not None:
        query = query.where(outbox.c.endpoint == endpoint)
    if case_id is not None:
        query = query.where(outbox.c.case_id == case_id)
    if start is not None:
        query = query.where(outbox.c.id < start[0])
    async with engine.connect() as connection:
        rows = (await connection.execute(query)).mappings().all()
    items = [OutboxItem.model_validate(dict(row)) for row in rows[:limit]]
    await audit.record_many("search", "outbox", [str(i.id) for i in items] or [None])
    paged = links(request, _CURSOR, (items[-1].id,) if len(rows) > limit else None)
    return OutboxPage(items=items, next=paged.next, next_cursor=paged.next_cursor)


class ResendRequest(BaseModel):
    """Which outbox rows to send again: the rules of ``cm-fhir outbox resend``."""

    model_config = ConfigDict(extra="forbid")
    all: bool = Field(False, description="Every matching case, not only those whose write failed")
    endpoint: str | None = Field(None, min_length=1, max_length=64, description="Only this one")
    case_id: str | None = Field(None, min_length=1, max_length=64, description="Only this case")
    since: datetime | None = Field(None, description="Only Bundles enqueued since")


class ResendResult(BaseModel):
    marked: int = Field(description="Rows made pending again (the sync role delivers them)")


@router.post("/resend", summary="Send outbox Bundles again (failed ones; every case with all)")
async def resend(
    body: ResendRequest, context: ContextDep, audit: AuditDep, _: WritePrincipal
) -> ResendResult:
    """Mark the newest row of each matching case and endpoint ``pending``, due now.

    The rules are the CLI's (``cm-fhir outbox resend --no-send``): only the newest Bundle of a
    case is sent, so an older snapshot never overwrites a newer one; without ``all`` only the
    cases whose newest write failed. A running ``sync`` role delivers them. Audited (``resend``,
    ``outbox``, the case id when one is named).
    """
    known = [e.name for e in context.settings.endpoints] or [DEFAULT_ENDPOINT]
    if body.endpoint is not None and body.endpoint not in known:
        raise HTTPException(422, f"no endpoint named {body.endpoint!r} in the settings")
    since = body.since
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    now = datetime.now(UTC)
    async with context.engine.begin() as connection:
        marked: int = await connection.run_sync(
            lambda c: mark_for_resend(
                c,
                now,
                every_state=body.all,
                endpoint=body.endpoint,
                case_id=body.case_id,
                since=since,
            )
        )
        await audit.record("resend", "outbox", body.case_id, connection=connection)
    return ResendResult(marked=marked)
