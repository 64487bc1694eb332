"""Read-only figures the console shows that no API list gives: message flow per hour and sender,
the inbox backlog, cases opened and closed today, a message's Bundles and a case's trace. I/O
(database; reads only).

These are aggregates (counts per hour, per state) and the two views a list cannot give: the
Bundles on either side of a message's change, and the trace of a case in order. The panels
audit what they show of them, as the API does.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from cm_fhir.store.case_tables import cases, outbox, trace
from cm_fhir.store.tables import InboxState, inbox_messages

__all__ = [
    "Backlog",
    "BundlePair",
    "Flow",
    "backlog",
    "bundles_of_message",
    "case_timeline",
    "cases_today",
    "message_flow",
]

_t = inbox_messages
_SETTLED = {
    InboxState.PROCESSED.value: "processed",
    InboxState.FAILED.value: "failed",
    InboxState.DEAD_LETTERED.value: "dead-lettered",
}


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class Flow:
    """Counts per hour: ``hours`` are the bucket starts; ``senders`` map sender -> series."""

    hours: list[datetime]
    senders: dict[str, dict[str, list[int]]]
    total: dict[str, list[int]]


async def message_flow(engine: AsyncEngine, now: datetime, hours: int = 24) -> Flow:
    """Received (by arrival) and processed, failed, dead-lettered (by when they settled) per hour
    and sending application over the last ``hours`` hours."""
    end = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    start = end - timedelta(hours=hours)
    buckets = [start + timedelta(hours=i) for i in range(hours)]
    query = select(_t.c.received_at, _t.c.updated_at, _t.c.state, _t.c.sending_application).where(
        or_(_t.c.received_at >= start, _t.c.updated_at >= start)
    )
    senders: dict[str, dict[str, list[int]]] = defaultdict(
        lambda: {name: [0] * hours for name in ("received", *_SETTLED.values())}
    )
    total = {name: [0] * hours for name in ("received", *_SETTLED.values())}

    def bump(sender: str, series: str, at: datetime) -> None:
        index = int((_aware(at) - start).total_seconds() // 3600)
        if 0 <= index < hours:
            senders[sender][series][index] += 1
            total[series][index] += 1

    async with engine.connect() as connection:
        result = await connection.stream(query)
        async for row in result:
            sender = row.sending_application or "(unknown sender)"
            bump(sender, "received", row.received_at)
            series = _SETTLED.get(row.state)
            if series is not None:
                bump(sender, series, row.updated_at)
    return Flow(buckets, dict(sorted(senders.items())), total)


@dataclass(frozen=True, slots=True)
class Backlog:
    waiting: int
    oldest: datetime | None


async def backlog(engine: AsyncEngine) -> Backlog:
    """Messages not yet processed (``received``) and when the oldest arrived."""
    query = select(func.count(), func.min(_t.c.received_at)).where(
        _t.c.state == InboxState.RECEIVED.value
    )
    async with engine.connect() as connection:
        count, oldest = (await connection.execute(query)).one()
    return Backlog(int(count), _aware(oldest) if oldest is not None else None)


async def cases_today(engine: AsyncEngine, now: datetime) -> tuple[int, int]:
    """Cases opened and cases closed since midnight UTC."""
    midnight = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    async with engine.connect() as connection:
        opened = await connection.scalar(
            select(func.count()).select_from(cases).where(cases.c.opened_at >= midnight)
        )
        closed = await connection.scalar(
            select(func.count()).select_from(cases).where(cases.c.closed_at >= midnight)
        )
    return int(opened or 0), int(closed or 0)


@dataclass(frozen=True, slots=True)
class BundlePair:
    """An outbox row of a message and the Bundle of the same case just before it."""

    outbox_id: int
    case_id: str
    before: dict[str, Any] | None
    after: dict[str, Any]


async def bundles_of_message(engine: AsyncEngine, message_id: int) -> list[BundlePair]:
    found: list[BundlePair] = []
    async with engine.connect() as connection:
        rows = (
            await connection.execute(
                select(outbox.c.id, outbox.c.case_id, outbox.c.bundle)
                .where(outbox.c.inbox_message_id == message_id)
                .order_by(outbox.c.id)
            )
        ).all()
        for row in rows:
            previous = await connection.scalar(
                select(outbox.c.bundle)
                .where(outbox.c.case_id == row.case_id, outbox.c.id < row.id)
                .order_by(outbox.c.id.desc())
                .limit(1)
            )
            before = orjson.loads(previous) if previous is not None else None
            found.append(BundlePair(int(row.id), row.case_id, before, orjson.loads(row.bundle)))
    return found


async def case_timeline(
    engine: AsyncEngine, case_id: str, limit: int = 500
) -> list[dict[str, Any]]:
    """The trace of a case in order, each step with the message that caused it (if any)."""
    query = (
        select(
            trace.c.id,
            trace.c.created_at,
            trace.c.event,
            trace.c.rule,
            trace.c.action,
            trace.c.target,
            trace.c.inbox_message_id,
            _t.c.control_id,
            _t.c.sending_application,
        )
        .select_from(trace.outerjoin(_t, _t.c.id == trace.c.inbox_message_id))
        .where(trace.c.case_id == case_id)
        .order_by(trace.c.id)
        .limit(limit)
    )
    async with engine.connect() as connection:
        rows = (await connection.execute(query)).mappings().all()
    return [dict(row) for row in rows]
