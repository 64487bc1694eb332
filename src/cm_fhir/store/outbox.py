"""The outbox: transaction Bundles still to write to each FHIR endpoint. I/O.

Rows are enqueued by the one write path (:mod:`cm_fhir.store.case_writes`) in the transaction
that commits the case, one per endpoint, so a write is never lost and never made for a state
that was rolled back. Each row carries its case id, patient key, the case's business identifier,
every resource's business identifier and the Bundle (canonical JSON, conditional writes by
business identifier, so sending it twice creates nothing new).

Delivery (the ``sync`` worker, :mod:`cm_fhir.sync`) claims work per patient and endpoint:
:func:`claim_patients` picks ``pending`` rows that are the oldest pending row of their patient at
their endpoint, due (``next_attempt_at``) and not leased, locked ``FOR UPDATE SKIP LOCKED`` on
PostgreSQL; it leases them and the patient's later pending rows (``lease_until``,
``leased_by``), so one patient's writes go out in order and by one worker at a time, while other
patients go on. Every Bundle is a whole snapshot of its case, so only the newest pending Bundle
of each case is sent and the older ones end ``superseded``. A row with an ``operation`` is a
message (a payer notification, a PAS request) posted to that operation: each is sent, in order,
none supersedes another. :func:`settle_sent`,
:func:`settle_failed` (non-retryable: the endpoint's OperationOutcome is kept and the patient's
other rows go on) and :func:`settle_retry` (back off; the patient waits) end a lease.
Functions run in the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Connection, and_, exists, func, select, update
from sqlalchemy.orm import aliased

from cm_fhir.store.case_tables import OutboxState, cases, outbox
from cm_fhir.store.outbox_signal import mark_enqueued
from cm_fhir.store.sync_state import SyncKey, forget_sent

__all__ = [
    "DEFAULT_ENDPOINT",
    "CaseWrite",
    "OutboxEntry",
    "PatientWork",
    "claim_patients",
    "enqueue",
    "last_bundle_hashes",
    "mark_for_resend",
    "release",
    "settle_failed",
    "settle_retry",
    "settle_sent",
]

#: The endpoint ``--ehr-url`` configures, and where Bundles wait when none is configured.
DEFAULT_ENDPOINT = "default"
_PENDING = OutboxState.PENDING.value


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One Bundle to enqueue for one endpoint."""

    case_id: str
    patient_key: str
    inbox_message_id: int | None
    case_identifier: str
    identifiers: tuple[str, ...]
    bundle_sha256: str
    bundle: bytes
    endpoint: str = DEFAULT_ENDPOINT
    operation: str | None = None  # a message posted to this operation; None: a case write


@dataclass(frozen=True, slots=True)
class CaseWrite:
    """The newest pending Bundle of one case, and the older rows it stands for."""

    id: int  # the row whose Bundle is sent
    case_id: str
    case_identifier: str
    identifiers: tuple[str, ...]
    bundle_sha256: str
    bundle: bytes
    attempts: int
    older: tuple[int, ...]  # pending rows of the case this Bundle supersedes
    created_at: datetime | None = None  # of the oldest row it stands for (delivery lag)
    operation: str | None = None  # a message posted to this operation; None: a case write

    @property
    def row_ids(self) -> tuple[int, ...]:
        return (*self.older, self.id)


@dataclass(frozen=True, slots=True)
class PatientWork:
    """One patient's leased rows at one endpoint: the cases to write, in order."""

    endpoint: str
    patient_key: str
    writes: tuple[CaseWrite, ...]


def last_bundle_hashes(connection: Connection, case_ids: Iterable[str]) -> dict[str, str | None]:
    """The hash of the last Bundle enqueued for each known case."""
    ids = sorted(set(case_ids))
    if not ids:
        return {}
    query = select(cases.c.case_id, cases.c.last_bundle_sha256).where(cases.c.case_id.in_(ids))
    return {row.case_id: row.last_bundle_sha256 for row in connection.execute(query)}


