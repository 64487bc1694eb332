"""The worker's side of the inbox: claim rows per patient in order, settle them, replay. I/O.

:func:`claim_batch` takes, in one transaction, the *heads* (the oldest ``received`` row of each
patient that has no older ``received`` or ``dead_lettered`` row) locked ``FOR UPDATE SKIP LOCKED``
on PostgreSQL, then the later ``received`` rows of those patients. Holding the head's lock is what
keeps other workers off a patient: their heads query sees our head still ``received`` and skips
the patient's later rows. SQLite has one writer (``BEGIN IMMEDIATE``) and runs the same statements.

A dead-lettered row blocks its patient's later rows until :func:`replay_dead_letter` puts it back;
those rows say so in their ``reason`` (``waits behind dead letter #id``, never message content).
:func:`replay` puts rows back to ``received`` so the worker processes them again.
:func:`message_key` names an inbox message in the trace and in Provenance.

Functions taking a :class:`~sqlalchemy.Connection` run inside the caller's transaction (the async
worker calls them through ``run_sync``); the ``async`` ones open their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    String,
    and_,
    bindparam,
    cast,
    exists,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from cm_fhir.store.tables import InboxFormat, InboxState, inbox_messages

__all__ = [
    "WAITING_PREFIX",
    "ClaimedMessage",
    "InboxOutcome",
    "claim_batch",
    "claims_unchanged",
    "inbox_top",
    "mark_waiting",
    "message_key",
    "replay",
    "replay_dead_letter",
    "settle",
]

_t = inbox_messages
_RECEIVED = InboxState.RECEIVED.value
_DEAD = InboxState.DEAD_LETTERED.value
#: The reason of a row held back by an older dead letter of its patient.
WAITING_PREFIX = "waits behind dead letter #"


@dataclass(frozen=True, slots=True)
class ClaimedMessage:
    """One inbox row as the worker processes it (``raw`` is PHI)."""

    id: int
    patient_key: str | None
    raw: bytes
    received_at: datetime
    attempts: int
    sending_application: str | None = None
    sending_facility: str | None = None
    control_id: str | None = None
    format: str = InboxFormat.HL7V2.value
    """``hl7v2``, or ``fhir`` for a FHIR message Bundle (JSON)."""
    message_type: str | None = None

    @property
    def message_key(self) -> str:
        """The message's identity; see :func:`message_key`."""
        return message_key(
            self.sending_application, self.sending_facility, self.control_id, self.received_at
        )


def message_key(
    application: str | None, facility: str | None, control_id: str | None, received_at: datetime
) -> str:
    """Names one inbox message, stably: sender, control id as sent, and the receipt time (UTC).

    Senders reuse MSH-10, so the control id alone does not tell messages apart; with the sender
    and the moment the inbox committed it, it does. The receipt time is ISO 8601 with
    microseconds and ``Z``, e.g. ``ADTSYS|NORTHSIDE|MSG0001|2026-12-01T15:32:50.123456Z``.
    """
    at = _aware(received_at).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return f"{application or ''}|{facility or ''}|{control_id or ''}|{at}"


@dataclass(frozen=True, slots=True)
class InboxOutcome:
    """What processing did to one inbox row."""

    id: int
    state: InboxState
    reason: str | None = None


def _older(states: tuple[str, ...]) -> Any:
    older = _t.alias("older")
    return exists().where(
        and_(
            older.c.patient_key == _t.c.patient_key,
            older.c.state.in_(states),
            older.c.id < _t.c.id,
        )
    )


def _first_received() -> Any:
    """The oldest ``received`` row of each patient: one pass over the claim index."""
    first = _t.alias("first")
    return (
        select(func.min(first.c.id))
        .where(first.c.state == _RECEIVED, first.c.patient_key.is_not(None))
        .group_by(first.c.patient_key)
    )


_NOT_BEHIND_A_DEAD_LETTER = ~_older((_DEAD,))
# A head has no older received row of its patient (it is that patient's first received row, or
# it has no patient key) and no older dead letter.
_HEADS = (
    select(_t.c.id, _t.c.patient_key)
    .where(
        _t.c.state == _RECEIVED,
        or_(_t.c.patient_key.is_(None), _t.c.id.in_(_first_received())),
        _NOT_BEHIND_A_DEAD_LETTER,
    )
    .order_by(_t.c.id)
)
_COLUMNS = (
    _t.c.id,
    _t.c.patient_key,
    _t.c.raw,
    _t.c.received_at,
    _t.c.attempts,
    _t.c.sending_application,
    _t.c.sending_facility,
    _t.c.control_id,
    _t.c.format,
    _t.c.message_type,
)


_TOP = select(func.max(_t.c.id))


def inbox_top(connection: Connection) -> int:
    """The id of the newest inbox row (0 when empty): it grows while messages arrive."""
    return int(connection.execute(_TOP).scalar() or 0)


