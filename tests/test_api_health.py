"""``/ready`` turns 503 with the reason when intake is stalled, on SQLite and PostgreSQL: the inbox
cannot be written (a read-only database, another writer holding the inbox's lock) or its oldest
unprocessed message is older than ``health.max_inbox_age_seconds``. ``/health`` stays liveness."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text, update
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from cm_fhir.api.app import create_app
from cm_fhir.settings import Settings
from cm_fhir.store.queue import WAITING_PREFIX
from cm_fhir.store.tables import inbox_messages
from hl7v2_samples import evn, msh, pid, pv1
from inbox_fixtures import PG_URL, Database

MAX_AGE = 60.0
HL7 = {"Content-Type": "x-application/hl7-v2+er7"}


def _settings(api_settings: Settings) -> Settings:
    health = api_settings.health.model_copy(
        update={"max_inbox_age_seconds": MAX_AGE, "write_probe_timeout": 0.5}
    )
    return api_settings.model_copy(update={"health": health})


@pytest.fixture
async def app(inbox_engine: AsyncEngine, api_settings: Settings) -> AsyncIterator[FastAPI]:
    built = create_app(_settings(api_settings), engine=inbox_engine)
    async with built.router.lifespan_context(built):
        yield built


def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://cm-fhir.test")


async def _ingest(app: FastAPI, control_id: str) -> None:
    message = "\r".join([msh("A01", "2.5.1", control_id=control_id), evn("A01"), pid(), pv1()])
    headers = {
        **HL7,
        "Authorization": f"Bearer {app.state.context.settings.api_keys[0].get_secret_value()}",
    }
    async with _client(app) as http:
        assert (
            await http.post("/api/hl7v2", content=message.encode(), headers=headers)
        ).status_code == 200


async def _age_rows(engine: AsyncEngine, seconds: float, reason: str | None = None) -> None:
    old = datetime.now(UTC) - timedelta(seconds=seconds)
    async with engine.begin() as connection:
        await connection.execute(update(inbox_messages).values(received_at=old, reason=reason))


async def test_ready_while_the_inbox_is_fresh_and_503_when_its_oldest_message_is_stale(
    app: FastAPI, inbox_engine: AsyncEngine
) -> None:
    async with _client(app) as http:
        assert (await http.get("/ready")).status_code == 200
        await _ingest(app, "H-1")
        await _age_rows(inbox_engine, MAX_AGE / 2)
        assert (await http.get("/ready")).status_code == 200
        await _age_rows(inbox_engine, MAX_AGE * 3)
        stale = await http.get("/ready")
        health = await http.get("/health")
    assert stale.status_code == 503
    body = stale.json()
    assert body["checks"]["inbox_age"] is False
    assert body["checks"]["inbox_writable"] is True
    assert any("oldest unprocessed inbox message" in r for r in body["reasons"])
    assert health.status_code == 200  # liveness: restarting would not help a stalled queue


async def test_rows_waiting_behind_a_dead_letter_do_not_count(
    app: FastAPI, inbox_engine: AsyncEngine
) -> None:
    await _ingest(app, "H-2")
    await _age_rows(inbox_engine, MAX_AGE * 3, reason=f"{WAITING_PREFIX}7")
    async with _client(app) as http:
        assert (await http.get("/ready")).status_code == 200


async def test_processed_rows_do_not_count(app: FastAPI, inbox_engine: AsyncEngine) -> None:
    await _ingest(app, "H-3")
    await _age_rows(inbox_engine, MAX_AGE * 3)
    async with inbox_engine.begin() as connection:
        await connection.execute(update(inbox_messages).values(state="processed"))
    async with _client(app) as http:
        assert (await http.get("/ready")).status_code == 200


async def test_503_while_another_writer_holds_the_inbox(
    app: FastAPI, inbox_engine: AsyncEngine, database: Database
) -> None:
    async with _client(app) as http:
        assert (await http.get("/ready")).status_code == 200
        if inbox_engine.dialect.name == "sqlite":
            path = database.url.split("///", 1)[1]
            holder = sqlite3.connect(path, isolation_level=None)
            holder.execute("BEGIN IMMEDIATE")
            try:
                blocked = await http.get("/ready")
            finally:
                holder.execute("ROLLBACK")
                holder.close()
        else:
            async with inbox_engine.connect() as holder:
                await holder.execute(text("LOCK TABLE inbox_message IN EXCLUSIVE MODE"))
                blocked = await http.get("/ready")
                await holder.rollback()
        again = await http.get("/ready")
    assert blocked.status_code == 503, blocked.text
    assert blocked.json()["checks"]["database"] is True  # it answers; it cannot take a write
    assert blocked.json()["checks"]["inbox_writable"] is False
    assert any("cannot be written" in r for r in blocked.json()["reasons"]), blocked.text
    # Reading the inbox's age takes no write lock, so the held lock does not fail it.
    assert blocked.json()["checks"]["inbox_age"] is True, blocked.text
    assert again.status_code == 200


def _read_only_engine(database: Database) -> AsyncEngine:
    if database.url.startswith("sqlite"):
        path = database.url.split("///", 1)[1]
        return create_async_engine(f"sqlite+aiosqlite:///file:{path}?mode=ro&uri=true")
    settings = {"search_path": database.search_path or "", "default_transaction_read_only": "on"}
    return create_async_engine(PG_URL, connect_args={"server_settings": settings})


async def test_503_on_a_read_only_database(
    inbox_engine: AsyncEngine, database: Database, api_settings: Settings
) -> None:
    read_only = _read_only_engine(database)
    try:
        app = create_app(_settings(api_settings), engine=read_only)
        async with app.router.lifespan_context(app), _client(app) as http:
            ready = await http.get("/ready")
            health = await http.get("/health")
    finally:
        await read_only.dispose()
    assert ready.status_code == 503
    body = ready.json()
    assert body["checks"]["database"] is True
    assert body["checks"]["inbox_writable"] is False
    assert health.status_code == 200
