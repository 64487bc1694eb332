"""Delivery of the outbox to one FHIR endpoint: claim, write, settle. I/O.

:meth:`EndpointDelivery.run_once` leases the pending rows of up to ``batch_patients`` patients
(:func:`~cm_fhir.store.outbox.claim_patients`), reads what the endpoint holds of them at once,
looks their Patients up (:mod:`cm_fhir.sync.patients`), and writes in rounds: one case per
patient per round, so each patient's cases go in order. One case write is the case's newest
Bundle, adapted to the endpoint (:class:`~cm_fhir.sync.case_send.CaseSender`). Up to
``cases_per_transaction`` cases of different patients go in one transaction through
:meth:`~cm_fhir.fhir_client.FhirClient.write_bundle`, within the endpoint's transaction cap
(:mod:`cm_fhir.sync.transaction_size`: learnt once from the first refusal as too big, then every
group is packed under it), and up to ``concurrent_requests`` requests are in flight at once
(different patients only: a patient's next case waits for the next round); a combined
transaction refused for another reason is sent again case by case, so one bad case fails only
itself. Then one transaction settles the batch's rows and records what the
server holds (``sync_state``: server id, version, hash sent):

- written: ``sent`` (older rows of the case ``superseded``);
- 412 (someone changed a resource in the EHR since our last write): the case is re-applied
  (:meth:`~cm_fhir.sync.case_send.CaseSender.send`);
- refused for good (400/404/409/422, an OperationOutcome): ``failed`` with that OperationOutcome,
  and the patient's next case goes on;
- retryable (transport, 5xx, 429, an open circuit, 401/403 while credentials are fixed): the
  patient's remaining rows wait, backing off exponentially (or as long as the server asked), and
  other patients go on.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from cm_fhir.errors import (
    RemoteAuthError,
    RemoteFhirError,
    RemotePreconditionFailed,
    RemoteRateLimited,
    RemoteTooCostly,
    RemoteUnavailable,
)
from cm_fhir.fhir_client import EntryResult, FhirClient
from cm_fhir.store.outbox import (
    CaseWrite,
    PatientWork,
    claim_patients,
    settle_failed,
    settle_retry,
    settle_sent,
)
from cm_fhir.store.sync_state import SyncKey, SyncRecord, read_sync, record_sync
from cm_fhir.sync.case_send import CaseSender, patient_identifier
from cm_fhir.sync.config import EhrSettings, EndpointSettings
from cm_fhir.sync.patients import PatientResolver
from cm_fhir.sync.prepare import PreparedBundle
from cm_fhir.sync.transaction_size import TransactionSize

__all__ = [
    "DeliveryStats",
    "EndpointDelivery",
    "claim_work",
    "error_text",
    "is_retryable",
    "outcome_bytes",
    "postpone",
    "retry_delay",
]

log = logging.getLogger(__name__)
Json = dict[str, Any]


@dataclass(slots=True)
class DeliveryStats:
    """Counts of one endpoint's delivery in this process (for /metrics and the API)."""

    sent: int = 0
    failed: int = 0
    retried: int = 0
    superseded: int = 0
    conflicts: int = 0  # 412s re-applied
    lag_seconds_sum: float = 0.0  # enqueue to written, summed over ``sent``
    last_lag_seconds: float = 0.0


@dataclass(slots=True)
class _Settled:
    sent: list[CaseWrite] = field(default_factory=list)
    failed: list[tuple[CaseWrite, str, bytes | None]] = field(default_factory=list)
    retry: list[CaseWrite] = field(default_factory=list)
    retry_error: tuple[str, bytes | None, float] | None = None  # error, outcome, delay
    sync: list[SyncRecord] = field(default_factory=list)


#: One case of a round: the patient, the write and its Bundle adapted to the endpoint.
_Prepared = tuple[str, CaseWrite, PreparedBundle]


def _entries(item: _Prepared) -> int:
    return len(item[2].bundle["entry"])


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def error_text(exc: BaseException) -> str:
    """Status and class only: an OperationOutcome may quote what was sent (PHI)."""
    if isinstance(exc, RemoteFhirError):
        status = f"HTTP {exc.status} " if exc.status is not None else ""
        return f"{status}{type(exc).__name__}"
    return type(exc).__name__


def outcome_bytes(exc: BaseException) -> bytes | None:
    """The OperationOutcome an endpoint answered with, as JSON bytes (None: none)."""
    outcome = getattr(exc, "outcome", None)
    return orjson.dumps(outcome) if isinstance(outcome, dict) else None


def is_retryable(exc: BaseException) -> bool:
    """Whether a write may succeed later: transport, 5xx, 429, an open circuit, 401/403 while
    credentials are fixed, a 412 to re-read, or the database away."""
    if isinstance(exc, RemoteFhirError):
        return exc.retryable or isinstance(
            exc, RemoteAuthError | RemotePreconditionFailed | RemoteUnavailable
        )
    return isinstance(exc, SQLAlchemyError | OSError)


