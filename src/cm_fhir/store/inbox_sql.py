"""The inbox statements, three ways: SQLAlchemy Core, raw sqlite3, raw asyncpg. I/O.

The dedup logic in :mod:`cm_fhir.store.inbox` needs three statements: insert new rows
``ON CONFLICT (dedup key) DO NOTHING`` returning their ids and reuse flags, read back the rows of
the messages that did not insert (retransmissions, or another writer first), and insert a row
without a control id. The insert decides ``control_id_reused`` itself: the flag the caller
computed for its own group, or an already stored row from the same sender (MSH-3/4, empty and
absent alike) with the same control id. So a group of new messages costs one statement on SQLite
(a multi-row ``VALUES``) and one round trip on PostgreSQL, with no read before it. SQLAlchemy
serves tests and ad-hoc callers; the group-commit writers use the driver connection directly (no
per-statement compilation): sqlite3 in the SQLite writer thread, asyncpg with ``unnest`` arrays on
PostgreSQL. Values go through SQLAlchemy's own bind processors on SQLite, so every path stores the
same bytes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, Protocol

from sqlalchemy import Boolean, Connection, bindparam, exists, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite

from cm_fhir.store.tables import inbox_messages

__all__ = [
    "AlchemyInboxSql",
    "AsyncpgInboxSql",
    "DedupKey",
    "ExistingRow",
    "InboxSql",
    "Inserted",
    "SqliteInboxSql",
]

_t = inbox_messages
DedupKey = tuple[str, str, str, str]
Inserted = tuple[int, DedupKey, bool]  # id, dedup key, control_id_reused as stored
ExistingRow = tuple[Any, ...]  # id, control_id, application, facility, sha256, ack_code, ack_bytes

_DEDUP = ("control_id", "sending_application", "sending_facility", "content_sha256")
_EXISTING_COLUMNS = ("id", *_DEDUP, "ack_code", "ack_bytes")
_COLUMNS = [column for column in _t.columns if column.name != "id"]
_NAMES = ", ".join(column.name for column in _COLUMNS)
_ON_CONFLICT = f" ON CONFLICT ({', '.join(_DEDUP)}) DO NOTHING"


def _inserted(found: Sequence[Any]) -> Inserted:
    """(id, key, reused) from a returned ``id, <dedup columns>, control_id_reused`` row."""
    return (
        int(found[0]),
        (found[1], found[2] or "", found[3] or "", found[4]),
        bool(found[5]),
    )


class InboxSql(Protocol):
    """The three statements, synchronous flavour."""

    def existing(self, control_ids: set[str]) -> Sequence[ExistingRow]: ...

    def insert_keyed(self, rows: list[dict[str, Any]]) -> list[Inserted]: ...

    def insert_unkeyed(self, row: dict[str, Any]) -> int: ...


_EXISTING = select(*(_t.c[name] for name in _EXISTING_COLUMNS)).where(
    _t.c.control_id.in_(bindparam("control_ids", expanding=True))
)
_INSERT_UNKEYED = _t.insert().returning(_t.c.id)
_SAME_SENDER = exists().where(
    _t.c.control_id == bindparam("same_control_id"),
    func.coalesce(_t.c.sending_application, "") == bindparam("same_application"),
    func.coalesce(_t.c.sending_facility, "") == bindparam("same_facility"),
)
_INSERTS = {
    name: module.insert(_t)
    .values(control_id_reused=or_(bindparam("reused_in_group", type_=Boolean), _SAME_SENDER))
    .on_conflict_do_nothing(index_elements=[_t.c[c] for c in _DEDUP])
    .returning(_t.c.id, *(_t.c[c] for c in _DEDUP), _t.c.control_id_reused)
    for name, module in (("postgresql", postgresql), ("sqlite", sqlite))
}


class AlchemyInboxSql:
    """SQLAlchemy Core on any supported dialect (one insert per row)."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def existing(self, control_ids: set[str]) -> Sequence[ExistingRow]:
        if not control_ids:
            return []
        query = self._connection.execute(_EXISTING, {"control_ids": sorted(control_ids)})
        return [tuple(row) for row in query]

    def insert_keyed(self, rows: list[dict[str, Any]]) -> list[Inserted]:
        statement = _INSERTS[self._connection.dialect.name]
        inserted = []
        for row in rows:
            values = {name: value for name, value in row.items() if name != "control_id_reused"}
            found = self._connection.execute(
                statement,
                {
                    **values,
                    "reused_in_group": row["control_id_reused"],
                    "same_control_id": row["control_id"],
                    "same_application": row["sending_application"] or "",
                    "same_facility": row["sending_facility"] or "",
                },
            ).first()
            if found is not None:
                inserted.append(_inserted(found))
        return inserted

    def insert_unkeyed(self, row: dict[str, Any]) -> int:
        return int(self._connection.execute(_INSERT_UNKEYED, row).scalar_one())


_SQLITE = sqlite.dialect()
_COLUMN_NAMES = [column.name for column in _COLUMNS]
_BINDERS = [
    (index, bind)
    for index, column in enumerate(_COLUMNS)
    if (bind := column.type.dialect_impl(_SQLITE).bind_processor(_SQLITE)) is not None
]


def _first_of_type(index: int) -> int:
    kind = repr(_COLUMNS[index].type)
    return next(earlier for earlier, _ in _BINDERS if repr(_COLUMNS[earlier].type) == kind)


