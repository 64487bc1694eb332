"""The front door over real sockets: authentication before the body, the body limit (413).

The app runs under uvicorn on an ephemeral port; requests are written on a plain socket so a test
can promise a body (a huge ``Content-Length``, or chunks without the last one) and never send
it. A server that read the body before answering would wait, and the exchange would time out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from api_fixtures import API_KEY
from cm_fhir.api.app import create_app
from cm_fhir.settings import Settings
from cm_fhir.store.audit import audit_events
from hl7v2_samples import evn, msh, pid, pv1
from inbox_fixtures import Database
from live_api import chunk, raw_exchange, request_head, rss_bytes, serving, start_serve

LIMIT = 64 * 1024
HUGE = 100 * 1024 * 1024


def adt(event: str, control_id: str, mrn: str) -> str:
    return "\r".join([msh(event, "2.5.1", control_id=control_id), evn(event), pid(mrn), pv1()])


BODY_ROUTES = ["/api/messages/replay", "/api/hl7v2", "/api/cases", "/fhir/Task", "/api/nowhere"]


@pytest.fixture
def database(tmp_path: Path) -> Database:
    """SQLite only: the store plays no part at the front door (audit on both: test_api_audit)."""
    return Database(f"sqlite+aiosqlite:///{tmp_path / 'front.sqlite3'}")


@pytest.fixture
async def port(inbox_engine: AsyncEngine, api_settings: Settings) -> AsyncIterator[int]:
    settings = api_settings.model_copy(
        update={"http": api_settings.http.model_copy(update={"max_body_bytes": LIMIT})}
    )
    async with serving(create_app(settings, engine=inbox_engine)) as bound:
        yield bound


def _json_headers(length: int | None = None, token: str | None = None) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if length is not None:
        headers["Content-Length"] = str(length)
    else:
        headers["Transfer-Encoding"] = "chunked"
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def _error_shape(path: str, body: bytes, status: int) -> None:
    answer = json.loads(body)
    if path.startswith("/fhir"):
        assert answer["resourceType"] == "OperationOutcome"
    else:
        assert answer["error"]["status"] == status


@pytest.mark.parametrize("path", BODY_ROUTES)
async def test_unauthenticated_huge_declared_body_is_refused_without_reading_it(
    port: int, path: str
) -> None:
    head = request_head("POST", path, _json_headers(HUGE))
    response = await raw_exchange(port, head)  # not one byte of the 100 MB is sent
    assert response.status == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    _error_shape(path, response.body, 401)
    assert response.closed  # the server stops reading instead of draining the body


@pytest.mark.parametrize("token", [None, "not-the-key-0123456789"], ids=["none", "wrong"])
async def test_unauthenticated_chunked_body_is_refused_without_reading_it(
    port: int, token: str | None
) -> None:
    head = request_head("POST", "/api/messages/replay", _json_headers(token=token))
    response = await raw_exchange(port, head, (chunk(b'{"ids": [' + b"1," * 500),))
    assert response.status == 401
    assert response.closed


@pytest.mark.parametrize("path", BODY_ROUTES)
async def test_declared_length_over_the_limit_is_413_at_once(port: int, path: str) -> None:
    head = request_head("POST", path, _json_headers(LIMIT + 1, API_KEY))
    response = await raw_exchange(port, head)
    assert response.status == 413
    _error_shape(path, response.body, 413)
    if path.startswith("/fhir"):
        assert json.loads(response.body)["issue"][0]["code"] == "too-costly"
    assert response.closed


@pytest.mark.parametrize("path", ["/api/messages/replay", "/api/hl7v2", "/api/cases"])
async def test_chunked_body_is_counted_while_it_streams(port: int, path: str) -> None:
    head = request_head("POST", path, _json_headers(token=API_KEY))
    parts = tuple(chunk(b" " * 8192) for _ in range(LIMIT // 8192 + 1))  # no final chunk
    response = await raw_exchange(port, head, parts)
    assert response.status == 413
    assert json.loads(response.body)["error"]["code"] == "too_large"
    assert response.closed


async def test_bodies_within_the_limit_are_served(port: int, inbox_engine: AsyncEngine) -> None:
    message = adt("A01", "FD-1", "MRN-FD-1").encode()

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(message), 50):
            yield message[start : start + 50]

    headers = {"Authorization": f"Bearer {API_KEY}"}
    text = {"Content-Type": "text/plain"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers) as http:
        whole = await http.post("/api/hl7v2", content=message, headers=text)
        streamed = await http.post("/api/hl7v2", content=chunks(), headers=text)  # chunked
        replay = await http.post("/api/messages/replay", json={"ids": [1]})
    assert whole.status_code == 200, whole.text
    assert whole.headers["x-hl7-ack-code"] == "AA"
    assert streamed.status_code == 200, streamed.text
    assert replay.status_code == 200, replay.text


async def _next_audit_id(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        last = (await connection.execute(select(func.max(audit_events.c.id)))).scalar()
    return int(last or 0) + 1


async def test_refusals_are_audited_without_the_token(port: int, inbox_engine: AsyncEngine) -> None:
    wrong = "wrong-token-0123456789abcdef"
    first = await _next_audit_id(inbox_engine)
    head = request_head("POST", "/api/messages/5/replay", _json_headers(HUGE, wrong))
    assert (await raw_exchange(port, head)).status == 401
    head = request_head("GET", "/api/messages", {})
    assert (await raw_exchange(port, head)).status == 401
    async with inbox_engine.connect() as connection:
        query = select(audit_events).where(audit_events.c.id >= first).order_by(audit_events.c.id)
        rows = (await connection.execute(query)).mappings().all()
    denied = [dict(r) for r in rows if r["action"] == "authenticate"]
    assert [(r["route"], r["outcome"], r["client"]) for r in denied] == [
        ("/api/messages/{message_id}/replay", "denied", "127.0.0.1"),
        ("/api/messages", "denied", "127.0.0.1"),
    ]
    assert denied[0]["subject"].startswith("token:")
    assert denied[1]["subject"] == "anonymous"
    assert all(wrong not in str(value) for r in denied for value in r.values())


@pytest.mark.slow
async def test_four_unauthenticated_100_mb_posts_do_not_grow_the_serve_process(
    tmp_path: Path,
) -> None:
    """The attack as found: four 100 MB POSTs at once against ``cm-fhir serve``."""
    serve = await start_serve(tmp_path / "data")
    try:
        port = int(serve.url.rsplit(":", 1)[1])
        before = rss_bytes(serve.process.pid)

        async def attack() -> int:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)

            async def status() -> int:  # read while sending: the answer comes before the body
                line = await reader.readuntil(b"\r\n")
                return int(line.split()[1])

            answer = asyncio.create_task(status())
            writer.write(request_head("POST", "/api/cases", _json_headers(HUGE)))
            block = b"x" * (1024 * 1024)
            with contextlib.suppress(ConnectionError):
                for _ in range(HUGE // len(block)):
                    writer.write(block)
                    await writer.drain()
                    if answer.done():
                        break
            code = await answer
            writer.close()
            return code

        async with asyncio.timeout(120):
            statuses = await asyncio.gather(*(attack() for _ in range(4)))
        grown = rss_bytes(serve.process.pid) - before
    finally:
        await serve.stop()
    assert statuses == [401] * 4
    assert grown < 50 * 1024 * 1024, f"RSS grew by {grown / 1e6:.0f} MB"
