"""Schemathesis against the OpenAPI document of a real ``cm-fhir serve``: no request it makes
gets a 5xx. Slow (minutes): run by ``make soak`` and ``make fuzz-api``.

``CM_FHIR_FUZZ_EXAMPLES`` sets the examples per operation (default 50).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from live_api import start_serve

FUZZ_KEY = "fuzz-key-0123456789abcdef"
SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")


@pytest.mark.slow
async def test_no_request_gets_a_server_error(tmp_path: Path) -> None:
    serve = await start_serve(tmp_path / "data", env={"CM_FHIR_API_KEYS": FUZZ_KEY})
    try:
        fuzz = await asyncio.create_subprocess_exec(
            SCHEMATHESIS,
            "run",
            f"{serve.url}/openapi.json",
            "--header",
            f"Authorization: Bearer {FUZZ_KEY}",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            os.environ.get("CM_FHIR_FUZZ_EXAMPLES", "50"),
            "--workers",
            "1",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=tmp_path,  # schemathesis keeps its state in the working directory
        )
        async with asyncio.timeout(1800):
            output, _ = await fuzz.communicate()
    finally:
        await serve.stop()
    assert fuzz.returncode == 0, output.decode(errors="replace")[-6000:]
    assert "passed" in output.decode(errors="replace")
