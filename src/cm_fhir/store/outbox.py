"""The outbox: transaction Bundles of FHIR writes still to make, one row per changed case. I/O.

The worker enqueues in the same transaction that commits the case state, so a write is never
lost and never made for a state that was rolled back. Each row carries its case id, the case's
business identifier (the EpisodeOfCare's ``system|value``), every resource's business identifier
and the Bundle (canonical JSON, conditional writes, so sending it twice creates nothing new). A
Bundle identical to the last one enqueued for its case is not enqueued again:
:func:`last_bundle_hashes` reads the hash kept on the ``cases`` row. The sync worker (next step)
takes ``pending`` rows in ``id`` order. Functions run in the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import orjson
from sqlalchemy import Connection, select

from cm_fhir.store.case_tables import OutboxState, cases, outbox

__all__ = ["OutboxEntry", "PendingWrite", "enqueue", "last_bundle_hashes", "pending_writes"]


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One Bundle to enqueue."""

    case_id: str
    patient_key: str
    inbox_message_id: int | None
    case_identifier: str
    identifiers: tuple[str, ...]
    bundle_sha256: str
    bundle: bytes


@dataclass(frozen=True, slots=True)
class PendingWrite:
    """An outbox row waiting for the sync worker."""

    id: int
    case_id: str
    case_identifier: str
    identifiers: tuple[str, ...]
    bundle: bytes


def last_bundle_hashes(connection: Connection, case_ids: Iterable[str]) -> dict[str, str | None]:
    """The hash of the last Bundle enqueued for each known case."""
    ids = sorted(set(case_ids))
    if not ids:
        return {}
    query = select(cases.c.case_id, cases.c.last_bundle_sha256).where(cases.c.case_id.in_(ids))
    return {row.case_id: row.last_bundle_sha256 for row in connection.execute(query)}


def enqueue(connection: Connection, entries: Sequence[OutboxEntry], now: datetime) -> None:
    """Insert the entries as ``pending`` rows (one executemany)."""
    if not entries:
        return
    connection.execute(
        outbox.insert(),
        [
            {
                "created_at": now,
                "updated_at": now,
                "state": OutboxState.PENDING.value,
                "attempts": 0,
                "case_id": e.case_id,
                "patient_key": e.patient_key,
                "inbox_message_id": e.inbox_message_id,
                "case_identifier": e.case_identifier,
                "identifiers": orjson.dumps(list(e.identifiers)).decode(),
                "bundle_sha256": e.bundle_sha256,
                "bundle": e.bundle,
            }
            for e in entries
        ],
    )


def pending_writes(connection: Connection, limit: int = 100) -> list[PendingWrite]:
    """The oldest pending rows, in the order they must be sent."""
    query = (
        select(
            outbox.c.id,
            outbox.c.case_id,
            outbox.c.case_identifier,
            outbox.c.identifiers,
            outbox.c.bundle,
        )
        .where(outbox.c.state == OutboxState.PENDING.value)
        .order_by(outbox.c.id)
        .limit(limit)
    )
    return [
        PendingWrite(
            r.id, r.case_id, r.case_identifier, tuple(orjson.loads(r.identifiers)), r.bundle
        )
        for r in connection.execute(query)
    ]
