"""Group commit for the inbox: many concurrent submitters, few transactions. I/O (asyncio).

Every connection of the listener calls :meth:`InboxWriter.store` and waits for *its own* row to be
committed. Behind it, writer tasks take whatever has queued up while the previous commit was
running (up to ``max_batch``) and store it as one group, so one fsync serves many messages. Senders
that wait for each ACK before the next message come back a little apart, so a writer that committed
a group of N waits for up to N again before its next commit, but never longer than half its recent
commit time (0.2 to 2 ms): with four such senders, one fsync then serves four messages instead of
two. A writer whose last group was a single message does not wait; after a short group it expects
half as many. One writer by default on either database (a second one would split those groups in
two). SQLite: the writer's transaction (``BEGIN IMMEDIATE`` ... ``COMMIT`` on a plain sqlite3
connection) runs whole in a dedicated thread, so the event loop never waits on the disk or on the
write lock while another connection (the worker's) holds it; the thread tries for the lock every
few hundred microseconds (:func:`begin_immediate`), not on SQLite's coarse back-off. PostgreSQL:
the writer keeps one pooled asyncpg connection. If a group fails, each of its waiters gets
:class:`~cm_fhir.errors.StoreError` and none is acknowledged positively. An in-memory SQLite
database falls back to plain SQLAlchemy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from cm_fhir.errors import StoreError
from cm_fhir.store.engine import open_sqlite_writer
from cm_fhir.store.inbox import (
    NewMessage,
    StoredMessage,
    store_messages,
    store_messages_asyncpg,
    store_messages_sqlite3,
)
from cm_fhir.store.wakeup import Wakeup

__all__ = ["InboxWriter"]

log = logging.getLogger(__name__)
_DATABASE_ERRORS = (
    SQLAlchemyError,
    sqlite3.Error,
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)


@dataclass(slots=True)
class _HeldConnection:
    """The pooled driver connection a PostgreSQL writer task keeps between group commits."""

    raw: Any = None


@dataclass(slots=True)
class _Job:
    message: NewMessage
    done: asyncio.Future[StoredMessage]


_LINGER_FLOOR = 0.0002  # seconds
_LINGER_CAP = 0.002
_BUSY_TIMEOUT = 30.0  # seconds the SQLite writer waits for the write lock
_BUSY_POLL_CAP = 0.0005  # seconds between its tries, at most
_BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


def begin_immediate(connection: sqlite3.Connection, timeout: float = _BUSY_TIMEOUT) -> None:
    """``BEGIN IMMEDIATE``, trying again every few hundred microseconds while another connection
    holds the write lock (SQLite's own busy handler sleeps 1, 2, 5, 10 ... ms between tries, so
    an ACK would wait up to that long after the lock is free).

    Raises:
        sqlite3.OperationalError: still locked after ``timeout`` seconds, or another error.
    """
    deadline = time.monotonic() + timeout
    pause = 0.0001
    connection.execute("PRAGMA busy_timeout=0")
    try:
        while True:
            try:
                connection.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode not in _BUSY_CODES or time.monotonic() >= deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, _BUSY_POLL_CAP)
    finally:
        connection.execute(f"PRAGMA busy_timeout={int(_BUSY_TIMEOUT * 1000)}")


class InboxWriter:
    """Batches inbox inserts across connections; each caller still waits for its own commit."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        writers: int | None = None,
        max_batch: int = 256,
        committed: Wakeup | None = None,
    ):
        self._engine = engine
        self._committed = committed  # notified after each commit (wakes the worker)
        self._writer_count = writers or 1
        self._max_batch = max_batch
        self._queue: asyncio.Queue[_Job | None] = asyncio.Queue()
        self._arrived = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # SQLite: one thread owns a synchronous connection and runs each group commit whole.
        self._sqlite: sqlite3.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None
        if engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
            self._sqlite = open_sqlite_writer(engine)
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inbox-writer")
        self._closed = False
        self.batches = 0
        self.messages = 0
        self.lingered = 0  # commits that waited for more of a group

    async def __aenter__(self) -> InboxWriter:
        self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    def start(self) -> None:
        """Start the writer tasks (idempotent)."""
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._run(), name=f"inbox-writer-{n}")
                for n in range(self._writer_count)
            ]

    async def store(self, message: NewMessage) -> StoredMessage:
        """Store one message; return once the transaction holding it has committed."""
        return (await self.store_many([message]))[0]

    async def store_many(self, messages: list[NewMessage]) -> list[StoredMessage]:
        """Store several messages (e.g. one batch); return once all of them are committed."""
        if self._closed:
            raise StoreError("the inbox is closed")
        loop = asyncio.get_running_loop()
        jobs = [_Job(message, loop.create_future()) for message in messages]
        for job in jobs:
            self._queue.put_nowait(job)
        self._arrived.set()
        # A caller that goes away cancels only its own future: the writer still commits the
        # message (a resend is then answered as a duplicate) and skips the cancelled future.
        if len(jobs) == 1:
            return [await jobs[0].done]
        return list(await asyncio.gather(*(job.done for job in jobs)))

    async def close(self) -> None:
        """Stop taking messages, commit what is queued, stop the writer tasks."""
        if self._closed:
            return
        self._closed = True
        for _ in self._tasks:
            self._queue.put_nowait(None)
        self._arrived.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._thread is not None and self._sqlite is not None:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._sqlite.close)
            self._thread.shutdown(wait=True)

    async def _run(self) -> None:
        held = _HeldConnection()
        try:
            await self._loop(held)
        finally:
            if held.raw is not None:
                with contextlib.suppress(Exception):
                    held.raw.close()  # back to the pool

    async def _loop(self, held: _HeldConnection) -> None:
        loop = asyncio.get_running_loop()
        expected = 1  # how many jobs the next group is likely to hold
        commit_seconds = 0.0  # recent commit time (moving average)
        stopping = False
        while not stopping:
            job = await self._queue.get()
            if job is None:
                return
            jobs = [job]
            stopping = self._take_queued(jobs)
            if not stopping and len(jobs) < expected:
                self.lingered += 1
                wait = min(_LINGER_CAP, max(_LINGER_FLOOR, commit_seconds / 2))
                stopping = await self._gather_group(jobs, expected, loop.time() + wait)
            # Expect as many as this group again; after a short group, half as many as before.
            expected = max(len(jobs), expected // 2)
            started = loop.time()
            await self._commit(jobs, held)
            commit_seconds = 0.8 * commit_seconds + 0.2 * (loop.time() - started)

    def _take_queued(self, jobs: list[_Job]) -> bool:
        """Move queued jobs into ``jobs`` (up to ``max_batch``); True when told to stop."""
        while len(jobs) < self._max_batch and not self._queue.empty():
            extra = self._queue.get_nowait()
            if extra is None:
                return True
            jobs.append(extra)
        return False

    async def _gather_group(self, jobs: list[_Job], expected: int, deadline: float) -> bool:
        """Wait for ``expected`` jobs in hand or for ``deadline``; True when told to stop."""
        loop = asyncio.get_running_loop()
        while len(jobs) < expected:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self._arrived.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._arrived.wait()
            except TimeoutError:
                return self._take_queued(jobs)
            if self._take_queued(jobs):
                return True
        return False

    def _commit_sqlite(self, messages: list[NewMessage]) -> list[StoredMessage]:
        connection = self._sqlite
        assert connection is not None
        begin_immediate(connection)
        try:
            results = store_messages_sqlite3(connection, messages)
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    connection.execute("ROLLBACK")
            raise
        return results

    async def _commit_asyncpg(
        self, messages: list[NewMessage], held: _HeldConnection
    ) -> list[StoredMessage]:
        # Each writer task keeps one pooled connection; a failed one is discarded, not reused.
        if held.raw is None:
            held.raw = await self._engine.raw_connection()
        try:
            return await store_messages_asyncpg(held.raw.driver_connection, messages)
        except BaseException:
            with contextlib.suppress(Exception):
                held.raw.invalidate()
            held.raw = None
            raise

    async def _commit(self, jobs: list[_Job], held: _HeldConnection) -> None:
        messages = [job.message for job in jobs]
        try:
            if self._thread is not None:
                loop = asyncio.get_running_loop()
                results = await loop.run_in_executor(self._thread, self._commit_sqlite, messages)
            elif self._engine.dialect.driver == "asyncpg":
                results = await self._commit_asyncpg(messages, held)
            else:
                async with self._engine.begin() as connection:
                    results = await store_messages(connection, messages)
        except _DATABASE_ERRORS as exc:
            log.error("inbox commit of %d message(s) failed: %s", len(jobs), type(exc).__name__)
            for job in jobs:
                if not job.done.done():
                    job.done.set_exception(StoreError("the inbox could not commit the message"))
            return
        except BaseException as exc:
            for job in jobs:
                if not job.done.done():
                    job.done.set_exception(StoreError("the inbox writer stopped"))
            if isinstance(exc, Exception):
                log.exception("inbox writer failed")
                return
            raise
        self.batches += 1
        self.messages += len(jobs)
        if self._committed is not None:
            self._committed.notify()
        for job, result in zip(jobs, results, strict=True):
            if not job.done.done():
                job.done.set_result(result)
