"""The event loop of the long-running commands: uvloop's when it is installed, asyncio's if not."""

from __future__ import annotations

import asyncio
import importlib.util

from cm_fhir import event_loop


async def _loop_module() -> str:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop()).__module__


def test_run_uses_uvloop_exactly_when_it_is_installed() -> None:
    installed = importlib.util.find_spec("uvloop") is not None
    module = event_loop.run(_loop_module())
    assert module.startswith("uvloop") is installed
    assert event_loop.loop_name() == ("uvloop" if installed else "asyncio")
