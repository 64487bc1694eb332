"""Cases changed through the API: read, list, and write with optimistic concurrency. I/O.

A change made through the API lands in the same rows the worker maintains, in one transaction and
through the same function (:func:`~cm_fhir.store.case_writes.commit_case_changes`): the ``cases``
projection (its ``version`` is the ETag), the case's ``fhir_resources`` (what the facade serves),
an ``outbox`` row per endpoint with the transaction Bundle (unless the Bundle is the one last
enqueued), one ``trace`` row (so the facade's Provenance shows API changes too) and, when the
worker's patient state holds the case, that state document, so the next ADT event builds on
the changed case instead of reverting it.

Lock order is the worker's: patient states first (:func:`~cm_fhir.store.cases.lock_states`),
then the case row (``FOR UPDATE`` on PostgreSQL; SQLite transactions begin ``IMMEDIATE``).
Functions take a synchronous :class:`~sqlalchemy.Connection` and run in the caller's transaction
(the API calls them through ``AsyncConnection.run_sync``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Select, select

from cm_fhir.domain import Case
from cm_fhir.errors import DomainError, RecordNotFound, RecordVersionMismatch
from cm_fhir.mapping.registry import MappingRegistry
from cm_fhir.store.case_tables import cases
from cm_fhir.store.case_writes import (
    DEFAULT_ROUTES,
    CaseChanges,
    OutboxRoute,
    Placement,
    build_case,
    commit_case_changes,
)
from cm_fhir.store.cases import StateRow, lock_states, row_resolver, write_states
from cm_fhir.store.sync_state import SyncRecord
from cm_fhir.store.trace import TraceRecord
from cm_fhir.workflow import PatientState, TraceEntry
from cm_fhir.workflow.facts import patient_key

__all__ = [
    "CaseFilter",
    "StoredCase",
    "TraceSource",
    "change_case",
    "create_case",
    "file_in_state",
    "list_cases",
    "read_case",
]

Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class TraceSource:
    """What the trace row of a change names as its cause: the API (default), or an EHR's
    resource version (``rule`` ``ehr.status_back``, ``message_key`` from
    :func:`cm_fhir.facade.provenance.fhir_source_key`)."""

    rule: str = "api"
    event: str | None = None
    message_key: str | None = None
    inbox_message_id: int | None = None


@dataclass(frozen=True, slots=True)
class StoredCase:
    """A case as stored, with the version its ETag carries."""

    case: Case
    version: int
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class CaseFilter:
    """Filters of ``GET /api/cases``; None means "any". Dates compare with ``opened_at``."""

    patient: tuple[str | None, str] | None = None  # (system or None for any, value)
    status: str | None = None
    programme: str | None = None
    team: str | None = None
    owner: str | None = None
    opened_from: datetime | None = None
    opened_to: datetime | None = None
    updated_since: datetime | None = None


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _stored(row: Any) -> StoredCase:
    return StoredCase(
        Case.model_validate_json(row.case_json), int(row.version), _aware(row.updated_at)
    )


def read_case(connection: Connection, case_id: str) -> StoredCase | None:
    """The stored case, or None."""
    query = select(cases.c.case_json, cases.c.version, cases.c.updated_at).where(
        cases.c.case_id == case_id
    )
    row = connection.execute(query).first()
    return _stored(row) if row is not None else None


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _filtered(query: Select[Any], f: CaseFilter) -> Select[Any]:
    c = cases.c
    if f.patient is not None:
        system, value = f.patient
        if system is None:
            query = query.where(c.patient_key.like("%|" + _escape_like(value), escape="\\"))
        else:
            query = query.where(c.patient_key == f"{system}|{value}")
    for column, wanted in (
        (c.status, f.status),
        (c.programme, f.programme),
        (c.team, f.team),
        (c.owner, f.owner),
    ):
        if wanted is not None:
            query = query.where(column == wanted)
    if f.opened_from is not None:
        query = query.where(c.opened_at >= f.opened_from)
    if f.opened_to is not None:
        query = query.where(c.opened_at < f.opened_to)
    if f.updated_since is not None:
        query = query.where(c.updated_at >= f.updated_since)
    return query


def list_cases(
    connection: Connection, f: CaseFilter, *, limit: int, after: str | None = None
) -> tuple[list[StoredCase], bool]:
    """Cases matching ``f`` in case-id order, after ``after``; and whether more follow."""
    columns = (cases.c.case_id, cases.c.case_json, cases.c.version, cases.c.updated_at)
    query = _filtered(select(*columns), f)
    if after is not None:
        query = query.where(cases.c.case_id > after)
    rows = connection.execute(query.order_by(cases.c.case_id).limit(limit + 1)).all()
    return [_stored(r) for r in rows[:limit]], len(rows) > limit


# -- writes ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Placement:
    """Where a case lives: its row's patient key, team and owner, and the state holding it."""

    patient_key: str
    team: str | None
    owner: str | None
    last_bundle: str | None
    documents: dict[str, PatientState]


def _holding_states(rows: dict[str, StateRow], case_id: str) -> dict[str, PatientState]:
    out = {}
    for key, row in rows.items():
        if row.document is not None and row.alias_of is None:
            state = PatientState.model_validate_json(row.document)
            if state.case(case_id) is not None:
                out[key] = state
    return out


