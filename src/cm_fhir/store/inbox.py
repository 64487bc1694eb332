"""The inbox repository: store inbound messages with race-safe dedup, claim them in order. I/O.

HL7v2 messages and FHIR message Bundles share it (``format``); what follows says MSH-3/4 and
MSH-10, which for a FHIR row are its sender and its Bundle identifier.

:func:`store_messages` writes a group of messages in one transaction. A retransmission (same
MSH-3/4 sender, MSH-10 and content hash) is not stored again: its result carries the row id and
ACK of the original. A reused MSH-10 with other content is stored and flagged
``control_id_reused``. The unique dedup index makes this safe across processes: the insert is
``ON CONFLICT DO NOTHING`` (nothing is read before it), and only the rows that did not insert are
read back, as duplicates. Row ids follow arrival order within a group too (a message without a
control id is inserted between the runs of those with one). The decisions live in
:class:`_StorePlan`; the statements come from
:mod:`cm_fhir.store.inbox_sql` (SQLAlchemy, a raw sqlite3 connection for the SQLite writer
thread, or asyncpg for PostgreSQL).

Rows carry a patient ordering key (first PID-3 id and assigning authority) indexed with state and
id, so the worker (:mod:`cm_fhir.store.queue`) can claim them per patient in arrival order.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from cm_fhir.store.inbox_sql import (
    AlchemyInboxSql,
    AsyncpgInboxSql,
    DedupKey,
    ExistingRow,
    InboxSql,
    Inserted,
    SqliteInboxSql,
)
from cm_fhir.store.tables import InboxFormat, inbox_messages

__all__ = [
    "NewMessage",
    "StoredMessage",
    "store_messages",
    "store_messages_asyncpg",
    "store_messages_sqlite3",
    "store_messages_sync",
]

_t = inbox_messages
_LENGTHS: dict[str, int] = {
    c.name: length for c in _t.columns if (length := getattr(c.type, "length", None))
}


def _clean(name: str, value: str | None) -> str | None:
    """Fit a header value into its column: no NUL (PostgreSQL refuses it), clipped to length."""
    if value is None:
        return None
    length = _LENGTHS.get(name, 0)
    if "\x00" in value:
        value = value.replace("\x00", "")
    return value[:length] if length and len(value) > length else value


_CLEANED = tuple(
    (name, _LENGTHS.get(name, 0))
    for name in (
        "sending_application",
        "sending_facility",
        "control_id",
        "message_type",
        "trigger_event",
        "version_id",
        "application_ack_type",
        "patient_key",
        "reason",
        "batch_control_id",
        "peer",
    )
)


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
    format: str = InboxFormat.HL7V2.value
    """``hl7v2``, or ``fhir`` for a FHIR message Bundle (its header fields: see
    :mod:`cm_fhir.store.fhir_inbox`)."""

    def __post_init__(self) -> None:
        for name, length in _CLEANED:
            value = getattr(self, name)
            # Most values already fit: only those that do not are rewritten.
            if value is not None and (len(value) > length or "\x00" in value):
                setattr(self, name, _clean(name, value))

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
            "raw_purged_at": None,
            "format": self.format,
        }


class StoredMessage(NamedTuple):
    """The outcome of storing one message: its row, and the ACK to send back (a named tuple:
    one is built per message in the writer's commit)."""

    id: int
    duplicate: bool
    control_id_reused: bool
    ack_code: str | None
    ack_bytes: bytes | None


class _StorePlan:
    """The dedup decisions for one group of messages; the SQL is run by a driver function.

    The group is inserted first (:meth:`rows_to_insert`: one row per distinct dedup key, flagged
    reused when an earlier message of the group came from the same sender with the same control
    id); the rows the database did not insert are read back and answered as duplicates.
    """

    def __init__(self, messages: Sequence[NewMessage]) -> None:
        self.messages = messages
        self._found: dict[DedupKey, StoredMessage] = {}
        self._results: list[StoredMessage | None] = [None] * len(messages)
        self._pending: dict[DedupKey, tuple[NewMessage, list[int]]] = {}
        self._inserted: dict[DedupKey, tuple[int, bool]] = {}
        self.unkeyed: list[int] = []

    def rows_to_insert(self) -> list[dict[str, Any]]:
        """The rows of the group's distinct messages with a control id, in order."""
        senders: set[tuple[str, str, str]] = set()
        rows = []
        for index, message in enumerate(self.messages):
            key = message.dedup_key
            if key is None:
                self.unkeyed.append(index)
            elif key in self._pending:
                self._pending[key][1].append(index)  # the same message twice in one group
            else:
                self._pending[key] = (message, [index])
                rows.append(message.row(control_id_reused=key[:3] in senders))
                senders.add(key[:3])
        return rows

    def apply_inserted(self, inserted: Iterable[Inserted]) -> set[str]:
        """Take what the insert returned; return the control ids of the rows already stored."""
        self._inserted = {key: (row_id, reused) for row_id, key, reused in inserted}
        return {key[0] for key in self._pending if key not in self._inserted}

    def apply_existing(self, rows: Iterable[ExistingRow]) -> None:
        """Take the stored rows of the messages that did not insert."""
        for row_id, control_id, application, facility, digest, ack_code, ack_bytes in rows:
            key = (control_id, application or "", facility or "", digest)
            self._found[key] = StoredMessage(row_id, True, False, ack_code, ack_bytes)

    def apply_unkeyed(self, index: int, row_id: int) -> None:
        message = self.messages[index]
        self._results[index] = StoredMessage(
            row_id, False, False, message.ack_code, message.ack_bytes
        )

    def results(self) -> list[StoredMessage]:
        for key, (message, indexes) in self._pending.items():
            if key in self._inserted:
                row_id, reused = self._inserted[key]
                first = StoredMessage(row_id, False, reused, message.ack_code, message.ack_bytes)
            else:
                first = self._found[key]
            self._results[indexes[0]] = first
            for index in indexes[1:]:
                self._results[index] = StoredMessage(
                    first.id, True, False, first.ack_code, first.ack_bytes
                )
        return [result for result in self._results if result is not None]


def _in_order(messages: Sequence[NewMessage]) -> list[Sequence[NewMessage]]:
    """The group in runs whose row ids follow arrival order: the messages with a control id go
    in together, and each one without (inserted by a statement of its own) between them."""
    if all(message.control_id is not None for message in messages):
        return [messages]  # the usual group: one run
    runs: list[Sequence[NewMessage]] = []
    start = 0
    for index, message in enumerate(messages):
        if message.control_id is None:
            if start < index:
                runs.append(messages[start:index])
            runs.append(messages[index : index + 1])
            start = index + 1
    if start < len(messages):
        runs.append(messages[start:])
    return runs


def _run(sql: InboxSql, messages: Sequence[NewMessage]) -> list[StoredMessage]:
    results = []
    for run in _in_order(messages):
        plan = _StorePlan(run)
        to_insert = plan.rows_to_insert()
        if to_insert:
            stored_before = plan.apply_inserted(sql.insert_keyed(to_insert))
            if stored_before:
                plan.apply_existing(sql.existing(stored_before))
        for index in plan.unkeyed:
            row = run[index].row(control_id_reused=False)
            plan.apply_unkeyed(index, sql.insert_unkeyed(row))
        results += plan.results()
    return results


def store_messages_sync(
    connection: Connection, messages: Sequence[NewMessage]
) -> list[StoredMessage]:
    """Store ``messages`` on a synchronous SQLAlchemy connection (caller commits)."""
    return _run(AlchemyInboxSql(connection), messages)


def store_messages_sqlite3(
    connection: sqlite3.Connection, messages: Sequence[NewMessage]
) -> list[StoredMessage]:
    """Store ``messages`` on a raw sqlite3 connection inside the caller's transaction."""
    return _run(SqliteInboxSql(connection), messages)


async def store_messages(
    connection: AsyncConnection, messages: Sequence[NewMessage]
) -> list[StoredMessage]:
    """Store ``messages`` (caller commits); return one result per message, in order."""
    return await connection.run_sync(store_messages_sync, messages)


async def store_messages_asyncpg(
    connection: Any, messages: Sequence[NewMessage]
) -> list[StoredMessage]:
    """Store ``messages`` on an asyncpg connection (PostgreSQL writer), in autocommit mode.

    All rows with a control id go in one ``INSERT ... SELECT unnest(...)`` statement (one round
    trip when none is a retransmission), which commits on its own; rows without one (unreadable
    MSH) are inserted one by one. Everything is committed when this returns. If a later statement
    fails, earlier rows stay stored and the caller answers AR for the whole group: a resend is
    then recognised as a duplicate.
    """
    sql = AsyncpgInboxSql(connection)
    results = []
    for run in _in_order(messages):
        plan = _StorePlan(run)
        to_insert = plan.rows_to_insert()
        if to_insert:
            stored_before = plan.apply_inserted(await sql.insert_keyed(to_insert))
            if stored_before:
                plan.apply_existing(await sql.existing(stored_before))
        for index in plan.unkeyed:
            row = run[index].row(control_id_reused=False)
            plan.apply_unkeyed(index, await sql.insert_unkeyed(row))
        results += plan.results()
    return results
