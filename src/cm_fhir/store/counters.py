"""Counters kept at write time for ``/metrics``: read in O(counters), not O(rows). I/O (database).

Database triggers (created by the ``0006_retention_metrics`` migration) append a row to
``metric_delta`` for every change the metrics count: an inbox row inserted, deleted or changing
state (``inbox``: message type, event, ACK code and state, +1/-1), an inbox row settled
(``latency``: its processing-time bucket, with the seconds in ``total``), a trace row carrying
workflow flags (``flags``). The outbox is not counted here: ``/metrics`` groups its rows by
endpoint and state (revision ``0011_outbox_counted_once`` dropped its triggers). Every
writer is counted, whichever code path or process it is, and writers only ever insert delta rows,
so concurrent transactions never wait on a shared counter row. :func:`fold` moves the deltas into
``metric_total`` (one row per metric and labels); :func:`read_counters` sums both, so a reading is
exact whether or not a fold ran. On PostgreSQL the triggers are per statement (one delta row per
label set and statement); ``TRUNCATE`` of a counted table resets its counters.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Float,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    func,
    select,
    text,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cm_fhir.store.tables import metadata

__all__ = [
    "LATENCY_BOUNDS",
    "Counters",
    "fold",
    "fold_if_large",
    "metric_delta",
    "metric_total",
    "read_counters",
]

#: Upper bounds (seconds) of the processing-time buckets; the migration's triggers use the same.
LATENCY_BOUNDS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
_FOLD_AT = 5_000  # delta rows: a scrape that finds more folds them first

metric_delta = Table(
    "metric_delta",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("metric", String(16), nullable=False),
    Column("labels", String(400), nullable=False),
    Column("delta", BigInteger, nullable=False),
    Column("total", Float, nullable=False, server_default="0"),
)

metric_total = Table(
    "metric_total",
    metadata,
    Column("metric", String(16), nullable=False),
    Column("labels", String(400), nullable=False),
    Column("value", BigInteger, nullable=False),
    Column("total", Float, nullable=False, server_default="0"),
    PrimaryKeyConstraint("metric", "labels"),
)


@dataclass(slots=True)
class Counters:
    """The counters as read: ``inbox[(type, event, ack, state)]``, latency per bucket bound
    (``"+Inf"`` last; per bucket, not cumulative), flags per flag."""

    inbox: dict[tuple[str, str, str, str], int] = field(default_factory=dict)
    latency: dict[str, int] = field(default_factory=dict)
    latency_sum: float = 0.0
    flags: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def states(self) -> dict[str, int]:
        """Inbox rows per state."""
        out: dict[str, int] = defaultdict(int)
        for (_, _, _, state), count in self.inbox.items():
            out[state] += count
        return dict(out)


async def read_counters(connection: AsyncConnection) -> Counters:
    """Totals plus the deltas not yet folded, in one statement (one consistent snapshot)."""
    both = union_all(
        select(
            metric_total.c.metric,
            metric_total.c.labels,
            metric_total.c.value.label("n"),
            metric_total.c.total,
        ),
        select(
            metric_delta.c.metric,
            metric_delta.c.labels,
            metric_delta.c.delta.label("n"),
            metric_delta.c.total,
        ),
    ).subquery()
    query = select(both.c.metric, both.c.labels, func.sum(both.c.n), func.sum(both.c.total))
    query = query.group_by(both.c.metric, both.c.labels)
    counters = Counters()
    for metric, labels, count, seconds in (await connection.execute(query)).all():
        value = int(count or 0)
        if metric == "inbox":
            head, ack, state = ("||" + str(labels)).rsplit("|", 2)
            kind, _, event = head[2:].partition("|")
            if value:
                counters.inbox[(kind, event, ack, state)] = value
        elif metric == "latency":
            counters.latency[str(labels)] = value
            counters.latency_sum += float(seconds or 0.0)
        elif metric == "flags":
            for flag in str(labels).split(","):
                counters.flags[flag] += value
    return counters


_PG_FOLD = text(
    """
    WITH moved AS (DELETE FROM metric_delta RETURNING metric, labels, delta, total)
    INSERT INTO metric_total (metric, labels, value, total)
    SELECT metric, labels, sum(delta), sum(total) FROM moved
    GROUP BY metric, labels ORDER BY metric, labels
    ON CONFLICT (metric, labels) DO UPDATE
    SET value = metric_total.value + excluded.value, total = metric_total.total + excluded.total
    """
)
_SQLITE_FOLD = text(
    """
    INSERT INTO metric_total (metric, labels, value, total)
    SELECT metric, labels, sum(delta), sum(total) FROM metric_delta WHERE id <= :hwm
    GROUP BY metric, labels
    ON CONFLICT (metric, labels) DO UPDATE
    SET value = metric_total.value + excluded.value, total = metric_total.total + excluded.total
    """
)


def fold(connection: Connection) -> None:
    """Move the deltas into the totals, in the caller's transaction.

    PostgreSQL deletes and adds in one statement, so a delta committed meanwhile is either moved
    or left for the next fold, never lost; SQLite has one writer, so two statements are exact.
    """
    if connection.dialect.name == "postgresql":
        connection.execute(_PG_FOLD)
        return
    hwm = connection.execute(select(func.max(metric_delta.c.id))).scalar()
    if hwm is not None:
        connection.execute(_SQLITE_FOLD, {"hwm": hwm})
        connection.execute(metric_delta.delete().where(metric_delta.c.id <= hwm))


async def fold_if_large(engine: AsyncEngine) -> bool:
    """Fold when more than a few thousand deltas wait (cheap check on the primary key)."""
    async with engine.connect() as connection:
        low, high = (
            await connection.execute(
                select(func.min(metric_delta.c.id), func.max(metric_delta.c.id))
            )
        ).one()
    if low is None or high - low + 1 < _FOLD_AT:
        return False
    async with engine.begin() as connection:
        await connection.run_sync(fold)
    return True
