"""An event loop in a thread of its own. I/O (a thread).

The worker's transactions on PostgreSQL run their Python work (parsing, the workflow, mapping)
between the statements, on the loop that awaits them. In ``cm-fhir serve`` that loop also answers
MLLP senders and HTTP clients, so :class:`LoopThread` gives the worker a loop of its own: the
caller awaits :meth:`LoopThread.run` and its own loop stays free while the work runs there. Async
database engines are bound to the loop they connect on, so the worker opens its own engine for
that loop (:func:`cm_fhir.store.engine.sibling_engine`).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["LoopThread"]

_T = TypeVar("_T")


class LoopThread:
    """A running event loop in a daemon thread; :meth:`close` stops it."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    async def run(self, work: Coroutine[Any, Any, _T]) -> _T:
        """Run ``work`` on this loop; its result (or exception) comes back to the caller's loop.
        Cancelling the caller cancels ``work``."""
        future = asyncio.run_coroutine_threadsafe(work, self.loop)
        return await asyncio.wrap_future(future)

    async def close(self, last: Coroutine[Any, Any, Any] | None = None) -> None:
        """Run ``last`` (a clean-up) on this loop, then stop it and its thread."""
        if self.loop.is_closed():
            if last is not None:
                last.close()
            return
        try:
            if last is not None:
                await self.run(last)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            await asyncio.to_thread(self._thread.join)
            self.loop.close()
