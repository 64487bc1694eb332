"""What each FHIR endpoint holds of ours: server ids, versions and the hash last sent. I/O.

One ``sync_state`` row per (endpoint, resource type, business identifier ``system|value``). The
sync worker records the server's id and version of every resource it wrote (for ``If-Match`` and
for literal references) and the SHA-256 of the content it sent; the EHR's Patients resolved by
identifier are cached here too (resource type ``Patient``, the patient's ``system|value``), with
no server id when the EHR has none. Functions run in the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, and_, or_, select, update

from cm_fhir.store.case_tables import sync_state
from cm_fhir.store.cases import dialect_insert

__all__ = ["SyncKey", "SyncRecord", "forget_sent", "read_sync", "record_sync"]

_t = sync_state


@dataclass(frozen=True, slots=True)
class SyncKey:
    """Names one resource at one endpoint."""

    endpoint: str
    resource_type: str
    identifier: str  # system|value


@dataclass(frozen=True, slots=True)
class SyncRecord:
    """What the endpoint holds of one resource (``server_id`` None: known not to exist)."""

    key: SyncKey
    server_id: str | None
    version_id: str | None = None
    last_sent_sha256: str | None = None
    updated_at: datetime | None = None  # as read; writing sets it to now


def read_sync(connection: Connection, keys: Iterable[SyncKey]) -> dict[SyncKey, SyncRecord]:
    """The records held for ``keys`` (missing keys are absent from the result)."""
    wanted = sorted(set(keys), key=lambda k: (k.endpoint, k.resource_type, k.identifier))
    found: dict[SyncKey, SyncRecord] = {}
    for start in range(0, len(wanted), 200):
        chunk = wanted[start : start + 200]
        condition = or_(
            *(
                and_(
                    _t.c.endpoint == k.endpoint,
                    _t.c.resource_type == k.resource_type,
                    _t.c.identifier == k.identifier,
                )
                for k in chunk
            )
        )
        query = select(
            _t.c.endpoint,
            _t.c.resource_type,
            _t.c.identifier,
            _t.c.server_id,
            _t.c.version_id,
            _t.c.last_sent_sha256,
            _t.c.updated_at,
        ).where(condition)
        for row in connection.execute(query):
            key = SyncKey(row.endpoint, row.resource_type, row.identifier)
            found[key] = SyncRecord(
                key, row.server_id, row.version_id, row.last_sent_sha256, row.updated_at
            )
    return found


def record_sync(connection: Connection, records: Sequence[SyncRecord], now: datetime) -> None:
    """Insert or replace the records (one executemany); the last record of a key wins."""
    latest = {r.key: r for r in records}
    if not latest:
        return
    insert = dialect_insert(connection, _t)
    statement = insert.on_conflict_do_update(
        index_elements=[_t.c.endpoint, _t.c.resource_type, _t.c.identifier],
        set_={
            "server_id": insert.excluded.server_id,
            "version_id": insert.excluded.version_id,
            "last_sent_sha256": insert.excluded.last_sent_sha256,
            "updated_at": insert.excluded.updated_at,
        },
    )
    connection.execute(
        statement,
        [
            {
                "endpoint": r.key.endpoint,
                "resource_type": r.key.resource_type,
                "identifier": r.key.identifier,
                "server_id": r.server_id,
                "version_id": r.version_id,
                "last_sent_sha256": r.last_sent_sha256,
                "updated_at": now,
            }
            for r in latest.values()
        ],
    )


def forget_sent(connection: Connection, keys: Iterable[SyncKey]) -> None:
    """Forget what was last sent for ``keys``, so their next write sends every resource again
    (a resend after an EHR's database was restored); server ids and versions stay."""
    wanted = sorted(set(keys), key=lambda k: (k.endpoint, k.resource_type, k.identifier))
    for start in range(0, len(wanted), 200):
        condition = or_(
            *(
                and_(
                    _t.c.endpoint == k.endpoint,
                    _t.c.resource_type == k.resource_type,
                    _t.c.identifier == k.identifier,
                )
                for k in wanted[start : start + 200]
            )
        )
        connection.execute(update(_t).where(condition).values(last_sent_sha256=None))
