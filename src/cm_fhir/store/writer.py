"""Group commit for the inbox: many concurrent submitters, few transactions. I/O (asyncio).

Every connection of the listener calls :meth:`InboxWriter.store` and waits for *its own* row to be
committed. Behind it, a writer takes whatever has queued up while the previous commit was running
(up to ``max_batch``) and stores it as one group, so one fsync serves many messages; a short group
waits a little for more (:class:`~cm_fhir.store.sqlite_writer.Grouping`: with four lockstep
senders, one fsync then serves four messages instead of two). SQLite: a dedicated thread owns a
plain sqlite3 connection, forms the groups and runs each transaction whole
(:class:`~cm_fhir.store.sqlite_writer.SqliteWriterThread`), so the event loop never waits on the
disk or on the write lock; the loop only queues jobs and settles each group's futures. PostgreSQL:
one writer task by default (a second one would split those groups in two) keeps one pooled asyncpg
connection. If a group fails, each of its waiters gets :class:`~cm_fhir.errors.StoreError` and
none is acknowledged positively. An in-memory SQLite database falls back to plain SQLAlchemy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
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
)
from cm_fhir.store.sqlite_writer import Grouping, Job, SqliteWriterThread, begin_immediate
from cm_fhir.store.wakeup import Wakeup

__all__ = ["InboxWriter", "begin_immediate"]

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
        self._queue: asyncio.Queue[Job | None] = asyncio.Queue()
        self._arrived = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # SQLite: one thread owns a synchronous connection, forms the groups and commits them.
        self._sqlite: sqlite3.Connection | None = None
        if engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
            self._sqlite = open_sqlite_writer(engine)
        self._thread: SqliteWriterThread | None = None
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
        """Start the writer thread or tasks (idempotent)."""
        if self._thread is not None or self._tasks or self._closed:
            return
        if self._sqlite is not None:
            loop = asyncio.get_running_loop()
            self._thread = SqliteWriterThread(self._sqlite, loop, self._settle, self._max_batch)
            return
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
        jobs = [Job(message, loop.create_future()) for message in messages]
        if self._thread is not None:
            self._thread.submit(jobs)
        else:
            for job in jobs:
                self._queue.put_nowait(job)
            self._arrived.set()
        # A caller that goes away cancels only its own future: the writer still commits the
        # message (a resend is then answered as a duplicate) and skips the cancelled future.
        if len(jobs) == 1:
            return [await jobs[0].done]
        return list(await asyncio.gather(*(job.done for job in jobs)))

    async def close(self) -> None:
        """Stop taking messages, commit what is queued, stop the writer thread or tasks."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            await self._thread.stop()  # commits what is queued, closes the connection
            self._thread = None
        elif self._sqlite is not None:
            self._sqlite.close()  # never started
        for _ in self._tasks:
            self._queue.put_nowait(None)
        self._arrived.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

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
        grouping = Grouping()
        stopping = False
        while not stopping:
            job = await self._queue.get()
            if job is None:
                return
            jobs = [job]
            stopping = self._take_queued(jobs)
            lingered = not stopping and len(jobs) < grouping.expected
            if lingered:
                deadline = loop.time() + grouping.wait()
                stopping = await self._gather_group(jobs, grouping.expected, deadline)
            grouping.formed(len(jobs))
            started = loop.time()
            outcome = await self._commit(jobs, held)
            grouping.committed(loop.time() - started)
            self._settle(jobs, outcome, lingered)

    def _take_queued(self, jobs: list[Job]) -> bool:
        """Move queued jobs into ``jobs`` (up to ``max_batch``); True when told to stop."""
        while len(jobs) < self._max_batch and not self._queue.empty():
            extra = self._queue.get_nowait()
            if extra is None:
                return True
            jobs.append(extra)
        return False

    async def _gather_group(self, jobs: list[Job], expected: int, deadline: float) -> bool:
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

    async def _commit(
        self, jobs: list[Job], held: _HeldConnection
    ) -> list[StoredMessage] | Exception:
        messages = [job.message for job in jobs]
        try:
            if self._engine.dialect.driver == "asyncpg":
                return await self._commit_asyncpg(messages, held)
            async with self._engine.begin() as connection:
                return await store_messages(connection, messages)
        except Exception as exc:
            return exc
        except BaseException:
            for job in jobs:
                if not job.done.done():
                    job.done.set_exception(StoreError("the inbox writer stopped"))
            raise

    def _settle(
        self, jobs: list[Job], outcome: list[StoredMessage] | Exception, lingered: bool
    ) -> None:
        """Complete the futures of one group (on the loop): each its row, or StoreError."""
        self.lingered += lingered
        if isinstance(outcome, Exception):
            if isinstance(outcome, _DATABASE_ERRORS):
                log.error(
                    "inbox commit of %d message(s) failed: %s", len(jobs), type(outcome).__name__
                )
                error = "the inbox could not commit the message"
            else:
                log.error("inbox writer failed", exc_info=outcome)
                error = "the inbox writer stopped"
            for job in jobs:
                if not job.done.done():
                    job.done.set_exception(StoreError(error))
            return
        self.batches += 1
        self.messages += len(jobs)
        if self._committed is not None:
            self._committed.notify()
        for job, result in zip(jobs, outcome, strict=True):
            if not job.done.done():
                job.done.set_result(result)
