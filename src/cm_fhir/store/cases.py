"""Patient state documents, the ``cases`` projection and the ``fhir_resources`` table. I/O.

:func:`lock_states` makes sure a row exists for every patient key (``INSERT ... ON CONFLICT DO
NOTHING``) and then reads them ``SELECT ... FOR UPDATE`` on PostgreSQL, in key order so that two
workers locking overlapping keys (an A40 names two patients) queue instead of deadlocking. Rows
with ``alias_of`` are keys merged into another patient; their target is locked too.
:func:`write_states`, :func:`upsert_cases` and :func:`sync_resources` write the results of a batch
with one statement each (executemany). Every function runs in the caller's transaction.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Table, and_, bindparam, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from cm_fhir.store.case_tables import cases, fhir_resources, patient_states

__all__ = [
    "CaseRow",
    "ResourceRow",
    "StateRow",
    "dialect_insert",
    "load_states",
    "lock_states",
    "member_filing",
    "resource_row",
    "row_resolver",
    "state_versions",
    "sync_resources",
    "upsert",
    "upsert_cases",
    "write_states",
]

Json = dict[str, Any]
_s = patient_states
_r = fhir_resources


@dataclass(frozen=True, slots=True)
class StateRow:
    """One ``patient_states`` row: a document, an alias, or an empty placeholder (new patient)."""

    patient_key: str
    alias_of: str | None
    document: str | None


@dataclass(frozen=True, slots=True)
class CaseRow:
    """The queryable projection of one case."""

    case_id: str
    patient_key: str
    status: str
    programme: str
    team: str | None
    owner: str | None
    opened_at: datetime
    closed_at: datetime | None
    last_bundle_sha256: str | None
    case_json: str


@dataclass(frozen=True, slots=True)
class ResourceRow:
    """One current FHIR resource of a case, with the columns the facade searches on."""

    resource_type: str
    id: str
    case_id: str
    identifier: str
    patient_identifier: str | None
    status: str | None
    content_sha256: str
    resource: str


def dialect_insert(connection: Connection, table: Table) -> Any:
    module = postgresql if connection.dialect.name == "postgresql" else sqlite
    return module.insert(table)


_UPSERTS: dict[tuple[str, str, tuple[str, ...]], Any] = {}


def upsert(
    connection: Connection, table: Table, keys: tuple[str, ...], columns: tuple[str, ...]
) -> Any:
    """``INSERT ... ON CONFLICT (keys) DO UPDATE`` setting ``columns`` from the new row and
    raising the row's version column (``version`` or ``version_id``), if it has one.

    Built once per dialect and shape: building it (the ``excluded`` alias and its columns) costs
    more than running it for a few rows.
    """
    cache_key = (connection.dialect.name, table.name, (*keys, "|", *columns))
    statement = _UPSERTS.get(cache_key)
    if statement is None:
        insert = dialect_insert(connection, table)
        update: dict[str, Any] = {c: getattr(insert.excluded, c) for c in columns}
        for version in ("version", "version_id"):
            if version in table.c and version not in columns:
                update[version] = table.c[version] + 1
        index = [table.c[k] for k in keys]
        statement = _UPSERTS[cache_key] = insert.on_conflict_do_update(
            index_elements=index, set_=update
        )
    return statement


def _read_states(connection: Connection, keys: Iterable[str], lock: bool) -> list[StateRow]:
    query = (
        select(_s.c.patient_key, _s.c.alias_of, _s.c.document)
        .where(_s.c.patient_key.in_(sorted(set(keys))))
        .order_by(_s.c.patient_key)
    )
    if lock and connection.dialect.name == "postgresql":
        query = query.with_for_update()
    return [StateRow(r.patient_key, r.alias_of, r.document) for r in connection.execute(query)]


def lock_states(connection: Connection, keys: Iterable[str]) -> dict[str, StateRow]:
    """Lock the states filed under ``keys`` and the keys they are aliases of."""
    found: dict[str, StateRow] = {}
    wanted = set(keys)
    while wanted:
        placeholders = dialect_insert(connection, _s).on_conflict_do_nothing(
            index_elements=[_s.c.patient_key]
        )
        connection.execute(placeholders, [{"patient_key": k} for k in sorted(wanted)])
        for row in _read_states(connection, wanted, lock=True):
            found[row.patient_key] = row
        wanted = {r.alias_of for r in found.values() if r.alias_of and r.alias_of not in found}
    return found


def member_filing(
    keys: Sequence[str], resolve: Callable[[str], str], filed: Callable[[str], bool]
) -> tuple[str, dict[str, str]]:
    """Where a payer's member, known by several keys (one per member id), is filed, and the
    aliases that link to it the keys holding nothing of their own.

    The member's state is the document the first key leads to (``resolve`` follows aliases,
    ``filed`` says whether a key holds a document), else the first key's. A key leading to
    another document keeps it: two states are never merged here."""
    primary = next((resolve(k) for k in keys if filed(resolve(k))), keys[0])
    aliases = {k: primary for k in keys if k != primary and resolve(k) == k and not filed(k)}
    return primary, aliases


def row_resolver(rows: Mapping[str, StateRow]) -> Callable[[str], str]:
    """``resolve`` over locked or loaded rows: the key a key's document is filed under."""

    def resolve(key: str) -> str:
        seen = {key}
        while (row := rows.get(key)) is not None and row.alias_of and row.alias_of not in seen:
            key = row.alias_of
            seen.add(key)
        return key

    return resolve


