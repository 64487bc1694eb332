"""The inbox repository: store inbound messages with race-safe dedup, claim them in order. I/O.

:func:`store_messages` writes a group of messages in one transaction. A retransmission (same
MSH-3/4 sender, MSH-10 and content hash) is not stored again: its result carries the row id and
ACK of the original. A reused MSH-10 with other content is stored and flagged
``control_id_reused``. The unique dedup index makes this safe across processes: the insert is
``ON CONFLICT DO NOTHING`` and a conflicting row is read back as a duplicate.

:func:`claim_next` is the worker's entry point: the oldest ``received`` rows whose patient has no
older ``received`` row, locked ``FOR UPDATE SKIP LOCKED`` on PostgreSQL (SQLite serialises writers
with ``BEGIN IMMEDIATE``), so rows of one patient are handled in arrival order, patients in
parallel.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import Connection, Row, and_, bindparam, exists, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from cm_fhir.store.tables import InboxState, inbox_messages

__all__ = [
    "NewMessage",
    "StoredMessage",
    "claim_next",
    "store_messages",
    "store_messages_sqlite3",
    "store_messages_sync",
]

_t = inbox_messages
DedupKey = tuple[str, str, str, str]
AnyRow = Row[*tuple[Any, ...]]


@dataclass(slots=True)
class NewMessage:
    """One inbound message as the listener hands it to the inbox (raw bytes are PHI)."""

    raw: bytes
    content_sha256: str
    state: str
    ack_code: str | None
    ack_bytes: bytes | None
    sending_application: str | None = None
    sending_facility: str | None = None
    control_id: str | None = None
    message_type: str | None = None
    trigger_event: str | None = None
    version_id: str | None = None
    application_ack_type: str | None = None
    patient_key: str | None = None
    reason: str | None = None
    batch_control_id: str | None = None
    peer: str | None = None
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def dedup_key(self) -> DedupKey | None:
        if self.control_id is None:
            return None
        return (
            self.control_id,
            self.sending_application or "",
            self.sending_facility or "",
            self.content_sha256,
        )

    def row(self, *, control_id_reused: bool) -> dict[str, Any]:
        return {
            "received_at": self.received_at,
            "updated_at": self.received_at,
            "state": self.state,
            "reason": self.reason,
            "attempts": 0,
            "sending_application": self.sending_application,
            "sending_facility": self.sending_facility,
            "control_id": self.control_id,
            "content_sha256": self.content_sha256,
            "control_id_reused": control_id_reused,
            "message_type": self.message_type,
            "trigger_event": self.trigger_event,
            "version_id": self.version_id,
            "application_ack_type": self.application_ack_type,
            "patient_key": self.patient_key,
            "batch_control_id": self.batch_control_id,
            "peer": self.peer,
            "ack_code": self.ack_code,
            "ack_bytes": self.ack_bytes,
            "raw": self.raw,
        }


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """The outcome of storing one message: its row, and the ACK to send back."""

    id: int
    duplicate: bool
    control_id_reused: bool
    ack_code: str | None
    ack_bytes: bytes | None


_EXISTING = select(
    _t.c.id,
    _t.c.control_id,
    _t.c.sending_application,
    _t.c.sending_facility,
    _t.c.content_sha256,
    _t.c.ack_code,
    _t.c.ack_bytes,
).where(_t.c.control_id.in_(bindparam("control_ids", expanding=True)))
_DEDUP_COLUMNS = [
    _t.c.control_id,
    _t.c.sending_application,
    _t.c.sending_facility,
    _t.c.content_sha256,
]
_INSERT_RETURNING = (_t.c.id, *_DEDUP_COLUMNS)
_INSERT_UNKEYED = _t.insert().returning(_t.c.id)


def _insert_keyed(dialect: str) -> Any:
    """INSERT ... ON CONFLICT (dedup key) DO NOTHING RETURNING id, key; one per dialect."""
    if dialect not in _INSERTS:
        module = postgresql if dialect == "postgresql" else sqlite
        _INSERTS[dialect] = (
            module.insert(_t)
            .on_conflict_do_nothing(index_elements=_DEDUP_COLUMNS)
            .returning(*_INSERT_RETURNING)
        )
    return _INSERTS[dialect]


_INSERTS: dict[str, Any] = {}


def _key(row: AnyRow) -> DedupKey:
    return (row.control_id, row.sending_application, row.sending_facility, row.content_sha256)


async def store_messages(
    connection: AsyncConnection, messages: Sequence[NewMessage]
) -> list[StoredMessage]:
    """Store ``messages`` (caller commits); return one result per message, in order."""
    return await connection.run_sync(store_messages_sync, messages)


class _InboxSql(Protocol):
    """The three statements the dedup logic needs, over SQLAlchemy or a raw sqlite3 connection."""

    def existing(self, control_ids: set[str]) -> Sequence[tuple[Any, ...]]: ...

    def insert_keyed(self, rows: list[dict[str, Any]]) -> list[tuple[int, DedupKey]]: ...

    def insert_unkeyed(self, row: dict[str, Any]) -> int: ...


_EXISTING_COLUMNS = "id, control_id, sending_application, sending_facility, content_sha256"


class _AlchemySql:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def existing(self, control_ids: set[str]) -> Sequence[tuple[Any, ...]]:
        if not control_ids:
            return []
        query = self._connection.execute(_EXISTING, {"control_ids": sorted(control_ids)})
        return [tuple(row) for row in query]

    def insert_keyed(self, rows: list[dict[str, Any]]) -> list[tuple[int, DedupKey]]:
        statement = _insert_keyed(self._connection.dialect.name)
        return [(row.id, _key(row)) for row in self._connection.execute(statement, rows)]

    def insert_unkeyed(self, row: dict[str, Any]) -> int:
        return int(self._connection.execute(_INSERT_UNKEYED, row).scalar_one())


_SQLITE = sqlite.dialect()
_COLUMNS = [column for column in _t.columns if column.name != "id"]
_BINDERS = [
    (column.name, column.type.dialect_impl(_SQLITE).bind_processor(_SQLITE)) for column in _COLUMNS
]
_RAW_INSERT = (
    f"INSERT INTO {_t.name} ({', '.join(c.name for c in _COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _COLUMNS)})"
)
_RAW_ON_CONFLICT = (
    " ON CONFLICT (control_id, sending_application, sending_facility, content_sha256) DO NOTHING"
)


class _RawSqliteSql:
    """The same statements on the sqlite3 connection itself: no per-statement compile cost."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def _values(self, row: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(bind(row[name]) if bind else row[name] for name, bind in _BINDERS)

    def existing(self, control_ids: set[str]) -> Sequence[tuple[Any, ...]]:
        if not control_ids:
            return []
        marks = ", ".join("?" for _ in control_ids)
        query = (
            f"SELECT {_EXISTING_COLUMNS}, ack_code, ack_bytes FROM {_t.name} "
            f"WHERE control_id IN ({marks})"
        )
        return self._connection.execute(query, sorted(control_ids)).fetchall()

    def insert_keyed(self, rows: list[dict[str, Any]]) -> list[tuple[int, DedupKey]]:
        inserted: list[tuple[int, DedupKey]] = []
        statement = _RAW_INSERT + _RAW_ON_CONFLICT + " RETURNING id"
        for row in rows:
            found = self._connection.execute(statement, self._values(row)).fetchone()
            if found is not None:
                key = (
                    row["control_id"],
                    row["sending_application"],
                    row["sending_facility"],
                    row["content_sha256"],
                )
                inserted.append((int(found[0]), key))
        return inserted

    def insert_unkeyed(self, row: dict[str, Any]) -> int:
        cursor = self._connection.execute(_RAW_INSERT + " RETURNING id", self._values(row))
        return int(cursor.fetchone()[0])


