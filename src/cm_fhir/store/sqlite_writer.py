"""The SQLite inbox writer thread: one plain sqlite3 connection, group commits off the loop. I/O.

:class:`SqliteWriterThread` owns the write connection for its whole life. The event loop hands it
jobs through a :class:`queue.SimpleQueue` (no executor, no future per commit); the thread forms a
group from what has queued up, waits a little for more when the group is short
(:class:`Grouping`, the policy the PostgreSQL writer follows too), runs ``BEGIN IMMEDIATE`` ...
``COMMIT`` (``synchronous=FULL``: the commit is fsynced) and reports the outcome of the whole
group back to the loop with one ``call_soon_threadsafe``. The loop never waits on the disk or on
the write lock while another connection (the worker's) holds it; the thread tries for the lock
every few hundred microseconds (:func:`begin_immediate`), not on SQLite's coarse back-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from cm_fhir.store.inbox import NewMessage, StoredMessage, store_messages_sqlite3

__all__ = ["Grouping", "Job", "Settle", "SqliteWriterThread", "begin_immediate"]

_LINGER_FLOOR = 0.0002  # seconds
_LINGER_CAP = 0.002
_BUSY_TIMEOUT = 30.0  # seconds the SQLite writer waits for the write lock
_BUSY_POLL_CAP = 0.0005  # seconds between its tries, at most
_BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


@dataclass(slots=True)
class Job:
    """One message waiting for its commit, and the future its submitter awaits."""

    message: NewMessage
    done: asyncio.Future[StoredMessage]


Settle = Callable[[list[Job], list[StoredMessage] | Exception, bool], None]
"""Called on the loop after each group: its jobs, the results (or the error), whether it waited."""


class Grouping:
    """How many jobs the next group is likely to hold, and how long to wait for them.

    Senders that wait for each ACK before the next message come back a little apart, so a writer
    that committed a group of N waits for up to N again before its next commit, but never longer
    than half its recent commit time (0.2 to 2 ms). A writer whose last group was a single message
    does not wait; after a short group it expects half as many.
    """

    __slots__ = ("commit_seconds", "expected")

    def __init__(self) -> None:
        self.expected = 1
        self.commit_seconds = 0.0  # recent commit time (moving average)

    def wait(self) -> float:
        """Seconds to wait for the rest of a short group."""
        return min(_LINGER_CAP, max(_LINGER_FLOOR, self.commit_seconds / 2))

    def formed(self, size: int) -> None:
        """A group of ``size`` is about to commit: expect as many again, or half as many."""
        self.expected = max(size, self.expected // 2)

    def committed(self, seconds: float) -> None:
        self.commit_seconds = 0.8 * self.commit_seconds + 0.2 * seconds


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


class SqliteWriterThread:
    """A thread that commits queued jobs in groups on the sqlite3 connection it is given (and
    closes when it stops)."""

    def __init__(
        self,
        connection: sqlite3.Connection,
        loop: asyncio.AbstractEventLoop,
        settle: Settle,
        max_batch: int,
    ) -> None:
        self._connection = connection
        self._loop = loop
        self._settle = settle
        self._max_batch = max_batch
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._stopped: asyncio.Future[None] = loop.create_future()
        self._thread = threading.Thread(target=self._run, name="inbox-writer", daemon=True)
        self._thread.start()

    def submit(self, jobs: list[Job]) -> None:
        for job in jobs:
            self._jobs.put(job)

    async def stop(self) -> None:
        """Commit what is queued, close the connection, end the thread."""
        self._jobs.put(None)
        await self._stopped

    def _run(self) -> None:
        try:
            self._serve()
        finally:
            with contextlib.suppress(sqlite3.Error):
                self._connection.close()
            self._call(self._set_stopped)

    def _set_stopped(self) -> None:
        if not self._stopped.done():
            self._stopped.set_result(None)

    def _call(self, callback: Callable[..., None], *args: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            self._loop.call_soon_threadsafe(callback, *args)

    def _serve(self) -> None:
        grouping = Grouping()
        stopping = False
        while not stopping:
            job = self._jobs.get()
            if job is None:
                return
            jobs = [job]
            stopping = self._take_queued(jobs)
            lingered = not stopping and len(jobs) < grouping.expected
            if lingered:
                stopping = self._gather_group(jobs, grouping.expected, grouping.wait())
            grouping.formed(len(jobs))
            started = time.monotonic()
            outcome: list[StoredMessage] | Exception
            try:
                outcome = self._commit([job.message for job in jobs])
            except Exception as exc:
                outcome = exc
            grouping.committed(time.monotonic() - started)
            self._call(self._settle, jobs, outcome, lingered)

    def _take_queued(self, jobs: list[Job]) -> bool:
        """Move queued jobs into ``jobs`` (up to ``max_batch``); True when told to stop."""
        while len(jobs) < self._max_batch:
            try:
                extra = self._jobs.get_nowait()
            except queue.Empty:
                return False
            if extra is None:
                return True
            jobs.append(extra)
        return False

    def _gather_group(self, jobs: list[Job], expected: int, wait: float) -> bool:
        """Wait up to ``wait`` seconds for ``expected`` jobs in hand; True when told to stop."""
        deadline = time.monotonic() + wait
        while len(jobs) < expected:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                extra = self._jobs.get(timeout=remaining)
            except queue.Empty:
                return False
            if extra is None:
                return True
            jobs.append(extra)
            if self._take_queued(jobs):
                return True
        return False

    def _commit(self, messages: list[NewMessage]) -> list[StoredMessage]:
        connection = self._connection
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
