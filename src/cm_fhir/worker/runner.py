"""The async worker loop: batches of inbox rows, one writing transaction each, until stopped. I/O.

:class:`Worker` runs :class:`~cm_fhir.worker.processor.BatchProcessor`. On PostgreSQL (and an
in-memory SQLite database) a batch is one transaction on the async connection (``run_sync``: one
greenlet switch per statement on asyncpg). On a SQLite file the batch runs in the worker's own
thread on a plain sqlite3 connection, in two halves: claim, read and apply in a read transaction,
then write under the one write lock, which the inbox writer's ACKs wait on only for the writes; if
a claimed row or a patient state changed in between, the batch runs whole under the lock (ADR
0023). When a batch's transaction fails in the database, the rows are rolled back and the next
claims take one row at a time, so one bad row is found and counted instead of failing its
neighbours; lock conflicts and lost connections (``OperationalError``) are retried without counting
an attempt. :meth:`Worker.run` polls until its stop event is set and always finishes the batch in
flight before returning; :meth:`Worker.run_once` stops when nothing is claimable. ``run`` also
closes due cases (:meth:`Worker.close_due`, :mod:`cm_fhir.worker.closing`) at start and then every
``close_check_seconds``, in its own transactions between batches.

While messages arrive (the inbox grew since the batch before), a batch's writing is bounded in
time as well as in rows: the worker keeps a moving average of the time a claimed row takes under
the lock and claims no more than fit in ``batch_seconds`` (unset: 5 ms on SQLite, no bound on
PostgreSQL; at least 8 rows, as a batch's fixed cost can exceed that on a slow machine), so that
on SQLite the one write lock the inbox writer needs for every ACK is not held long. With nothing
arriving (a backlog after an outage or a bulk load) no ACK waits, and a batch takes
``batch_size`` rows: small batches cost throughput, each has a fixed cost. On SQLite the worker
also leaves a millisecond between batches, the waiting writer's turn at the lock.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from cm_fhir.domain.events import NoticeKind
from cm_fhir.errors import StoreError
from cm_fhir.ingest_door import check_key_room
from cm_fhir.mapping.adt_maps import AdtConceptMaps, load_adt_concept_maps
from cm_fhir.mapping.payer_exchange import PayerExchange, default_payer_exchange
from cm_fhir.mapping.registry import MappingRegistry, default_registry
from cm_fhir.mapping.rules import DischargeRules, load_discharge_rules
from cm_fhir.mapping.vocabulary import check_vocabulary
from cm_fhir.settings import WorkerSettings
from cm_fhir.store.case_writes import DEFAULT_ROUTES, OutboxRoute, PayerRoute
from cm_fhir.store.engine import READ_ONLY_OPTION, sibling_engine, sqlite_thread_engine
from cm_fhir.store.queue import inbox_top, mark_waiting
from cm_fhir.store.wakeup import Wakeup, idle
from cm_fhir.worker.batch import BatchResult
from cm_fhir.worker.closing import CaseCloser, ClosingResult
from cm_fhir.worker.journal import log_outcomes
from cm_fhir.worker.loop_thread import LoopThread
from cm_fhir.worker.notify import PayerNotifier
from cm_fhir.worker.processor import ApplyEvent, BatchProcessor
from cm_fhir.workflow import PatientState

__all__ = ["Worker", "WorkerConfig"]

log = logging.getLogger(__name__)
_MAX_CLOSING_PASSES = 50  # per close_due call: a bound, even if a state were due again at once
_TRANSIENT_STATES = {"40001", "40P01", "55P03"}  # serialization failure, deadlock, lock timeout
#: ``batch_seconds`` when unset, on SQLite (on PostgreSQL: no bound).
SQLITE_BATCH_SECONDS = 0.005
_FEWEST_BOUNDED_ROWS = 8  # rows a batch bounded in time may still claim (also the first one's)
_SQLITE_TURN = 0.001  # seconds between SQLite batches: the inbox writer's turn at the write lock


_DEFAULTS = WorkerSettings()  # the defaults live in the settings model only
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """How the worker claims, retries, closes due cases and which processing ids it applies."""

    batch_size: int = _DEFAULTS.batch_size
    batch_seconds: float | None = _DEFAULTS.batch_seconds  # work per transaction; 0: no bound
    max_attempts: int = _DEFAULTS.max_attempts
    retry_delay: float = _DEFAULTS.retry_delay  # seconds between attempts of a failing row
    poll_interval: float = _DEFAULTS.poll_interval  # seconds to wait when nothing is claimable
    close_check_seconds: float = _DEFAULTS.close_check_seconds  # between closing passes
    apply_processing_ids: frozenset[str] = frozenset(_DEFAULTS.apply_processing_ids)
    routes: tuple[OutboxRoute, ...] = DEFAULT_ROUTES  # the endpoints outbox Bundles go to
    payers: tuple[PayerRoute, ...] = ()  # the payers told of members' admissions and discharges
    notify_events: frozenset[NoticeKind] = frozenset(NoticeKind)

    @classmethod
    def from_settings(
        cls,
        worker: WorkerSettings,
        routes: tuple[OutboxRoute, ...] = DEFAULT_ROUTES,
        payers: tuple[PayerRoute, ...] = (),
        notify_events: Collection[str] = tuple(NoticeKind),
    ) -> WorkerConfig:
        """The configuration of the ``worker`` settings, enqueuing for ``routes`` and telling
        ``payers`` of ``notify_events``."""
        return cls(
            batch_size=worker.batch_size,
            batch_seconds=worker.batch_seconds,
            max_attempts=worker.max_attempts,
            retry_delay=worker.retry_delay,
            poll_interval=worker.poll_interval,
            close_check_seconds=worker.close_check_seconds,
            apply_processing_ids=frozenset(worker.apply_processing_ids),
            routes=routes,
            payers=payers,
            notify_events=frozenset(NoticeKind(e) for e in notify_events),
        )


def _transient(exc: SQLAlchemyError) -> bool:
    if isinstance(exc, OperationalError):
        return True
    if isinstance(exc, DBAPIError):
        state = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        return exc.connection_invalidated or state in _TRANSIENT_STATES
    return False


class Worker:
    """Processes the inbox of one database; several may run against PostgreSQL."""

    def __init__(
        self,
        engine: AsyncEngine,
        config: WorkerConfig | None = None,
        *,
        rules: DischargeRules | None = None,
        maps: AdtConceptMaps | None = None,
        registry: MappingRegistry | None = None,
        apply: ApplyEvent | None = None,
        payer: PayerExchange | None = None,
        own_loop: bool = False,
    ) -> None:
        self.engine = engine
        self.config = config or WorkerConfig()
        rules = rules or load_discharge_rules()
        check_key_room(rules.identity)
        registry = registry or default_registry()
        maps = maps or load_adt_concept_maps()
        check_vocabulary(registry, rules, maps)
        decoded: dict[str, tuple[str, PatientState]] = {}  # shared by both: same documents
        self.processor = BatchProcessor(
            rules,
            maps,
            registry,
            max_attempts=self.config.max_attempts,
            apply=apply,
            apply_processing_ids=self.config.apply_processing_ids,
            cache=decoded,
            routes=self.config.routes,
            payer=payer,
            notifier=PayerNotifier(
                self.config.payers,
                payer or default_payer_exchange(),
                registry.canonical_base,
                self.config.notify_events,
            )
            if self.config.payers
            else None,
        )
        self.closer = CaseCloser(rules, registry, decoded, routes=self.config.routes)
        self.totals = BatchResult()
        self.closings = ClosingResult()
        self._one_at_a_time = 0
        self._row_seconds = 0.0  # recent work per claimed row (moving average)
        self._top: int | None = None  # the newest inbox row when the last batch began
        self._arriving = True  # rows arrived since the batch before (unknown at first: yes)
        self._locked_seconds = 0.0  # how long the last batch's writing transaction worked
        self._sqlite = engine.dialect.name == "sqlite"
        self._thread_engine = sqlite_thread_engine(engine)
        self._thread: ThreadPoolExecutor | None = None
        self._release_thread: Callable[[], Any] = lambda: None
        if self._thread_engine is not None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="cm-fhir-worker")
            # once: by aclose(), or when the worker is collected without it
            self._release_thread = weakref.finalize(
                self, _release, self._thread, self._thread_engine
            )
        # A loop of its own (``own_loop``, elsewhere than a SQLite file): the worker's Python work
        # leaves the caller's loop, which answers senders in ``cm-fhir serve``; see aclose().
        self._loop: LoopThread | None = None
        self._loop_engine: AsyncEngine | None = None
        if own_loop and self._thread is None:
            self._loop_engine = sibling_engine(engine)
            self._loop = LoopThread("cm-fhir-worker")
        budget = self.config.batch_seconds
        self._budget = (
            budget if budget is not None else (SQLITE_BATCH_SECONDS if self._sqlite else 0)
        )

    async def transact(self, work: Callable[..., _T], *args: Any) -> _T:
        """``work(connection, *args)`` in one transaction, committed when it returns.

        On a SQLite file the whole transaction runs in the worker's own thread on a plain
        sqlite3 connection: no thread hop per statement, and the batch's Python work leaves the
        event loop (and the listener's ACKs) free. With ``own_loop`` it runs on the worker's
        own event loop and engine; otherwise on the caller's async connection.
        """
        if self._thread is not None:
            return await self._in_thread(_in_transaction, work, *args)
        if self._loop is not None and self._loop_engine is not None:
            return await self._loop.run(_async_transaction(self._loop_engine, work, *args))
        return await _async_transaction(self.engine, work, *args)

    async def aclose(self) -> None:
        """Release the worker's own thread, loop and connections (the engine given stays open)."""
        if self._loop is not None and self._loop_engine is not None:
            await self._loop.close(self._loop_engine.dispose())
        self._release_thread()

    async def _in_thread(self, work: Callable[..., _T], *args: Any) -> _T:
        """``work(engine, *args)`` in the worker's thread, on its SQLite engine."""
        assert self._thread is not None
        assert self._thread_engine is not None
        loop = asyncio.get_running_loop()
        job = partial(work, self._thread_engine, *args)
        return await loop.run_in_executor(self._thread, job)

    @property
    def batch_limit(self) -> int:
        """Rows the next batch claims: ``batch_size``, or as many as recent rows say fit in
        ``batch_seconds``, but never fewer than a few (a batch has a fixed cost too)."""
        if self._one_at_a_time > 0:
            return 1
        size, budget = self.config.batch_size, self._budget
        if budget <= 0 or not self._arriving:
            return size
        fit = int(budget / self._row_seconds) if self._row_seconds > 0 else 0
        return min(size, max(_FEWEST_BOUNDED_ROWS, fit))

    async def run_batch(self) -> BatchResult:
        """Claim, process and commit one batch; an empty result when nothing was claimable."""
        retry_before = datetime.now(UTC) - timedelta(seconds=self.config.retry_delay)
        try:
            if self._thread is not None:
                result = await self._in_thread(self._split_batch, retry_before)
            else:
                result = await self.transact(self._claim, retry_before)
        except SQLAlchemyError as exc:
            return await self._after_failure(exc)
        if result.claimed:
            per_row = self._locked_seconds / result.claimed
            self._row_seconds = (
                per_row if self._row_seconds <= 0 else (0.7 * self._row_seconds + 0.3 * per_row)
            )
        log_outcomes(self.processor.last_outcomes)
        self.totals.add(result)
        return result

    def _next_limit(self, connection: Connection) -> int:
        """The rows this batch claims, once it is known (in the batch's first transaction)
        whether rows arrived since the batch before."""
        if self._budget > 0:
            top = inbox_top(connection)
            self._arriving = self._top is None or top != self._top
            self._top = top
        limit = self.batch_limit
        self._one_at_a_time = max(0, self._one_at_a_time - 1)
        return limit

    def _claim(self, connection: Connection, retry_before: datetime) -> BatchResult:
        """One batch whole in the caller's transaction."""
        limit = self._next_limit(connection)
        started = time.perf_counter()
        result = self.processor.process(connection, limit, retry_before)
        self._locked_seconds = time.perf_counter() - started
        return result

    def _split_batch(self, engine: Engine, retry_before: datetime) -> BatchResult:
        """On SQLite, a batch in two transactions: claim, read and apply in a read transaction
        (the inbox writer commits meanwhile), then write under the lock, which is held for the
        writes only. If a claimed row or a state read changed in between, the batch runs whole
        under the lock instead."""
        with engine.connect() as reader:
            reader = reader.execution_options(**{READ_ONLY_OPTION: True})
            with reader.begin():
                prepared = self.processor.prepare(reader, self._next_limit(reader), retry_before)
        if not prepared.rows:
            return BatchResult()
        with engine.begin() as writer:
            started = time.perf_counter()
            result = self.processor.write_prepared(writer, prepared)
            self._locked_seconds = time.perf_counter() - started
        if result is not None:
            return result
        log.info("batch changed while it was read; running it under the lock")
        with engine.begin() as connection:
            return self._claim(connection, retry_before)

    async def _after_failure(self, exc: SQLAlchemyError) -> BatchResult:
        claimed = self.processor.last_claimed
        name = type(exc).__name__
        if _transient(exc) or not claimed:
            log.warning("batch rolled back (%s); retrying", name)
            await asyncio.sleep(0.05)
            return BatchResult(claimed=len(claimed), retried=len(claimed))
        if len(claimed) > 1:
            log.warning("batch of %d rolled back (%s); retrying one by one", len(claimed), name)
            self._one_at_a_time = len(claimed)
            return BatchResult(claimed=len(claimed), retried=len(claimed))
        row = claimed[0]
        log.error("inbox row %d could not be committed (%s)", row.id, name)
        store_error = StoreError(f"the database refused the changes ({name})")
        try:
            await self.transact(self.processor.record_failure, row, store_error)
        except SQLAlchemyError as again:
            raise StoreError(f"cannot record a failed attempt: {type(again).__name__}") from again
        result = BatchResult(claimed=1, retried=1)
        self.totals.add(result)
        return result

    async def run_once(self) -> BatchResult:
        """Process batches until nothing is claimable; the summed counts."""
        total = BatchResult()
        while True:
            result = await self.run_batch()
            total.add(result)
            if result.claimed == 0:
                return total

    async def close_due(self, now: datetime | None = None) -> ClosingResult:
        """Close the cases due at ``now`` (default: the clock), a batch of patients per
        transaction, until none is due; the summed counts. Database errors are logged and
        left for the next pass."""
        total = ClosingResult()
        for _ in range(_MAX_CLOSING_PASSES):
            at = now or datetime.now(UTC)
            try:
                result = await self.transact(self.closer.close_due, at, self.config.batch_size)
            except SQLAlchemyError as exc:
                log.warning("closing pass rolled back (%s); next pass retries", type(exc).__name__)
                return total
            for name in result.__slots__:
                setattr(total, name, getattr(total, name) + getattr(result, name))
                setattr(self.closings, name, getattr(self.closings, name) + getattr(result, name))
            if result.checked < self.config.batch_size:
                break
        return total

    async def run(
        self,
        stop: asyncio.Event,
        *,
        arrived: Wakeup | None = None,
        committed: Wakeup | None = None,
    ) -> BatchResult:
        """Process until ``stop`` is set; the batch in flight always commits first. Due cases
        are closed at start and every ``close_check_seconds``. When idle, waits for the poll
        interval or until ``arrived`` is notified (the inbox writer of this process committed);
        notifies ``committed`` after each batch that changed something: the worker commits on
        an engine of its own (its thread or loop), which the engine-level outbox signal of the
        process (:func:`~cm_fhir.store.outbox_signal.outbox_wakeup`) does not see."""
        total = BatchResult()
        woken = arrived.listen() if arrived is not None else None
        next_close = time.monotonic()
        while not stop.is_set():
            if time.monotonic() >= next_close:
                await self.close_due()
                next_close = time.monotonic() + self.config.close_check_seconds
                if committed is not None:
                    committed.notify()
            result = await self.run_batch()
            total.add(result)
            if result.claimed and committed is not None:
                committed.notify()
            if result.claimed == 0:
                await self._mark_waiting()
                await idle(stop, self.config.poll_interval, woken)
            elif self._sqlite:
                # SQLite has one write lock: a writer waiting for it (the inbox, whose ACKs wait
                # on its commit) gets it now, not after the next batch.
                await asyncio.sleep(_SQLITE_TURN)
        return total

    async def _mark_waiting(self) -> None:
        try:
            await self.transact(mark_waiting, datetime.now(UTC))
        except SQLAlchemyError as exc:
            log.warning("could not mark rows waiting behind dead letters: %s", type(exc).__name__)


async def _async_transaction(engine: AsyncEngine, work: Callable[..., _T], *args: Any) -> _T:
    async with engine.begin() as connection:
        return await connection.run_sync(work, *args)


def _in_transaction(engine: Engine, work: Callable[..., _T], *args: Any) -> _T:
    connection: Connection
    with engine.begin() as connection:
        return work(connection, *args)


def _release(thread: ThreadPoolExecutor, engine: Engine) -> None:
    thread.shutdown(wait=False)  # may run on that thread (collected there): never join it
    engine.dispose()