def store_messages_sync(
    connection: Connection, messages: Sequence[NewMessage]
) -> list[StoredMessage]:
    """:func:`store_messages` on a synchronous SQLAlchemy connection."""
    return _store(_AlchemySql(connection), messages)


def store_messages_sqlite3(
    connection: sqlite3.Connection, messages: Sequence[NewMessage]
) -> list[StoredMessage]:
    """:func:`store_messages` on a raw sqlite3 connection inside a transaction (writer thread)."""
    return _store(_RawSqliteSql(connection), messages)


def _store(sql: _InboxSql, messages: Sequence[NewMessage]) -> list[StoredMessage]:
    keyed = {m.dedup_key[0] for m in messages if m.dedup_key is not None}
    found: dict[DedupKey, StoredMessage] = {}
    senders_seen: set[tuple[str, str, str]] = set()
    for row in sql.existing(keyed):
        row_key: DedupKey = (row[1], row[2], row[3], row[4])
        senders_seen.add(row_key[:3])
        found[row_key] = StoredMessage(row[0], True, False, row[5], row[6])

    results: list[StoredMessage | None] = [None] * len(messages)
    pending: dict[DedupKey, tuple[NewMessage, bool, list[int]]] = {}
    unkeyed: list[int] = []
    for index, message in enumerate(messages):
        key = message.dedup_key
        if key is None:
            unkeyed.append(index)
        elif key in found:
            results[index] = found[key]
        elif key in pending:
            pending[key][2].append(index)  # same message twice in one group
        else:
            reused = key[:3] in senders_seen
            senders_seen.add(key[:3])
            pending[key] = (message, reused, [index])

    if pending:
        rows = [m.row(control_id_reused=reused) for m, reused, _ in pending.values()]
        inserted = {key: row_id for row_id, key in sql.insert_keyed(rows)}
        lost_race = {key for key in pending if key not in inserted}
        if lost_race:
            # Another process stored the same message meanwhile: answer with its ACK.
            for row in sql.existing({key[0] for key in lost_race}):
                found[(row[1], row[2], row[3], row[4])] = StoredMessage(
                    row[0], True, False, row[5], row[6]
                )
        for key, (message, reused, indexes) in pending.items():
            first = (
                StoredMessage(inserted[key], False, reused, message.ack_code, message.ack_bytes)
                if key in inserted
                else found[key]
            )
            results[indexes[0]] = first
            for index in indexes[1:]:
                results[index] = StoredMessage(
                    first.id, True, False, first.ack_code, first.ack_bytes
                )

    for index in unkeyed:
        message = messages[index]
        row_id = sql.insert_unkeyed(message.row(control_id_reused=False))
        results[index] = StoredMessage(row_id, False, False, message.ack_code, message.ack_bytes)

    return [result for result in results if result is not None]


async def claim_next(connection: AsyncConnection, limit: int = 10) -> list[int]:
    """Lock and return ids of the next rows to process: per patient, the oldest ``received`` one.

    Call inside a transaction and keep it open while processing; rows locked by another worker
    are skipped on PostgreSQL, and so are later rows of the same patient (their older row is
    still ``received``).
    """
    older = _t.alias("older")
    query = (
        select(_t.c.id)
        .where(
            _t.c.state == InboxState.RECEIVED.value,
            ~exists().where(
                and_(
                    older.c.patient_key == _t.c.patient_key,
                    older.c.state == InboxState.RECEIVED.value,
                    older.c.id < _t.c.id,
                )
            ),
        )
        .order_by(_t.c.id)
        .limit(limit)
    )
    if connection.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=_t)
    return [row.id for row in (await connection.execute(query)).all()]
