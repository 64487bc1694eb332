"""The event loop the long-running commands run on: uvloop's when it is installed. I/O edge.

``cm-fhir serve`` and ``cm-fhir listen`` spend much of each MLLP message in the event loop itself
(socket reads and writes, callbacks, timers); uvloop (libuv, the loop uvicorn uses) does that work
in C and takes a good part of it off every message. It is a dependency on CPython outside Windows;
where it is not installed the standard asyncio loop runs the same code. See ADR 0024.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["loop_factory", "loop_name", "run"]

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's ``new_event_loop`` when uvloop can be imported, else None (asyncio's own)."""
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def loop_name() -> str:
    """``uvloop`` or ``asyncio``: the loop :func:`run` uses here."""
    return "asyncio" if loop_factory() is None else "uvloop"


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on a new loop (uvloop's when installed), as asyncio.run does."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
