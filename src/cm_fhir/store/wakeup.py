"""Commit signals between the roles of one process: "rows are waiting", without a poll. I/O-free.

The listener's inbox writer commits messages and the worker is waiting for them: when both run
in one process (``cm-fhir serve``), the writer calls :meth:`Wakeup.notify` and each waiting loop
wakes at once; across processes the worker finds the rows by its poll interval. Committed outbox
rows wake the sync role through the engine's own Wakeup
(:func:`~cm_fhir.store.outbox_signal.outbox_wakeup`; across processes on PostgreSQL too).
:func:`idle` is the loops' wait: until notified, ``stop`` or the poll interval.
"""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["Wakeup", "idle"]


class Wakeup:
    """Fan-out signal: each loop :meth:`listen`s with its own event; :meth:`notify` sets all."""

    def __init__(self) -> None:
        self._events: list[asyncio.Event] = []

    def listen(self) -> asyncio.Event:
        event = asyncio.Event()
        self._events.append(event)
        return event

    def notify(self) -> None:
        for event in self._events:
            event.set()


async def idle(stop: asyncio.Event, seconds: float, woken: asyncio.Event | None = None) -> None:
    """Wait ``seconds``, or less when ``stop`` or ``woken`` is set; ``woken`` is then cleared
    (a notify that came while the loop worked ends this wait at once)."""
    if woken is None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
        return
    if not woken.is_set():
        waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(woken.wait())]
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
    woken.clear()
