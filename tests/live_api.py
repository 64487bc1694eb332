"""The API over real sockets: uvicorn on an ephemeral port, a raw HTTP/1.1 exchange, and the real
``cm-fhir serve`` as a subprocess. Does I/O.

``serving(app)`` runs an app under uvicorn (lifespan on) on 127.0.0.1, port 0, and yields the
port. ``raw_exchange`` writes request bytes on a plain socket and reads one response, so a test
can send headers that promise a body it never sends, and see whether the server answers anyway
and whether it closes the connection. ``start_serve`` starts ``cm-fhir serve`` and reads its
start-up lines (API URL, generated API key, MLLP port).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from fastapi import FastAPI

CLI = str(Path(sys.executable).parent / "cm-fhir")


class _QuietServer(uvicorn.Server):
    """uvicorn without signal handlers (the test runner owns them)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[int]:
    """Serve ``app`` on 127.0.0.1 (ephemeral port) until the block ends; yields the port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.setblocking(False)
    config = uvicorn.Config(app, lifespan="on", log_config=None, access_log=False)
    server = _QuietServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        yield int(sock.getsockname()[1])
    finally:
        server.should_exit = True
        await task
        sock.close()


@dataclass
class RawResponse:
    """One HTTP response read off a socket, and whether the server then closed the connection."""

    status: int
    headers: dict[str, str]
    body: bytes
    closed: bool = False
    sent_body_bytes: int = 0


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


async def raw_exchange(
    port: int, head: bytes, body_parts: tuple[bytes, ...] = (), *, timeout: float = 20.0
) -> RawResponse:
    """Send ``head`` then ``body_parts`` (without finishing a promised body) and read the answer.

    Raises TimeoutError when no response comes within ``timeout``: a server waiting for the rest
    of a body it should never have started to read.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sent = 0
    try:
        writer.write(head)
        for part in body_parts:
            writer.write(part)
            sent += len(part)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        async with asyncio.timeout(timeout):
            status, headers, body = await _read_response(reader)
        closed = False
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(2.0):
                closed = await reader.read(1) == b""
        return RawResponse(status, headers, body, closed, sent)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def request_head(method: str, path: str, headers: dict[str, str]) -> bytes:
    """An HTTP/1.1 request line and headers (Host included), ending with the blank line."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body."""
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


@dataclass
class ServeProcess:
    """A running ``cm-fhir serve``: its process, API URL, the key it generated, its MLLP port,
    and the FHIR endpoints it syncs to (as its start-up lines name them)."""

    process: asyncio.subprocess.Process
    url: str
    key: str
    mllp_port: int = 0
    endpoints: str = ""

    def found(self) -> dict[str, str]:
        """The start-up facts as strings, for tests that read them by name."""
        facts = {"url": self.url, "key": self.key, "mllp_port": str(self.mllp_port)}
        return {**facts, "endpoints": self.endpoints} if self.endpoints else facts

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()
            async with asyncio.timeout(30):
                await self.process.communicate()


async def start_serve(
    data_dir: Path | None,
    *extra: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    log_level: str = "WARNING",
    stderr: int = asyncio.subprocess.DEVNULL,
) -> ServeProcess:
    """Start ``cm-fhir serve`` on free ports, without the caller's ``CM_FHIR_`` environment.

    ``data_dir``: the SQLite folder (None: the default one, relative to ``cwd``). The one
    start-up reader of the suite: every test that runs ``serve`` as a process comes here.
    """
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CM_FHIR_")}
    where = ("--data-dir", str(data_dir)) if data_dir is not None else ()
    process = await asyncio.create_subprocess_exec(
        CLI,
        "serve",
        "--http-port",
        "0",
        "--mllp-port",
        "0",
        *where,
        "--log-level",
        log_level,
        *extra,
        stdout=asyncio.subprocess.PIPE,
        stderr=stderr,
        env={**clean, **(env or {})},
        cwd=cwd,
    )
    assert process.stdout is not None
    serve = ServeProcess(process, "", "")
    async with asyncio.timeout(60):
        while True:
            line = (await process.stdout.readline()).decode()
            assert line, "serve exited before it was ready"
            if line.startswith("cm-fhir api on "):
                serve.url = line.split()[3]
            elif line.startswith("cm-fhir API key"):
                serve.key = line.split()[-1]
            elif line.startswith("cm-fhir listening on "):
                serve.mllp_port = int(line.rsplit(":", 1)[1])
            elif line.startswith("cm-fhir sync to FHIR endpoint(s): "):
                serve.endpoints = line.split(": ", 1)[1].strip()
            elif line.startswith("cm-fhir ready"):
                return serve


def rss_bytes(pid: int) -> int:
    """The resident set size of a process (Linux ``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")