def retry_delay(config: EhrSettings, exc: BaseException, attempts: int) -> float:
    """Seconds before a write that failed ``attempts`` times is tried again: exponential from
    ``retry_base`` with jitter (patients do not return in step), at least what a 429 or 503
    asked for, at most ``retry_max``."""
    base = min(config.retry_max, config.retry_base * 2 ** min(attempts, 16))
    delay = base * (0.5 + random.random() / 2)
    asked = getattr(exc, "retry_after", None)
    if isinstance(exc, RemoteRateLimited | RemoteUnavailable) and asked:
        delay = max(delay, float(asked))
    return float(min(delay, config.retry_max))


async def postpone(
    engine: AsyncEngine,
    config: EhrSettings,
    writes: Sequence[CaseWrite],
    exc: BaseException,
    *,
    error: str | None = None,
    outcome: bytes | None = None,
) -> int:
    """Leave ``writes`` (one, then its patient's next ones, which wait behind it) pending for the
    back-off after ``exc`` (:func:`retry_delay`); ``error`` and ``outcome`` default to the
    words and the OperationOutcome of ``exc``. The number of rows postponed."""
    now = datetime.now(UTC)
    delay = retry_delay(config, exc, writes[0].attempts)
    async with engine.begin() as connection:
        await connection.run_sync(
            settle_retry,
            list(writes),
            error if error is not None else error_text(exc),
            outcome if outcome is not None else outcome_bytes(exc),
            now,
            now + timedelta(seconds=delay),
        )
    return len(writes)


async def claim_work(
    engine: AsyncEngine, endpoint: str, worker_id: str, config: EhrSettings, now: datetime
) -> list[PatientWork]:
    """Lease the next patients' pending rows of ``endpoint`` (one transaction), oldest first."""
    lease = timedelta(seconds=config.lease_seconds)
    async with engine.begin() as connection:
        work: list[PatientWork] = await connection.run_sync(
            lambda c: claim_patients(
                c, endpoint, worker_id, now, lease=lease, limit=config.batch_patients
            )
        )
    return work