def enqueue(connection: Connection, entries: Sequence[OutboxEntry], now: datetime) -> None:
    """Insert the entries as ``pending`` rows (one executemany); the sync role is woken when the
    caller commits (:func:`~cm_fhir.store.outbox_signal.mark_enqueued`)."""
    if not entries:
        return
    mark_enqueued(connection)
    connection.execute(
        outbox.insert(),
        [
            {
                "created_at": now,
                "updated_at": now,
                "state": _PENDING,
                "attempts": 0,
                "case_id": e.case_id,
                "patient_key": e.patient_key,
                "inbox_message_id": e.inbox_message_id,
                "case_identifier": e.case_identifier,
                "identifiers": orjson.dumps(list(e.identifiers)).decode(),
                "bundle_sha256": e.bundle_sha256,
                "bundle": e.bundle,
                "endpoint": e.endpoint,
                "operation": e.operation,
            }
            for e in entries
        ],
    )


def _heads(connection: Connection, endpoint: str, now: datetime, limit: int) -> list[str]:
    """Patient keys whose oldest pending row at ``endpoint`` is due and free."""
    o = outbox.c
    earlier = aliased(outbox)
    blocked = exists().where(
        and_(
            earlier.c.endpoint == o.endpoint,
            earlier.c.patient_key == o.patient_key,
            earlier.c.state == _PENDING,
            earlier.c.id < o.id,
        )
    )
    query = (
        select(o.id, o.patient_key)
        .where(
            o.endpoint == endpoint,
            o.state == _PENDING,
            (o.next_attempt_at.is_(None)) | (o.next_attempt_at <= now),
            (o.lease_until.is_(None)) | (o.lease_until < now),
            ~blocked,
        )
        .order_by(o.id)
        .limit(limit)
    )
    if connection.dialect.name == "postgresql":
        query = query.with_for_update(of=outbox, skip_locked=True)
    return [row.patient_key for row in connection.execute(query)]


def claim_patients(
    connection: Connection,
    endpoint: str,
    worker: str,
    now: datetime,
    *,
    lease: timedelta,
    limit: int = 20,
    per_patient: int = 200,
) -> list[PatientWork]:
    """Lease the pending rows of up to ``limit`` patients at ``endpoint`` (caller commits)."""
    keys = _heads(connection, endpoint, now, limit)
    if not keys:
        return []
    o = outbox.c
    query = (
        select(
            o.id,
            o.patient_key,
            o.case_id,
            o.case_identifier,
            o.identifiers,
            o.bundle_sha256,
            o.bundle,
            o.attempts,
            o.created_at,
            o.operation,
        )
        .where(o.endpoint == endpoint, o.state == _PENDING, o.patient_key.in_(keys))
        .order_by(o.id)
    )
    rows: dict[str, list[Any]] = {k: [] for k in keys}
    for row in connection.execute(query).all():
        chain = rows[row.patient_key]
        if len(chain) < per_patient:
            chain.append(row)
    leased = [int(r.id) for chain in rows.values() for r in chain]
    for start in range(0, len(leased), 500):
        connection.execute(
            update(outbox)
            .where(o.id.in_(leased[start : start + 500]))
            .values(lease_until=now + lease, leased_by=worker[:64], updated_at=now)
        )
    return [_patient_work(endpoint, key, chain) for key, chain in rows.items() if chain]


def _patient_work(endpoint: str, key: str, chain: list[Any]) -> PatientWork:
    newest: dict[str, Any] = {}
    older: dict[str, list[int]] = {}
    first: dict[str, datetime] = {}
    order: list[str] = []
    for row in chain:
        # a message is its own write: only a case's snapshots stand for one another
        case_id = str(row.case_id) if row.operation is None else f"{row.case_id}#{row.id}"
        if case_id in newest:
            older[case_id].append(int(newest[case_id].id))
        else:
            order.append(case_id)
            older[case_id] = []
            first[case_id] = row.created_at
        newest[case_id] = row
    writes = []
    for case_id in order:
        r = newest[case_id]
        writes.append(
            CaseWrite(
                id=int(r.id),
                case_id=str(r.case_id),
                case_identifier=r.case_identifier,
                identifiers=tuple(orjson.loads(r.identifiers)),
                bundle_sha256=r.bundle_sha256,
                bundle=r.bundle,
                attempts=int(r.attempts),
                older=tuple(older[case_id]),
                created_at=first[case_id],
                operation=r.operation,
            )
        )
    return PatientWork(endpoint, key, tuple(writes))


def _end_lease(connection: Connection, ids: Sequence[int], now: datetime, **values: object) -> None:
    if ids:
        connection.execute(
            update(outbox)
            .where(outbox.c.id.in_(list(ids)))
            .values(lease_until=None, leased_by=None, updated_at=now, **values)
        )


