"""The `fhir_server` pytest fixture: a real in-memory FHIR R4 server on loopback.

It does I/O: it starts `tests/fhir_server/server.mjs` under Node.js as a subprocess on an ephemeral
127.0.0.1 port, waits for its "listening <port>" line, yields the FHIR base URL
(`http://127.0.0.1:<port>/fhir`) and terminates the process at the end of the session. The server
keeps everything in memory and is shared by the whole session, so tests isolate themselves with
fresh identifiers. When Node.js or the server's npm packages (`make fhir-server-deps`) are missing,
every test that uses the fixture is skipped with the reason; a server that is installed but fails
to start fails the test. ``capped_fhir_server`` is a second server that refuses transactions of
more than :data:`TRANSACTION_CAP` entries. ``faulty_fhir_server`` is a third one whose fault mode
tests drive through :class:`FhirFaults` (injected 503/429, delays, dropped connections, hidden
transaction support, request counts).
"""

from __future__ import annotations

import os
import selectors
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

SERVER_DIR = Path(__file__).parent / "fhir_server"
START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 5.0


def _wait_for_port(process: subprocess.Popen[str], deadline: float) -> int | None:
    """Read the server's stdout until "listening <port>", the process exits or time runs out."""
    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    try:
        while (remaining := deadline - time.monotonic()) > 0:
            if not selector.select(timeout=remaining):
                continue
            line = process.stdout.readline()
            if not line:
                return None
            word, _, port = line.strip().partition(" ")
            if word == "listening" and port.isdigit():
                return int(port)
        return None
    finally:
        selector.close()


def _stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT_SECONDS)


#: The transaction size ``capped_fhir_server`` accepts, like servers that cap their transactions.
TRANSACTION_CAP = 8


def _serve(*args: str) -> Iterator[str]:
    """Run the server with ``args`` after the port; yield its base URL; stop it afterwards."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed; the test FHIR server needs node >= 20.19")
    if not (SERVER_DIR / "node_modules" / "@medplum" / "fhir-router").is_dir():
        pytest.skip("test FHIR server packages are not installed; run `make fhir-server-deps`")
    with tempfile.TemporaryFile(mode="w+") as stderr:
        started = time.monotonic()
        process = subprocess.Popen(
            [node, str(SERVER_DIR / "server.mjs"), "0", *args],
            cwd=SERVER_DIR,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env={**os.environ, "NODE_ENV": "test"},
        )
        try:
            port = _wait_for_port(process, started + START_TIMEOUT_SECONDS)
            if port is None:
                _stop(process)
                stderr.seek(0)
                pytest.fail(f"test FHIR server did not start:\n{stderr.read()[-2000:]}")
            yield f"http://127.0.0.1:{port}/fhir"
        finally:
            if process.poll() is None:
                _stop(process)
            if process.stdout is not None:
                process.stdout.close()


@pytest.fixture(scope="session")
def fhir_server() -> Iterator[str]:
    """Base URL of a fresh in-memory FHIR R4 server, shared by the test session."""
    yield from _serve()


@pytest.fixture(scope="session")
def capped_fhir_server() -> Iterator[str]:
    """Like ``fhir_server``, but refusing transactions of more than :data:`TRANSACTION_CAP`
    entries, as servers that cap their transaction size do."""
    yield from _serve(str(TRANSACTION_CAP))


class FhirFaults:
    """The fault mode of a test FHIR server (``tests/fhir_server/faults.mjs``): set and clear
    faults, read and reset the request counts. ``base_url`` is the FHIR base (``.../fhir``)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self._root = base_url.removesuffix("/fhir")

    def set(self, **faults: Any) -> dict[str, Any]:
        """Replace the faults (keys of faults.mjs, e.g. ``fail_first_n=3, retry_after=1``)."""
        response = httpx.post(f"{self._root}/$test-faults", json=faults)
        response.raise_for_status()
        return dict(response.json())

    def clear(self) -> None:
        httpx.delete(f"{self._root}/$test-faults").raise_for_status()

    def requests(self) -> dict[str, Any]:
        """Counts since the last reset: total, by_method, by_type, by_request, faults."""
        response = httpx.get(f"{self._root}/$test-requests")
        response.raise_for_status()
        return dict(response.json())

    def reset_requests(self) -> None:
        httpx.delete(f"{self._root}/$test-requests").raise_for_status()

    def require_auth(self, client_id: str, **registration: Any) -> None:
        """Register a SMART client (``jwks=...`` and/or ``client_secret=...``,
        ``token_lifetime=...``): FHIR requests then need a token from ``/auth/token``."""
        body = {"client_id": client_id, **registration}
        httpx.post(f"{self._root}/$test-auth", json=body).raise_for_status()

    def revoke_tokens(self) -> None:
        httpx.post(f"{self._root}/$test-auth/revoke").raise_for_status()

    def disable_auth(self) -> None:
        httpx.delete(f"{self._root}/$test-auth").raise_for_status()


@pytest.fixture(scope="session")
def _faulty_server_url() -> Iterator[str]:
    yield from _serve()


@pytest.fixture
def faulty_fhir_server(_faulty_server_url: str) -> Iterator[FhirFaults]:
    """A test FHIR server of its own for fault and auth tests (shared by the session, so other
    tests never meet a fault): no faults, no auth and zero counts at the start of each test, faults
    and auth cleared after it."""
    faults = FhirFaults(_faulty_server_url)
    faults.clear()
    faults.disable_auth()
    faults.reset_requests()
    try:
        yield faults
    finally:
        faults.clear()
        faults.disable_auth()
