"""Outbox rows committed: the sync role wakes, in this process and, on PostgreSQL, in others. I/O.

Every outbox row is enqueued by :func:`~cm_fhir.store.outbox.enqueue`, which calls
:func:`mark_enqueued` in the caller's transaction. That marks the connection, and on PostgreSQL
also issues ``NOTIFY cm_fhir_outbox`` (delivered by the server when, and only if, the transaction
commits). :func:`outbox_wakeup` is the engine's one :class:`~cm_fhir.store.wakeup.Wakeup`: it is
notified when a marked connection goes back to the pool after its transaction (after a rollback
too: a wake that finds nothing costs one empty claim), whoever committed (an API case write, a
status read back, a resend), so the sync loops of this process wait for no poll.
:func:`listen_across_processes` is the PostgreSQL half: one connection ``LISTEN``\\ s on the
channel and notifies the same Wakeup, so a sync role started apart from the worker or the API
(``cm-fhir serve --role sync``) wakes as promptly; while that connection is down, the loops still
find rows by their poll interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from typing import Any

from sqlalchemy import Connection, Engine, event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from cm_fhir.store.wakeup import Wakeup

__all__ = ["CHANNEL", "listen_across_processes", "mark_enqueued", "outbox_wakeup"]

log = logging.getLogger(__name__)

#: The PostgreSQL notification channel of committed outbox rows.
CHANNEL = "cm_fhir_outbox"
_MARK = "cm_fhir.outbox_enqueued"
_wakeups: weakref.WeakKeyDictionary[Engine, Wakeup] = weakref.WeakKeyDictionary()


def mark_enqueued(connection: Connection) -> None:
    """Outbox rows were written in this transaction: wake the sync role once it commits."""
    connection.info[_MARK] = True
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_notify(:channel, '')"), {"channel": CHANNEL})


def outbox_wakeup(engine: AsyncEngine) -> Wakeup:
    """The Wakeup notified after every commit of ``engine`` that enqueued outbox rows."""
    target = engine.sync_engine
    found = _wakeups.get(target)
    if found is not None:
        return found
    wakeup = Wakeup()
    _wakeups[target] = wakeup

    def _returned(_dbapi_connection: Any, record: Any) -> None:
        if record is not None and record.info.pop(_MARK, False):
            wakeup.notify()

    event.listen(target.pool, "checkin", _returned)
    return wakeup


async def listen_across_processes(
    engine: AsyncEngine, wakeup: Wakeup, stop: asyncio.Event, *, retry_seconds: float = 5.0
) -> None:
    """On PostgreSQL, notify ``wakeup`` for every ``NOTIFY cm_fhir_outbox`` until ``stop`` is set
    (a lost connection is opened again after ``retry_seconds``). Other databases: returns."""
    if engine.dialect.name != "postgresql":
        return
    while not stop.is_set():
        try:
            await _listen(engine, wakeup, stop)
        except Exception as exc:  # the database is away: poll until it is back
            log.warning("cannot listen for outbox commits (%s); polling", type(exc).__name__)
        if not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), retry_seconds)


async def _listen(engine: AsyncEngine, wakeup: Wakeup, stop: asyncio.Event) -> None:
    """One listening connection, until ``stop`` is set or the connection is lost."""
    lost = asyncio.Event()

    def _heard(*_args: object) -> None:
        wakeup.notify()

    async with engine.connect() as connection:
        raw = (await connection.get_raw_connection()).driver_connection
        assert raw is not None
        await raw.add_listener(CHANNEL, _heard)
        raw.add_termination_listener(lambda *_: lost.set())
        wakeup.notify()  # rows committed before this connection listened
        waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(lost.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        if not lost.is_set():
            await raw.remove_listener(CHANNEL, _heard)
