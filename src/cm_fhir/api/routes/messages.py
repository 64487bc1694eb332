"""The inbox over HTTP: list, inspect, ingest, dead letters and replay. I/O (database).

``GET /api/messages`` filters by state, event, control id, sender, patient, date, ACK code and
error text, newest first, paged by ``cursor`` (:mod:`cm_fhir.api.paging`).
``GET /api/messages/{id}`` adds the ACK, the workflow trace and the FHIR writes the message
caused (and, with ``include_raw=true``, the message itself: audited).
``POST /api/hl7v2`` takes one message (or a batch) as the body and answers with the ACK, through
the listener's own persist-before-ACK path. Replays go through the worker's queue functions, which
put rows back to ``received`` and release rows waiting behind a dead letter. Every row a list or
search returns is audited (``search``, the row id; a search that finds nothing, once, without an
id): the filters, which may hold an MRN, are never recorded.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import Response
from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from cm_fhir.api.deps import (
    AuditDep,
    Auditor,
    ContextDep,
    EngineDep,
    ReadPrincipal,
    WritePrincipal,
)
from cm_fhir.api.paging import CursorQuery, RetiredPaging, decode_cursor, links
from cm_fhir.api.schemas import (
    MessageDetail,
    MessagePage,
    MessageSummary,
    OutboxItem,
    ReplayRequest,
    ReplayResult,
    TraceItem,
)
from cm_fhir.mllp_client import read_ack
from cm_fhir.store import queue
from cm_fhir.store.case_tables import outbox, trace
from cm_fhir.store.tables import InboxFormat, InboxState, inbox_messages

__all__ = ["router"]

router = APIRouter(prefix="/api", tags=["messages"])
_t = inbox_messages
HL7_MEDIA_TYPE = "x-application/hl7-v2+er7"
_SUMMARY_COLUMNS = [c for c in _t.columns if c.name not in ("raw", "ack_bytes")]
_MAX_ID = 2**63 - 1
_CURSOR = "messages"


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


MessageId = Annotated[int, Path(ge=1, le=_MAX_ID, description="Inbox row id.")]


@router.get("/messages", summary="List inbox messages (newest first)", dependencies=[RetiredPaging])
async def list_messages(
    request: Request,
    engine: EngineDep,
    audit: AuditDep,
    _: ReadPrincipal,
    state: Annotated[InboxState | None, Query(description="Row state.")] = None,
    event: Annotated[
        str | None, Query(max_length=16, description="Trigger event, e.g. A01.")
    ] = None,
    message_type: Annotated[
        str | None, Query(max_length=16, description="e.g. ADT, NOTIFICATION, CLAIM.")
    ] = None,
    format: Annotated[
        InboxFormat | None, Query(description="hl7v2, or fhir (FHIR message Bundles).")
    ] = None,
    control_id: Annotated[
        str | None, Query(max_length=199, description="MSH-10, the message control id.")
    ] = None,
    sender: Annotated[
        str | None,
        Query(max_length=255, description="MSH-3 sending application (or MSH-4 facility)."),
    ] = None,
    patient: Annotated[
        str | None,
        Query(max_length=255, description="Patient key `id^authority`, or the id alone."),
    ] = None,
    received_from: Annotated[datetime | None, Query(description="Received at or after.")] = None,
    received_to: Annotated[datetime | None, Query(description="Received before.")] = None,
    ack_code: Annotated[str | None, Query(pattern="^(AA|AE|AR|CA|CE|CR)$")] = None,
    error: Annotated[
        str | None, Query(max_length=200, description="Text in the failure reason, e.g. PID-3.")
    ] = None,
    has_error: Annotated[
        bool | None, Query(description="Only rows with (true) or without (false) a reason.")
    ] = None,
    cursor: CursorQuery = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> MessagePage:
    where: list[Any] = []
    if state is not None:
        where.append(_t.c.state == state.value)
    if event is not None:
        where.append(_t.c.trigger_event == event.upper())
    if message_type is not None:
        where.append(_t.c.message_type == message_type.upper())
    if format is not None:
        where.append(_t.c.format == format.value)
    if control_id is not None:
        where.append(_t.c.control_id == control_id)
    if sender is not None:
        where.append(or_(_t.c.sending_application == sender, _t.c.sending_facility == sender))
    if patient is not None:
        if "^" in patient:
            where.append(_t.c.patient_key == patient)
        else:
            where.append(_t.c.patient_key.startswith(patient + "^", autoescape=True))
    if received_from is not None:
        where.append(_t.c.received_at >= _utc(received_from))
    if received_to is not None:
        where.append(_t.c.received_at < _utc(received_to))
    if ack_code is not None:
        where.append(_t.c.ack_code == ack_code)
    if error is not None:
        where.append(_t.c.reason.contains(error, autoescape=True))
    if has_error is not None:
        where.append(_t.c.reason.is_not(None) if has_error else _t.c.reason.is_(None))
    return await _page(request, engine, audit, where, cursor, limit)


@router.get(
    "/dead-letters", summary="Dead-lettered messages (newest first)", dependencies=[RetiredPaging]
)
async def list_dead_letters(
    request: Request,
    engine: EngineDep,
    audit: AuditDep,
    _: ReadPrincipal,
    cursor: CursorQuery = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> MessagePage:
    dead = _t.c.state == InboxState.DEAD_LETTERED.value
    return await _page(request, engine, audit, [dead], cursor, limit)


async def _page(
    request: Request,
    engine: EngineDep,
    audit: Auditor,
    where: list[Any],
    cursor: str | None,
    limit: int,
) -> MessagePage:
    """One page of inbox rows, newest first; each row listed is audited (none found: once)."""
    start = decode_cursor(_CURSOR, cursor, (int,))
    query = select(*_SUMMARY_COLUMNS).where(*where).order_by(_t.c.id.desc()).limit(limit + 1)
    if start is not None:
        query = query.where(_t.c.id < start[0])
    async with engine.connect() as connection:
        rows = (await connection.execute(query)).mappings().all()
    items = [MessageSummary.model_validate(dict(row)) for row in rows[:limit]]
    await audit.record_many("search", "message", [str(m.id) for m in items] or [None])
    last = (items[-1].id,) if len(rows) > limit else None
    paged = links(request, _CURSOR, last)
    return MessagePage(items=items, next=paged.next, next_cursor=paged.next_cursor)


async def _trace_of(connection: AsyncConnection, message_id: int) -> list[TraceItem]:
    query = select(trace).where(trace.c.inbox_message_id == message_id).order_by(trace.c.id)
    rows = (await connection.execute(query)).mappings().all()
    return [TraceItem.model_validate(dict(row)) for row in rows]


def outbox_columns() -> list[object]:
    """Outbox columns for listings: everything but the Bundle, plus its size."""
    columns: list[object] = [c for c in outbox.columns if c.name != "bundle"]
    columns.append(func.length(outbox.c.bundle).label("bundle_bytes"))
    return columns


async def _outbox_of(connection: AsyncConnection, message_id: int) -> list[OutboxItem]:
    query = (
        select(*outbox_columns())  # type: ignore[call-overload]
        .where(outbox.c.inbox_message_id == message_id)
        .order_by(outbox.c.id)
    )
    rows = (await connection.execute(query)).mappings().all()
    return [OutboxItem.model_validate(dict(row)) for row in rows]


@router.get("/messages/{message_id}", summary="One message with its ACK, trace and FHIR writes")
async def read_message(
    message_id: MessageId,
    engine: EngineDep,
    audit: AuditDep,
    _: ReadPrincipal,
    include_raw: Annotated[
        bool, Query(description="Include the message content (PHI; the read is audited).")
    ] = False,
) -> MessageDetail:
    async with engine.begin() as connection:
        row = (await connection.execute(select(_t).where(_t.c.id == message_id))).mappings().first()
        if row is None:
            raise HTTPException(404, f"no inbox message {message_id}")
        detail = MessageDetail.model_validate(
            {
                **{c.name: row[c.name] for c in _SUMMARY_COLUMNS},
                "ack": _text(row["ack_bytes"]),
                "raw": _text(row["raw"]) if include_raw and not row["raw_purged_at"] else None,
                "trace": await _trace_of(connection, message_id),
                "outbox": await _outbox_of(connection, message_id),
            }
        )
        action = "read-raw" if include_raw else "read"
        await audit.record(action, "message", str(message_id), connection=connection)
        cases = sorted({t.case_id for t in detail.trace if t.case_id})
        if cases:
            await audit.record_many("read", "case", list(cases), connection=connection)
    return detail


def _text(data: bytes | None) -> str | None:
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


@router.post(
    "/hl7v2",
    summary="Ingest one HL7v2 message (or batch) over HTTP; the body of the answer is the ACK",
    response_class=Response,
    responses={
        200: {"content": {HL7_MEDIA_TYPE: {}}, "description": "The ACK (AA, AE, AR, CA, ...)"},
        204: {"description": "No ACK requested (MSH-15 NE); the message was stored"},
        413: {"description": "Body over the configured size limit (http.max_body_bytes)"},
        503: {"description": "The message could not be stored; resend it"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                HL7_MEDIA_TYPE: {"schema": {"type": "string"}},
                "text/plain": {"schema": {"type": "string"}},
            },
        }
    },
)
async def ingest_hl7v2(
    request: Request, context: ContextDep, audit: AuditDep, _: WritePrincipal
) -> Response:
    body = await request.body()  # bounded by http.max_body_bytes at the front door
    if not body.strip():
        raise HTTPException(400, "the body must hold an HL7v2 message")
    ingest = context.ingest
    if ingest is None:
        raise HTTPException(503, "ingest is not available")
    failures = ingest.stats.store_failures
    client = request.client.host if request.client else "?"
    replies = await ingest.handle_payload(body, f"http:{client}")
    summaries = [s for reply in replies for s in read_ack(reply)]
    await audit.record_many(
        "ingest", "message", [s.control_id or None for s in summaries] or [None]
    )
    if ingest.stats.store_failures > failures:
        return Response(
            b"\r".join(replies), 503, media_type=HL7_MEDIA_TYPE, headers={"Retry-After": "5"}
        )
    if not replies:
        return Response(status_code=204)
    headers = {"X-HL7-Ack-Code": ",".join(s.code for s in summaries)}
    return Response(b"\r".join(replies), 200, media_type=HL7_MEDIA_TYPE, headers=headers)


async def _states(engine: EngineDep, ids: list[int]) -> dict[int, str]:
    async with engine.connect() as connection:
        rows = await connection.execute(select(_t.c.id, _t.c.state).where(_t.c.id.in_(ids)))
        return {int(row.id): str(row.state) for row in rows}


async def _replay(engine: EngineDep, ids: list[int]) -> ReplayResult:
    states = await _states(engine, ids)
    result = ReplayResult(replayed=[])
    plain: list[int] = []
    for message_id in dict.fromkeys(ids):
        state = states.get(message_id)
        if state is None:
            result.skipped[str(message_id)] = "no such message"
        elif state == InboxState.RECEIVED.value:
            result.skipped[str(message_id)] = "already queued"
        elif state == InboxState.REFUSED.value:
            result.skipped[str(message_id)] = "refused at the door; the sender must resend it"
        elif state == InboxState.DEAD_LETTERED.value:
            if await queue.replay_dead_letter(engine, message_id):
                result.replayed.append(message_id)
            else:
                result.skipped[str(message_id)] = "changed meanwhile"
        else:
            plain.append(message_id)
    if plain:
        await queue.replay(engine, plain)
        result.replayed.extend(plain)
    return result


@router.post("/messages/{message_id}/replay", summary="Replay one message")
async def replay_message(
    message_id: MessageId, engine: EngineDep, audit: AuditDep, _: WritePrincipal
) -> ReplayResult:
    result = await _replay(engine, [message_id])
    if str(message_id) in result.skipped and result.skipped[str(message_id)] == "no such message":
        raise HTTPException(404, f"no inbox message {message_id}")
    await audit.record(
        "replay", "message", str(message_id), outcome="success" if result.replayed else "skipped"
    )
    return result


@router.post("/messages/replay", summary="Replay many messages, or every dead letter")
async def replay_messages(
    body: ReplayRequest, engine: EngineDep, audit: AuditDep, _: WritePrincipal
) -> ReplayResult:
    ids = list(body.ids)
    if body.all_dead_letters:
        async with engine.connect() as connection:
            dead = await connection.execute(
                select(_t.c.id).where(_t.c.state == InboxState.DEAD_LETTERED.value)
            )
            ids += [int(row.id) for row in dead]
    if not ids:
        raise HTTPException(422, "name the messages to replay (ids) or set all_dead_letters")
    result = await _replay(engine, ids)
    await audit.record_many("replay", "message", [str(i) for i in result.replayed] or [None])
    return result
