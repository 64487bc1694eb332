"""The audit trail: who read or changed which case, who replayed which message. I/O (database).

One row per access: when, the subject and how it authenticated, the action (``read``,
``search``, ``read-raw``, ``create``, ``update``, ``replay``, ``ingest``; ``authenticate`` and
``authorise`` for refused requests), the kind of entity and its id, and the route template (never
the concrete URL or query string: those may hold patient identifiers). Rows are only ever
inserted; nothing in cm-fhir updates or deletes them. The table is created by the ``0003_audit``
migration.

:class:`AuditGroupWriter` records rows that belong to no transaction of their own (refused
requests) with group commit: concurrent records share one insert, so a flood of bad tokens costs
a few transactions, not one (and on SQLite one write lock) per request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    String,
    Table,
    insert,
    select,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cm_fhir.store.tables import metadata

__all__ = ["AuditGroupWriter", "AuditRecord", "audit_events", "list_audit", "record_audit"]

audit_events = Table(
    "audit_event",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("subject", String(255), nullable=False),
    Column("auth_method", String(16), nullable=False),
    Column("action", String(16), nullable=False),
    Column("entity_type", String(32), nullable=False),
    Column("entity_id", String(255), nullable=True),
    Column("route", String(255), nullable=True),
    Column("outcome", String(16), nullable=False),
    Column("client", String(100), nullable=True),
)
Index("ix_audit_event_entity", audit_events.c.entity_type, audit_events.c.entity_id)
Index("ix_audit_event_at", audit_events.c.at)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One access to record; ``entity_id`` names a case, message or outbox row (no PHI)."""

    subject: str
    auth_method: str
    action: str
    entity_type: str
    entity_id: str | None = None
    route: str | None = None
    outcome: str = "success"
    client: str | None = None
    at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def row(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "subject": self.subject[:255],
            "auth_method": self.auth_method,
            "action": self.action,
            "entity_type": self.entity_type,
            "entity_id": self.entity_id[:255] if self.entity_id else None,
            "route": self.route[:255] if self.route else None,
            "outcome": self.outcome,
            "client": self.client[:100] if self.client else None,
        }


async def record_audit(connection: AsyncConnection, records: Sequence[AuditRecord]) -> None:
    """Insert ``records`` (the caller commits, so an audit row commits with the change it logs)."""
    if records:
        await connection.execute(insert(audit_events), [record.row() for record in records])


class AuditGroupWriter:
    """Commits audit rows in groups: a record waits for the insert in flight, then goes out with
    every record that arrived meanwhile. ``add`` returns once its row is committed (or raises the
    database's error). At most ``max_pending`` rows wait; more are counted in ``dropped``."""

    def __init__(self, max_pending: int = 10_000) -> None:
        self._pending: list[AuditRecord] = []
        self._lock = asyncio.Lock()
        self.max_pending = max_pending
        self.dropped = 0

    async def add(self, engine: AsyncEngine, record: AuditRecord) -> None:
        if len(self._pending) >= self.max_pending:
            self.dropped += 1
            return
        self._pending.append(record)
        async with self._lock:
            if not self._pending:  # an insert made while we waited carried our row
                return
            batch, self._pending = self._pending, []
            async with engine.begin() as connection:
                await record_audit(connection, batch)


async def list_audit(
    connection: AsyncConnection,
    *,
    entity_type: str | None = None,
    entity_id: str | None = None,
    subject: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """The newest audit rows first, optionally for one entity or subject."""
    query = select(audit_events).order_by(audit_events.c.id.desc()).limit(limit)
    if entity_type is not None:
        query = query.where(audit_events.c.entity_type == entity_type)
    if entity_id is not None:
        query = query.where(audit_events.c.entity_id == entity_id)
    if subject is not None:
        query = query.where(audit_events.c.subject == subject)
    rows = (await connection.execute(query)).mappings().all()
    return [dict(row) for row in rows]