def settle_sent(connection: Connection, writes: Sequence[CaseWrite], now: datetime) -> None:
    """The writes are on the server: their rows are ``sent``, the rows they stood for
    ``superseded``."""
    older = [i for w in writes for i in w.older]
    for start in range(0, len(older), 500):
        _end_lease(connection, older[start : start + 500], now, state=OutboxState.SUPERSEDED.value)
    sent = [w.id for w in writes]
    for start in range(0, len(sent), 500):
        _end_lease(
            connection,
            sent[start : start + 500],
            now,
            state=OutboxState.SENT.value,
            sent_at=now,
            attempts=outbox.c.attempts + 1,
            last_error=None,
        )


def settle_failed(
    connection: Connection, write: CaseWrite, error: str, outcome: bytes | None, now: datetime
) -> None:
    """The endpoint refused the write for good: ``failed``, with its OperationOutcome."""
    _end_lease(connection, write.older, now, state=OutboxState.SUPERSEDED.value)
    _end_lease(
        connection,
        [write.id],
        now,
        state=OutboxState.FAILED.value,
        attempts=write.attempts + 1,
        last_error=error[:500],
        last_outcome=outcome.decode() if outcome is not None else None,
        reason=error[:500],
    )


def settle_retry(
    connection: Connection,
    writes: Sequence[CaseWrite],
    error: str,
    outcome: bytes | None,
    now: datetime,
    next_attempt: datetime,
) -> None:
    """Not written yet: the rows stay ``pending`` until ``next_attempt`` (the patient waits)."""
    ids = [i for w in writes for i in w.row_ids]
    if not ids:
        return
    _end_lease(
        connection,
        ids,
        now,
        next_attempt_at=next_attempt,
        attempts=outbox.c.attempts + 1,
        last_error=error[:500],
        last_outcome=outcome.decode() if outcome is not None else None,
    )


def release(connection: Connection, writes: Sequence[CaseWrite], now: datetime) -> None:
    """Give leased rows back untouched (a stop in the middle of a patient's writes)."""
    _end_lease(connection, [i for w in writes for i in w.row_ids], now)


def mark_for_resend(
    connection: Connection,
    now: datetime,
    *,
    every_state: bool = False,
    endpoint: str | None = None,
    case_id: str | None = None,
    since: datetime | None = None,
) -> int:
    """Make the newest row of each matching case and endpoint ``pending`` again, due now.

    Without ``every_state`` only cases whose newest row ``failed`` are sent again; with it, every
    matching case (a resend after restoring an EHR's database, say), every resource of it: what
    the endpoint acknowledged is forgotten (:func:`~cm_fhir.store.sync_state.forget_sent`).
    Only the newest Bundle of a case is sent, so an older snapshot never overwrites a newer one;
    every matching message is.
    The number of rows marked.
    """
    o = outbox.c
    newest = (
        select(func.max(o.id).label("id"))
        .where(o.operation.is_(None))
        .group_by(o.case_id, o.endpoint)
    )
    messages = select(o.id).where(o.operation.is_not(None))  # each message is its own
    filters = []
    if endpoint is not None:
        filters.append(o.endpoint == endpoint)
    if case_id is not None:
        filters.append(o.case_id == case_id)
    if since is not None:
        filters.append(o.created_at >= since)
    newest, messages = newest.where(*filters), messages.where(*filters)
    ids = [row.id for query in (newest, messages) for row in connection.execute(query)]
    marked = 0
    for start in range(0, len(ids), 500):
        statement = (
            update(outbox)
            .where(o.id.in_(ids[start : start + 500]))
            .values(
                state=_PENDING,
                next_attempt_at=None,
                lease_until=None,
                leased_by=None,
                attempts=0,
                updated_at=now,
            )
        )
        if not every_state:
            statement = statement.where(o.state == OutboxState.FAILED.value)
        marked += connection.execute(statement).rowcount
    if marked:
        mark_enqueued(connection)
    if every_state and ids:  # everything again, also what the endpoint acknowledged unchanged
        found = connection.execute(select(o.endpoint, o.identifiers).where(o.id.in_(ids)))
        forget_sent(
            connection,
            (
                SyncKey(row.endpoint, *text.split("|", 1))
                for row in found
                for text in orjson.loads(row.identifiers)
            ),
        )
    return marked