class EndpointDelivery:
    """Delivers the outbox rows of one endpoint; see the module docstring."""

    def __init__(
        self,
        engine: AsyncEngine,
        endpoint: EndpointSettings,
        client: FhirClient,
        config: EhrSettings,
        worker_id: str,
    ) -> None:
        self.engine = engine
        self.endpoint = endpoint
        self.client = client
        self.config = config
        self.worker_id = worker_id
        self.stats = DeliveryStats()
        self.patients = PatientResolver(endpoint.name, client)
        #: Cases per transaction, under the endpoint's cap (learnt once, see transaction_size).
        self.size = TransactionSize(client, config.cases_per_transaction)
        self.sender = CaseSender(endpoint, client, self.patients.key, self._conflict)
        self._in_flight = asyncio.Semaphore(config.concurrent_requests)

    def _conflict(self) -> None:
        self.stats.conflicts += 1

    async def run_once(self) -> int:
        """Claim and deliver one batch of patients; the number of case writes settled.

        One transaction claims, one read fetches what the endpoint holds of the batch's resources
        and patients, the HTTP writes run (patients concurrently, each in order), and one
        transaction settles the whole batch.
        """
        return await self.deliver(await self.claim())

    async def claim(self) -> list[PatientWork]:
        """Lease the next patients' rows (one short transaction; empty: nothing is due)."""
        now = datetime.now(UTC)
        return await claim_work(self.engine, self.endpoint.name, self.worker_id, self.config, now)

    async def deliver(self, work: list[PatientWork]) -> int:
        """Write the leased ``work`` (no transaction is open meanwhile) and settle it in one
        transaction; the number of case writes settled."""
        if not work:
            return 0
        try:
            held = await self._held(work)
        except SQLAlchemyError as exc:
            log.warning("could not read the sync state (%s)", type(exc).__name__)
            held = {}
        settled = {w.patient_key: _Settled() for w in work}
        patient_ids: dict[str, str | None] = {}
        found: list[SyncRecord] = []
        if self.endpoint.patient_references == "resolve":
            identifiers = [
                i for w in work for c in w.writes if (i := patient_identifier(c)) is not None
            ]
            try:
                patient_ids, found = await self.patients.resolve_many(identifiers, held)
            except Exception as exc:  # no literal references this time
                log.warning("patient look-up failed (%s)", error_text(exc))
        queues = {w.patient_key: list(w.writes) for w in work}
        while True:
            # one write per patient per round: a patient's writes go in order
            round_ = [
                (key, write, self.sender.prepare(write, held, patient_ids))
                for key, queue in queues.items()
                if queue
                for write in [queue.pop(0)]
            ]
            if not round_:
                break
            await asyncio.gather(
                *(self._send_group(g, settled, queues) for g in self.size.pack(round_, _entries))
            )
        batch = list(settled.values())
        batch[0].sync += found
        try:
            async with self.engine.begin() as connection:
                await connection.run_sync(self._settle, batch)
        except SQLAlchemyError as exc:  # the leases run out and the rows are sent again
            log.warning("could not settle outbox rows (%s)", type(exc).__name__)
            return 0
        for one in batch:
            self._count(one)
        return sum(len(s.sent) + len(s.failed) + len(s.retry) for s in batch)

    async def _send_group(
        self,
        group: list[_Prepared],
        settled: dict[str, _Settled],
        queues: dict[str, list[CaseWrite]],
    ) -> None:
        """Several patients' cases in one transaction under the endpoint's cap; refused as too
        big: the cap is learnt and the group sent again in smaller ones; otherwise refused or in
        conflict: each case alone (so one bad case fails only itself)."""
        if len(group) > 1:
            size = sum(_entries(g) for g in group)
            entries = [e for _, _, p in group for e in p.bundle["entry"]]
            combined = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
            failure: Exception | None = None
            async with self.size.turn(size):
                if self.size.fits(size):
                    try:
                        async with self._in_flight:
                            results = await self.client.write_bundle(combined, split=False)
                    except Exception as exc:
                        failure = exc
                        if isinstance(exc, RemoteTooCostly):
                            self.size.refused(size, exc)
                    else:
                        self.size.took(size)
                        self._combined_sent(group, results, settled)
                        return
            if (
                failure is not None
                and self._retryable(failure)
                and not isinstance(failure, RemotePreconditionFailed)
            ):
                for key, write, _ in group:
                    self._retry_later(settled[key], queues[key], write, failure)
                return
            if failure is None or isinstance(failure, RemoteTooCostly):  # smaller groups
                parts = self.size.pack(group, _entries)
                if len(parts) == 1:
                    half = len(group) // 2
                    parts = [group[:half], group[half:]]
                await asyncio.gather(*(self._send_group(p, settled, queues) for p in parts))
                return
        for key, write, p in group:
            try:
                async with self._in_flight:
                    settled[key].sync += await self.sender.send(p)
            except Exception as exc:
                if self._retryable(exc):
                    self._retry_later(settled[key], queues[key], write, exc)
                    continue
                settled[key].failed.append((write, error_text(exc), outcome_bytes(exc)))
                log.warning(
                    "outbox row %d refused by endpoint %s (%s)",
                    write.id,
                    self.endpoint.name,
                    error_text(exc),
                )
                continue
            settled[key].sent.append(write)

    def _combined_sent(
        self, group: list[_Prepared], results: list[EntryResult], settled: dict[str, _Settled]
    ) -> None:
        by_url = {r.full_url: r for r in results}
        for key, write, p in group:
            mine = [by_url[u] for u in p.identifiers if u in by_url]
            settled[key].sync += self.sender.records(p, mine)
            settled[key].sent.append(write)

    def _retry_later(
        self, settled: _Settled, queue: list[CaseWrite], write: CaseWrite, exc: Exception
    ) -> None:
        """The patient's write and every later one wait (their order holds)."""
        settled.retry = [write, *queue]
        settled.retry_error = (error_text(exc), outcome_bytes(exc), self._delay(exc, write))
        queue.clear()

    async def _held(self, work: list[PatientWork]) -> dict[SyncKey, SyncRecord]:
        """What the endpoint holds of every resource and patient of the batch (one read)."""
        keys = []
        for patient in work:
            for write in patient.writes:
                for text in write.identifiers:
                    rtype, _, ident = text.partition("|")
                    keys.append(SyncKey(self.endpoint.name, rtype, ident))
                identifier = patient_identifier(write)
                if identifier is not None:
                    keys.append(self.patients.key(identifier))
        async with self.engine.connect() as connection:
            found: dict[SyncKey, SyncRecord] = await connection.run_sync(read_sync, keys)
        return found

    def _retryable(self, exc: Exception) -> bool:
        return is_retryable(exc)

    def _delay(self, exc: Exception, write: CaseWrite) -> float:
        return retry_delay(self.config, exc, write.attempts)

    def _settle(self, connection: Connection, batch: Sequence[_Settled]) -> None:
        now = datetime.now(UTC)
        settle_sent(connection, [w for s in batch for w in s.sent], now)
        for settled in batch:
            for write, error, outcome in settled.failed:
                settle_failed(connection, write, error, outcome, now)
            if settled.retry and settled.retry_error is not None:
                error, outcome, delay = settled.retry_error
                next_at = now + timedelta(seconds=delay)
                settle_retry(connection, settled.retry, error, outcome, now, next_at)
        record_sync(connection, [r for s in batch for r in s.sync], now)

    def _count(self, settled: _Settled) -> None:
        now = datetime.now(UTC)
        stats = self.stats
        stats.sent += len(settled.sent)
        stats.failed += len(settled.failed)
        stats.retried += len(settled.retry)
        stats.superseded += sum(
            len(w.older) for w in (*settled.sent, *(f[0] for f in settled.failed))
        )
        for write in settled.sent:
            if write.created_at is not None:
                lag = max(0.0, (now - _aware(write.created_at)).total_seconds())
                stats.lag_seconds_sum += lag
                stats.last_lag_seconds = lag
