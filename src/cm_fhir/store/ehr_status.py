"""Where status back from each EHR endpoint stands: the poll watermark, the subscription's event
count and what incoming Tasks did. I/O.

One ``ehr_status_back`` row per endpoint name: ``watermark`` is the newest ``meta.lastUpdated`` a
poll has read (the next poll asks ``Task?_lastUpdated=gt<watermark - overlap>``); ``subscription``
and ``events_seen`` the last ``eventsSinceSubscriptionStart`` a notification carried, so a gap
shows a missed notification; the counters count remote Tasks by outcome (``applied``,
``unchanged``, ``echo``, ``illegal``, ``unknown``, ``unreadable``) for ``/metrics``. The row is
locked (``FOR UPDATE`` on PostgreSQL) while a poll or a notification of its endpoint commits, so
two sync processes never move one watermark backwards. Functions run in the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, Column, Connection, DateTime, String, Table, select, update

from cm_fhir.store.cases import dialect_insert
from cm_fhir.store.tables import metadata

__all__ = [
    "COUNTERS",
    "EndpointCursor",
    "add_counts",
    "ehr_status_back",
    "lock_cursor",
    "read_cursors",
    "save_cursor",
]

#: What a remote Task can do, each counted per endpoint.
COUNTERS = ("applied", "unchanged", "echo", "illegal", "unknown", "unreadable")

ehr_status_back = Table(
    "ehr_status_back",
    metadata,
    Column("endpoint", String(64), primary_key=True),
    Column("watermark", DateTime(timezone=True), nullable=True),
    Column("subscription", String(500), nullable=True),
    Column("events_seen", BigInteger, nullable=True),
    Column("polled_at", DateTime(timezone=True), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    *(Column(name, BigInteger, nullable=False, server_default="0") for name in COUNTERS),
)
_t = ehr_status_back


@dataclass(frozen=True, slots=True)
class EndpointCursor:
    """Where one endpoint stands."""

    endpoint: str
    watermark: datetime | None = None
    subscription: str | None = None
    events_seen: int | None = None
    polled_at: datetime | None = None
    counts: Mapping[str, int] = field(default_factory=dict)


def _aware(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _cursor(row: Any) -> EndpointCursor:
    return EndpointCursor(
        row.endpoint,
        _aware(row.watermark),
        row.subscription,
        None if row.events_seen is None else int(row.events_seen),
        _aware(row.polled_at),
        {name: int(getattr(row, name)) for name in COUNTERS},
    )


def lock_cursor(connection: Connection, endpoint: str, now: datetime) -> EndpointCursor:
    """The endpoint's row (created when absent), locked until the caller commits."""
    connection.execute(
        dialect_insert(connection, _t).on_conflict_do_nothing(index_elements=[_t.c.endpoint]),
        [{"endpoint": endpoint, "updated_at": now}],
    )
    query = select(_t).where(_t.c.endpoint == endpoint)
    if connection.dialect.name == "postgresql":
        query = query.with_for_update()
    return _cursor(connection.execute(query).one())


def read_cursors(connection: Connection) -> list[EndpointCursor]:
    """Every endpoint's row, by name."""
    return [_cursor(r) for r in connection.execute(select(_t).order_by(_t.c.endpoint))]


def save_cursor(connection: Connection, cursor: EndpointCursor, now: datetime) -> None:
    """Store the watermark, subscription and event count of ``cursor`` (a locked row)."""
    connection.execute(
        update(_t)
        .where(_t.c.endpoint == cursor.endpoint)
        .values(
            watermark=cursor.watermark,
            subscription=cursor.subscription,
            events_seen=cursor.events_seen,
            polled_at=cursor.polled_at,
            updated_at=now,
        )
    )


def add_counts(connection: Connection, endpoint: str, counts: Mapping[str, int]) -> None:
    """Add ``counts`` (names from :data:`COUNTERS`) to the endpoint's counters."""
    values = {name: _t.c[name] + n for name, n in counts.items() if n and name in COUNTERS}
    if values:
        connection.execute(update(_t).where(_t.c.endpoint == endpoint).values(**values))