# A column of the same type as an earlier one often holds the very same value (updated_at is
# received_at when a row is stored): then the earlier column's bound value is reused.
_BIND_STEPS = [
    (index, bind, earlier, _COLUMN_NAMES[index], _COLUMN_NAMES[earlier])
    for index, bind in _BINDERS
    for earlier in (_first_of_type(index),)
]
_SQLITE_INSERT = f"INSERT INTO {_t.name} ({_NAMES}) VALUES ({', '.join('?' for _ in _COLUMNS)})"
_SAME_SENDER_SQL = (
    f"EXISTS (SELECT 1 FROM {_t.name} WHERE control_id = {{0}} AND "
    f"coalesce(sending_application, '') = {{1}} AND coalesce(sending_facility, '') = {{2}})"
)
_REUSED = _COLUMN_NAMES.index("control_id_reused")
_SQLITE_ROW = (
    "("
    + ", ".join(
        f"(? OR {_SAME_SENDER_SQL.format('?', '?', '?')})" if n == _REUSED else "?"
        for n in range(len(_COLUMNS))
    )
    + ")"
)


@lru_cache(maxsize=64)
def _sqlite_insert_keyed(rows: int) -> str:
    """One INSERT of ``rows`` rows: a whole group in one statement."""
    values = ", ".join([_SQLITE_ROW] * rows)
    return (
        f"INSERT INTO {_t.name} ({_NAMES}) VALUES {values}{_ON_CONFLICT} "
        f"RETURNING id, {', '.join(_DEDUP)}, control_id_reused"
    )


class SqliteInboxSql:
    """The statements on a raw sqlite3 connection (the SQLite writer thread)."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def _values(self, row: dict[str, Any]) -> list[Any]:
        values = [row[name] for name in _COLUMN_NAMES]
        for index, bind, earlier, name, earlier_name in _BIND_STEPS:
            if earlier != index and row[name] is row[earlier_name]:
                values[index] = values[earlier]
            else:
                values[index] = bind(values[index])
        return values

    def existing(self, control_ids: set[str]) -> Sequence[ExistingRow]:
        if not control_ids:
            return []
        marks = ", ".join("?" for _ in control_ids)
        query = (
            f"SELECT {', '.join(_EXISTING_COLUMNS)} FROM {_t.name} WHERE control_id IN ({marks})"
        )
        return self._connection.execute(query, sorted(control_ids)).fetchall()

    def insert_keyed(self, rows: list[dict[str, Any]]) -> list[Inserted]:
        # Rows a caller flags as reused within the group carry the flag themselves, so the
        # EXISTS of a row need not see the rows of its own statement.
        parameters: list[Any] = []
        for row in rows:
            values = self._values(row)
            sender = (row["control_id"], row["sending_application"] or "")
            values[_REUSED + 1 : _REUSED + 1] = (*sender, row["sending_facility"] or "")
            parameters += values
        found = self._connection.execute(_sqlite_insert_keyed(len(rows)), parameters)
        return [_inserted(row) for row in found.fetchall()]

    def insert_unkeyed(self, row: dict[str, Any]) -> int:
        cursor = self._connection.execute(_SQLITE_INSERT + " RETURNING id", self._values(row))
        return int(cursor.fetchone()[0])


def _pg_type(column: Any) -> str:
    kind = type(column.type).__name__
    return {"DateTime": "timestamptz", "Integer": "int4", "Boolean": "bool"}.get(
        kind, "bytea" if kind == "LargeBinary" else "text"
    )


_PG_UNNEST = ", ".join(f"${n}::{_pg_type(c)}[]" for n, c in enumerate(_COLUMNS, start=1))
_PG_SAME_SENDER = _SAME_SENDER_SQL.format(
    "u.control_id", "coalesce(u.sending_application, '')", "coalesce(u.sending_facility, '')"
)
_PG_SELECTED = ", ".join(
    f"(u.control_id_reused OR {_PG_SAME_SENDER})" if name == "control_id_reused" else f"u.{name}"
    for name in _COLUMN_NAMES
)
_PG_INSERT_KEYED = (
    f"INSERT INTO {_t.name} ({_NAMES}) SELECT {_PG_SELECTED} FROM unnest({_PG_UNNEST}) "
    f"AS u({_NAMES}){_ON_CONFLICT} RETURNING id, {', '.join(_DEDUP)}, control_id_reused"
)
_PG_INSERT_ONE = (
    f"INSERT INTO {_t.name} ({_NAMES}) VALUES "
    f"({', '.join(f'${n}' for n in range(1, len(_COLUMNS) + 1))}) RETURNING id"
)
_PG_EXISTING = (
    f"SELECT {', '.join(_EXISTING_COLUMNS)} FROM {_t.name} WHERE control_id = ANY($1::text[])"
)


class AsyncpgInboxSql:
    """The statements on an asyncpg connection; a whole group is inserted with one ``unnest``."""

    def __init__(self, connection: Any) -> None:
        self._connection = connection

    async def existing(self, control_ids: set[str]) -> Sequence[ExistingRow]:
        if not control_ids:
            return []
        rows = await self._connection.fetch(_PG_EXISTING, sorted(control_ids))
        return [tuple(row) for row in rows]

    async def insert_keyed(self, rows: list[dict[str, Any]]) -> list[Inserted]:
        arrays = [[row[name] for row in rows] for name in _COLUMN_NAMES]
        found = await self._connection.fetch(_PG_INSERT_KEYED, *arrays)
        return [_inserted(row) for row in found]

    async def insert_unkeyed(self, row: dict[str, Any]) -> int:
        return int(
            await self._connection.fetchval(_PG_INSERT_ONE, *(row[c.name] for c in _COLUMNS))
        )