def load_states(connection: Connection, keys: Iterable[str]) -> dict[str, StateRow]:
    """Read (without locking or creating rows) the states under ``keys`` and their aliases."""
    found: dict[str, StateRow] = {}
    wanted = set(keys)
    while wanted:
        for row in _read_states(connection, wanted, lock=False):
            found[row.patient_key] = row
        wanted = {r.alias_of for r in found.values() if r.alias_of and r.alias_of not in found}
    return found


def state_versions(connection: Connection, keys: Iterable[str]) -> dict[str, int]:
    """The version of each ``patient_states`` row filed under ``keys`` (absent keys: no entry).

    Every write of a row raises its version, so two equal answers mean nothing was written in
    between (the worker's read half of a batch on SQLite checks this before its write half).
    """
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    query = select(_s.c.patient_key, _s.c.version).where(_s.c.patient_key.in_(wanted))
    return {row.patient_key: row.version for row in connection.execute(query)}


def write_states(
    connection: Connection,
    documents: dict[str, str],
    aliases: dict[str, str],
    now: datetime,
    close_checks: Mapping[str, datetime | None] | None = None,
) -> None:
    """File each document under its key and each alias key as pointing at its patient.

    ``close_checks`` gives each document's next closing check (``close_check_at``); a caller
    that does not compute it (the case API) leaves it None and the document is checked at once.
    """
    checks = close_checks if close_checks is not None else dict.fromkeys(documents, now)
    rows = [
        {
            "patient_key": k,
            "alias_of": None,
            "document": d,
            "version": 1,
            "updated_at": now,
            "close_check_at": checks.get(k),
        }
        for k, d in documents.items()
    ]
    rows += [
        {
            "patient_key": k,
            "alias_of": a,
            "document": None,
            "version": 1,
            "updated_at": now,
            "close_check_at": None,
        }
        for k, a in aliases.items()
        if k not in documents
    ]
    if not rows:
        return
    statement = upsert(
        connection,
        _s,
        ("patient_key",),
        ("alias_of", "document", "updated_at", "close_check_at"),
    )
    connection.execute(statement, rows)


def _utc(value: datetime) -> datetime:
    """In UTC: SQLite stores a datetime's wall time without its offset."""
    return value.astimezone(UTC) if value.tzinfo is not None else value


def upsert_cases(connection: Connection, rows: Sequence[CaseRow], now: datetime) -> None:
    """Insert or update the ``cases`` rows (the version counts the updates; times in UTC)."""
    if not rows:
        return
    values = [
        {
            "case_id": r.case_id,
            "patient_key": r.patient_key,
            "status": r.status,
            "programme": r.programme,
            "team": r.team,
            "owner": r.owner,
            "opened_at": _utc(r.opened_at),
            "closed_at": _utc(r.closed_at) if r.closed_at is not None else None,
            "updated_at": now,
            "version": 1,
            "last_bundle_sha256": r.last_bundle_sha256,
            "case_json": r.case_json,
        }
        for r in rows
    ]
    columns = tuple(c for c in values[0] if c not in ("case_id", "version"))
    connection.execute(upsert(connection, cases, ("case_id",), columns), values)


def resource_row(
    case_id: str, resource: Json, content: bytes, patient_identifier: str | None
) -> ResourceRow:
    """One ``fhir_resources`` row; ``content`` is the resource as it will be served."""
    first = (resource.get("identifier") or [{}])[0]
    # Goal carries its status as lifecycleStatus; the column serves the facade's status search.
    status = resource.get("status", resource.get("lifecycleStatus"))
    return ResourceRow(
        resource_type=str(resource["resourceType"]),
        id=str(resource["id"]),
        case_id=case_id,
        identifier=f"{first.get('system', '')}|{first.get('value', '')}",
        patient_identifier=patient_identifier,
        status=str(status) if isinstance(status, str) else None,
        content_sha256=hashlib.sha256(content).hexdigest(),
        resource=content.decode(),
    )


_DELETE_RESOURCE = delete(_r).where(
    and_(_r.c.resource_type == bindparam("rtype"), _r.c.id == bindparam("rid"))
)


def sync_resources(
    connection: Connection, current: dict[str, list[ResourceRow]], now: datetime
) -> tuple[int, int]:
    """Make ``fhir_resources`` hold exactly ``current`` for these cases; (written, removed).

    Unchanged resources keep their ``version_id`` and ``last_updated``; changed ones get the next
    version; resources a case no longer has are deleted.
    """
    if not current:
        return 0, 0
    existing = {
        (row.resource_type, row.id): row.content_sha256
        for row in connection.execute(
            select(_r.c.resource_type, _r.c.id, _r.c.content_sha256).where(
                _r.c.case_id.in_(sorted(current))
            )
        )
    }
    wanted = {(r.resource_type, r.id): r for rows in current.values() for r in rows}
    changed = [r for key, r in wanted.items() if existing.get(key) != r.content_sha256]
    removed = [key for key in existing if key not in wanted]
    if changed:
        columns = ("case_id", "identifier", "patient_identifier", "status", "content_sha256")
        statement = upsert(
            connection, _r, ("resource_type", "id"), (*columns, "resource", "last_updated")
        )
        connection.execute(
            statement,
            [
                {
                    "resource_type": r.resource_type,
                    "id": r.id,
                    "case_id": r.case_id,
                    "identifier": r.identifier,
                    "patient_identifier": r.patient_identifier,
                    "status": r.status,
                    "version_id": 1,
                    "last_updated": now,
                    "content_sha256": r.content_sha256,
                    "resource": r.resource,
                }
                for r in changed
            ],
        )
    if removed:
        connection.execute(_DELETE_RESOURCE, [{"rtype": t, "rid": i} for t, i in removed])
    return len(changed), len(removed)
