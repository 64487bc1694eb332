"""Retention of PHI: blank old raw messages, delete old trace, audit and sent outbox rows. I/O.

:func:`purge` applies a :class:`~cm_fhir.retention_policy.RetentionSettings` at a moment ``now``,
one kind at a time, in batches of ``batch_size`` rows, each batch its own short transaction, so
no lock is held for long and a stopped purge has done whole batches. What is eligible:

- **raw messages**: inbox rows ``processed`` or ``ignored`` that were received before the cutoff
  get ``raw`` blanked and ``raw_purged_at`` set; the row (sender, control id, states, ACK) stays,
  so a retransmission is still recognised and the counts stay right. Rows ``received``,
  ``failed``, ``dead_lettered`` or ``needs_attention`` are never touched, however old.
- **trace**: rows created before the cutoff, except those of an inbox row in one of the states
  above (an operator still needs them).
- **audit**: rows recorded before the cutoff.
- **sent outbox entries**: ``sent`` rows last updated before the cutoff, except the newest entry
  of each case; ``pending`` and ``failed`` entries are never touched.

Concurrent purgers (several worker processes) do not wait on each other: on PostgreSQL each batch
locks its rows ``FOR UPDATE SKIP LOCKED``, and every statement re-checks the row's state, so a row
replayed meanwhile is left alone. ``dry_run`` counts what would go and changes nothing. Progress
is reported per batch through an optional callback (the CLI draws a bar with it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, delete, exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from cm_fhir.retention_policy import RetentionSettings
from cm_fhir.store.audit import audit_events
from cm_fhir.store.case_tables import OutboxState, outbox, trace
from cm_fhir.store.counters import fold
from cm_fhir.store.tables import InboxState, inbox_messages

__all__ = ["KINDS", "Progress", "PurgeCounts", "purge"]

KINDS = ("raw_messages", "trace", "audit", "sent_outbox")
_i = inbox_messages
_SETTLED = (InboxState.PROCESSED.value, InboxState.IGNORED.value)
_KEEP_TRACE = (
    InboxState.RECEIVED.value,
    InboxState.FAILED.value,
    InboxState.DEAD_LETTERED.value,
    InboxState.NEEDS_ATTENTION.value,
)
#: Called after each batch: kind, rows done so far for that kind, rows eligible in all.
Progress = Callable[[str, int, int], None]


@dataclass(slots=True)
class PurgeCounts:
    """Rows purged (or, in a dry run, eligible) per kind; ``None`` when the kind is ``off``."""

    counts: dict[str, int | None] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(v for v in self.counts.values() if v)

    def describe(self) -> str:
        names = {
            "raw_messages": "raw messages",
            "trace": "trace rows",
            "audit": "audit rows",
            "sent_outbox": "sent outbox entries",
        }
        return ", ".join(f"{names[k]} {'off' if v is None else v}" for k, v in self.counts.items())


def _eligible(kind: str, cutoff: datetime) -> tuple[Select[Any], Any]:
    """The ids eligible for ``kind`` (in id order) and the table they live in."""
    if kind == "raw_messages":
        query = select(_i.c.id).where(
            _i.c.raw_purged_at.is_(None), _i.c.state.in_(_SETTLED), _i.c.received_at < cutoff
        )
        return query.order_by(_i.c.id), _i
    if kind == "trace":
        held = exists().where(_i.c.id == trace.c.inbox_message_id, _i.c.state.in_(_KEEP_TRACE))
        return select(trace.c.id).where(trace.c.created_at < cutoff, ~held).order_by(
            trace.c.id
        ), trace
    if kind == "audit":
        return select(audit_events.c.id).where(audit_events.c.at < cutoff).order_by(
            audit_events.c.id
        ), audit_events
    newer = outbox.alias("newer")
    later = exists().where(newer.c.case_id == outbox.c.case_id, newer.c.id > outbox.c.id)
    query = select(outbox.c.id).where(
        outbox.c.state == OutboxState.SENT.value, outbox.c.updated_at < cutoff, later
    )
    return query.order_by(outbox.c.id), outbox


def _change(kind: str, ids: list[int], now: datetime) -> Any:
    """The statement purging ``ids``, re-checking eligibility on the row as it is now."""
    if kind == "raw_messages":
        return (
            update(_i)
            .where(_i.c.id.in_(ids), _i.c.raw_purged_at.is_(None), _i.c.state.in_(_SETTLED))
            .values(raw=b"", raw_purged_at=now)
        )
    if kind == "trace":
        held = exists().where(_i.c.id == trace.c.inbox_message_id, _i.c.state.in_(_KEEP_TRACE))
        return delete(trace).where(trace.c.id.in_(ids), ~held)
    if kind == "audit":
        return delete(audit_events).where(audit_events.c.id.in_(ids))
    return delete(outbox).where(
        and_(outbox.c.id.in_(ids), outbox.c.state == OutboxState.SENT.value)
    )


async def _count(engine: AsyncEngine, query: Select[Any]) -> int:
    async with engine.connect() as connection:
        counted = select(func.count()).select_from(query.order_by(None).subquery())
        return int((await connection.execute(counted)).scalar_one())


async def _purge_kind(
    engine: AsyncEngine,
    kind: str,
    cutoff: datetime,
    now: datetime,
    batch_size: int,
    progress: Progress | None,
) -> int:
    query, table = _eligible(kind, cutoff)
    expected = await _count(engine, query) if progress is not None else 0
    done = 0
    after = 0  # keyset cursor: rows skipped (locked by another purger) are not rescanned
    while True:
        batch = query.where(table.c.id > after).limit(batch_size)
        async with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                batch = batch.with_for_update(skip_locked=True, of=table)
            ids = [int(row[0]) for row in (await connection.execute(batch)).all()]
            if not ids:
                break
            result = await connection.execute(_change(kind, ids, now))
        done += int(result.rowcount)
        after = ids[-1]
        if progress is not None:
            progress(kind, done, max(expected, done))
        if len(ids) < batch_size:
            break
    return done


async def purge(
    engine: AsyncEngine,
    settings: RetentionSettings,
    now: datetime,
    *,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> PurgeCounts:
    """Purge what ``settings`` says is too old at ``now``; the counts per kind."""
    counts = PurgeCounts()
    for kind in KINDS:
        age = settings.age(kind)
        if age is None:
            counts.counts[kind] = None
            continue
        cutoff = now - age
        if dry_run:
            counts.counts[kind] = await _count(engine, _eligible(kind, cutoff)[0])
            if progress is not None:
                progress(kind, counts.counts[kind] or 0, counts.counts[kind] or 0)
            continue
        counts.counts[kind] = await _purge_kind(
            engine, kind, cutoff, now, settings.batch_size, progress
        )
    if not dry_run:
        async with engine.begin() as connection:
            await connection.run_sync(fold)
    return counts