def claim_batch(
    connection: Connection, limit: int, retry_before: datetime | None = None
) -> list[ClaimedMessage]:
    """Claim up to ``limit`` rows, in ``id`` order; patients whose head we hold, whole.

    With ``retry_before``, a head that already failed (``attempts > 0``) is only taken again once
    its last attempt is older than that moment; its patient's later rows wait with it.
    """
    heads_query = _HEADS.limit(limit)
    if retry_before is not None:
        heads_query = heads_query.where(or_(_t.c.attempts == 0, _t.c.updated_at <= retry_before))
    if connection.dialect.name == "postgresql":
        heads_query = heads_query.with_for_update(skip_locked=True, of=_t)
    heads = connection.execute(heads_query).all()
    if not heads:
        return []
    head_ids = [row.id for row in heads]
    keys = sorted({row.patient_key for row in heads if row.patient_key is not None})
    condition: ColumnElement[bool] = _t.c.id.in_(head_ids)
    if keys:
        followers = and_(_t.c.patient_key.in_(keys), _NOT_BEHIND_A_DEAD_LETTER)
        condition = or_(condition, followers)
    query = (
        select(*_COLUMNS).where(_t.c.state == _RECEIVED, condition).order_by(_t.c.id).limit(limit)
    )
    return [
        ClaimedMessage(
            id=row.id,
            patient_key=row.patient_key,
            raw=row.raw,
            received_at=_aware(row.received_at),
            attempts=row.attempts,
            sending_application=row.sending_application,
            sending_facility=row.sending_facility,
            control_id=row.control_id,
            format=row.format,
            message_type=row.message_type,
        )
        for row in connection.execute(query)
    ]


def claims_unchanged(connection: Connection, rows: Sequence[ClaimedMessage]) -> bool:
    """Whether ``rows``, claimed in an earlier read, may still be processed as claimed: each is
    still ``received`` with the attempts it was claimed with, and no row of their patients before
    the last one claimed is ``received`` or dead-lettered besides them (a replay in between)."""
    if not rows:
        return True
    claimed = {r.id: r.attempts for r in rows}
    query = select(_t.c.id, _t.c.attempts).where(_t.c.id.in_(claimed), _t.c.state == _RECEIVED)
    if {row.id: row.attempts for row in connection.execute(query)} != claimed:
        return False
    last: dict[str, int] = {}
    for r in rows:
        if r.patient_key is not None:
            last[r.patient_key] = max(r.id, last.get(r.patient_key, 0))
    if not last:
        return True
    others = select(_t.c.id, _t.c.patient_key).where(
        _t.c.patient_key.in_(sorted(last)),
        _t.c.state.in_((_RECEIVED, _DEAD)),
        _t.c.id < max(last.values()),
    )
    return all(
        row.id in claimed or row.id > last[row.patient_key] for row in connection.execute(others)
    )


def _aware(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; the inbox stores UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


_SETTLE = (
    update(_t)
    .where(_t.c.id == bindparam("row_id"))
    .values(
        state=bindparam("new_state"),
        reason=bindparam("new_reason"),
        attempts=_t.c.attempts + 1,
        updated_at=bindparam("now"),
    )
)


def settle(connection: Connection, outcomes: Sequence[InboxOutcome], now: datetime) -> None:
    """Record each row's new state and reason, and count the attempt."""
    if not outcomes:
        return
    params = [
        {
            "row_id": o.id,
            "new_state": o.state.value,
            "new_reason": o.reason[:500] if o.reason else None,
            "now": now,
        }
        for o in outcomes
    ]
    connection.execute(_SETTLE, params)
    for outcome in outcomes:
        if outcome.state is InboxState.DEAD_LETTERED:
            _mark_followers(connection, outcome.id, now)


def _mark_followers(connection: Connection, dead_id: int, now: datetime) -> None:
    key = select(_t.c.patient_key).where(_t.c.id == dead_id).scalar_subquery()
    connection.execute(
        update(_t)
        .where(_t.c.state == _RECEIVED, _t.c.patient_key == key, _t.c.id > dead_id)
        .values(reason=f"{WAITING_PREFIX}{dead_id}", updated_at=now)
    )


def mark_waiting(connection: Connection, now: datetime) -> int:
    """Give rows that arrived behind a dead letter their ``waits behind`` reason; how many."""
    older = _t.alias("older")
    first_dead = (
        select(func.min(older.c.id))
        .where(
            older.c.patient_key == _t.c.patient_key,
            older.c.state == _DEAD,
            older.c.id < _t.c.id,
        )
        .scalar_subquery()
    )
    result = connection.execute(
        update(_t)
        .where(_t.c.state == _RECEIVED, _t.c.reason.is_(None), _older((_DEAD,)))
        .values(reason=literal(WAITING_PREFIX) + cast(first_dead, String), updated_at=now)
    )
    return int(result.rowcount)


async def replay(engine: AsyncEngine, ids: Sequence[int] | None = None) -> int:
    """Put rows (all when ``ids`` is None) back to ``received``; the worker redoes them.

    Processing is idempotent: the workflow recognises messages it has applied (same control id
    and content) and the outbox skips bundles identical to the last one of their case, so a
    replay adds trace rows but no resources, tasks or writes.
    """
    # A row whose raw bytes retention blanked cannot be processed again, and a row refused at
    # the door was never accepted (its sender was told to resend): neither goes back.
    statement = (
        update(_t)
        .where(_t.c.raw_purged_at.is_(None), _t.c.state != InboxState.REFUSED.value)
        .values(state=_RECEIVED, reason=None, attempts=0, updated_at=datetime.now(UTC))
    )
    if ids is not None:
        statement = statement.where(_t.c.id.in_(list(ids)))
    async with engine.begin() as connection:
        result = await connection.execute(statement)
    return int(result.rowcount)


async def replay_dead_letter(engine: AsyncEngine, dead_id: int) -> bool:
    """Put one dead letter back to ``received`` and release the rows waiting behind it."""
    now = datetime.now(UTC)
    async with engine.begin() as connection:
        result = await connection.execute(
            update(_t)
            .where(_t.c.id == dead_id, _t.c.state == _DEAD)
            .values(state=_RECEIVED, reason=None, attempts=0, updated_at=now)
        )
        if result.rowcount != 1:
            return False
        await connection.execute(
            update(_t)
            .where(_t.c.state == _RECEIVED, _t.c.reason == f"{WAITING_PREFIX}{dead_id}")
            .values(reason=None, updated_at=now)
        )
    return True