def _write(
    connection: Connection,
    case: Case,
    registry: MappingRegistry,
    place: _Placement,
    *,
    now: datetime,
    action: str,
    target: str | None,
    routes: Sequence[OutboxRoute],
    sync: Sequence[SyncRecord] = (),
    source: TraceSource | None = None,
) -> None:
    changes = CaseChanges(sync=list(sync))
    hashes: dict[str, str | None] = {case.id: place.last_bundle}
    changes.add_case(
        build_case(case, registry), Placement(place.patient_key, place.team, place.owner), hashes
    )
    source = source or TraceSource()
    trace = TraceEntry(
        rule=source.rule, event=source.event, action=action, case_id=case.id, target=target
    )
    changes.trace.append(
        TraceRecord(source.inbox_message_id, place.patient_key, trace, source.message_key)
    )
    for key, state in place.documents.items():
        cases_after = tuple(case if c.id == case.id else c for c in state.cases)
        changes.states[key] = state.model_copy(update={"cases": cases_after}).model_dump_json()
    commit_case_changes(connection, changes, now, routes=routes)


def create_case(
    connection: Connection,
    case: Case,
    registry: MappingRegistry,
    now: datetime,
    *,
    routes: Sequence[OutboxRoute] = DEFAULT_ROUTES,
    in_state: bool = False,
    source: TraceSource | None = None,
) -> StoredCase:
    """Store a new case (DomainError, answered 409, if the id is taken).

    With ``in_state``, the case is also filed in its patient's state document (created if the
    patient has none; through an alias, the document it points at), so events the workflow
    applies later see it: a payer case opened by a prior-authorization request takes the member's
    admission and discharge notifications.
    """
    key = patient_key(case.patient)
    documents = _with_case(connection, case) if in_state else {}
    if read_case(connection, case.id) is not None:
        raise DomainError(f"case '{case.id}' already exists")
    team = case.care_team.id if case.care_team is not None else None
    place = _Placement(key, team, None, None, documents)
    _write(
        connection,
        case,
        registry,
        place,
        now=now,
        action="case.create",
        target=None,
        routes=routes,
        source=source,
    )
    return _must_read(connection, case.id)


def _with_case(connection: Connection, case: Case) -> dict[str, PatientState]:
    """The patient's state document (locked; through an alias, the one it points at; created
    if the patient has none) with ``case`` filed in it, by the key it is filed under; nothing
    when the case is filed there already."""
    key = patient_key(case.patient)
    rows = lock_states(connection, [key])
    filed = row_resolver(rows)(key)  # a key linked to another (merged, a member's id)
    row = rows.get(filed)
    state = (
        PatientState.model_validate_json(row.document)
        if row is not None and row.document is not None
        else PatientState(patient_keys=(filed,), patient=case.patient)
    )
    if state.case(case.id) is not None:
        return {}
    return {filed: state.model_copy(update={"cases": (*state.cases, case)})}


def file_in_state(connection: Connection, case_id: str, now: datetime) -> None:
    """File a stored case in its patient's state document if it is not there (a case created
    through the API is not), so an event the worker applies to it finds it: a payer's decision
    on one of its reviews."""
    stored = read_case(connection, case_id)
    if stored is None:
        raise RecordNotFound(f"case '{case_id}' does not exist")
    documents = _with_case(connection, stored.case)
    if documents:
        write_states(connection, {k: d.model_dump_json() for k, d in documents.items()}, {}, now)


def _lock_case_row(connection: Connection, case_id: str) -> Any:
    columns = (cases.c.patient_key, cases.c.team, cases.c.owner, cases.c.version)
    query = select(*columns, cases.c.last_bundle_sha256, cases.c.case_json).where(
        cases.c.case_id == case_id
    )
    if connection.dialect.name == "postgresql":
        query = query.with_for_update()
    return connection.execute(query).first()


def change_case(
    connection: Connection,
    case_id: str,
    change: Callable[[Case], Case],
    registry: MappingRegistry,
    *,
    expected_version: int | None,
    now: datetime,
    action: str,
    target: str | None = None,
    routes: Sequence[OutboxRoute] = DEFAULT_ROUTES,
    sync: Sequence[SyncRecord] = (),
    source: TraceSource | None = None,
) -> StoredCase:
    """Apply ``change`` (pure domain logic) to the current case and store the result.

    It commits through the one write path (:func:`~cm_fhir.store.case_writes.commit_case_changes`)
    with the outbox ``routes``; ``sync`` records what an endpoint holds, in the same transaction
    (a Task status read back from the EHR).

    RecordNotFound for an unknown case; RecordVersionMismatch when ``expected_version``
    (the If-Match ETag) is not the stored version. The read, the change and the writes happen
    under the locks, so two concurrent changes never lose one another. A change that changes
    nothing writes nothing.
    """
    head = read_case(connection, case_id)
    if head is None:
        raise RecordNotFound(f"case '{case_id}' does not exist")
    states = lock_states(connection, [patient_key(head.case.patient)])
    row = _lock_case_row(connection, case_id)
    if row is None:
        raise RecordNotFound(f"case '{case_id}' does not exist")
    if expected_version is not None and int(row.version) != expected_version:
        raise RecordVersionMismatch(
            f"case '{case_id}' is at version {row.version}, not {expected_version}"
        )
    current = Case.model_validate_json(row.case_json)
    changed = change(current)
    if changed.id != case_id or changed.patient != current.patient:
        raise DomainError("a change cannot alter the case id or the patient")
    if changed == current:
        return _must_read(connection, case_id)
    documents = _holding_states(states, case_id)
    team = row.team
    for state in documents.values():
        team = next((v.team for v in state.visits if v.case_id == case_id), team)
    place = _Placement(row.patient_key, team, row.owner, row.last_bundle_sha256, documents)
    _write(
        connection,
        changed,
        registry,
        place,
        now=now,
        action=action,
        target=target,
        routes=routes,
        sync=sync,
        source=source,
    )
    return _must_read(connection, case_id)


def _must_read(connection: Connection, case_id: str) -> StoredCase:
    stored = read_case(connection, case_id)
    if stored is None:
        raise RecordNotFound(f"case '{case_id}' does not exist")
    return stored
