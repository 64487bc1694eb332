"""Fixtures for the inbox store and the MLLP listener, over SQLite and PostgreSQL. Does I/O.

``inbox_engine`` is parametrised: a fresh SQLite file per test, and a PostgreSQL schema created
once per test session (random name, so concurrent runs on the same server do not collide; dropped
at the end) and emptied before each test. The PostgreSQL URL comes from ``CM_FHIR_TEST_PG_URL``;
when that server cannot be reached the PostgreSQL variants are skipped with the reason.
``running_listener`` starts an in-process :class:`~cm_fhir.listener.MllpListener` on an ephemeral
127.0.0.1 port over that engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from cm_fhir.listener import ListenerConfig, MllpListener
from cm_fhir.store.engine import make_engine, upgrade_database
from cm_fhir.store.tables import inbox_messages
from cm_fhir.store.writer import InboxWriter

PG_URL = os.environ.get("CM_FHIR_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")


@dataclass(frozen=True)
class Database:
    """Where a test's inbox lives: a URL plus, for PostgreSQL, the schema on the search path."""

    url: str
    search_path: str | None = None

    def engine(self) -> AsyncEngine:
        return make_engine(self.url, search_path=self.search_path)


async def _pg_admin(statement: str) -> None:
    engine = make_engine(PG_URL)
    try:
        async with engine.begin() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def pg_schema() -> Iterator[str]:
    """A random PostgreSQL schema for this session, migrated once, dropped at the end."""
    schema = f"cmfhir_inbox_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_pg_admin(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:  # server absent: skip the PostgreSQL variants, say why
        pytest.skip(f"PostgreSQL at CM_FHIR_TEST_PG_URL unreachable: {type(exc).__name__}")

    async def _migrate() -> None:
        engine = make_engine(PG_URL, search_path=schema)
        try:
            await upgrade_database(engine)
        finally:
            await engine.dispose()

    asyncio.run(_migrate())
    yield schema
    asyncio.run(_pg_admin(f'DROP SCHEMA "{schema}" CASCADE'))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    """The database of one test: a fresh SQLite file, or the session's PostgreSQL schema."""
    if request.param == "sqlite":
        return Database(f"sqlite+aiosqlite:///{tmp_path / 'inbox.sqlite3'}")
    schema: str = request.getfixturevalue("pg_schema")
    return Database(PG_URL, search_path=schema)


@pytest.fixture
async def inbox_engine(database: Database) -> AsyncIterator[AsyncEngine]:
    """A migrated, empty inbox."""
    engine = database.engine()
    await upgrade_database(engine)
    if engine.dialect.name == "postgresql":
        async with engine.begin() as connection:
            await connection.execute(text("TRUNCATE inbox_message RESTART IDENTITY"))
    yield engine
    await engine.dispose()


@pytest.fixture
def listener_config() -> ListenerConfig:
    """Listener settings for tests: ephemeral port; tests may replace fields."""
    # Tests open many connections from one loopback address: no per-peer limit by default.
    return ListenerConfig(
        host="127.0.0.1", port=0, idle_timeout=30.0, shutdown_grace=5.0, max_connections_per_peer=0
    )


@pytest.fixture
async def running_listener(
    inbox_engine: AsyncEngine, listener_config: ListenerConfig
) -> AsyncIterator[MllpListener]:
    """An MLLP listener on 127.0.0.1 (ephemeral port) storing into ``inbox_engine``."""
    async with InboxWriter(inbox_engine) as writer:
        listener = MllpListener(listener_config, writer)
        await listener.start()
        yield listener
        await listener.stop()


@contextlib.asynccontextmanager
async def listening(engine: AsyncEngine, config: ListenerConfig) -> AsyncIterator[MllpListener]:
    """A started listener with ``config`` over ``engine``, stopped on exit."""
    async with InboxWriter(engine) as writer:
        listener = MllpListener(config, writer)
        await listener.start()
        try:
            yield listener
        finally:
            await listener.stop()


async def stored_rows(engine: AsyncEngine) -> list[dict[str, object]]:
    """Every inbox row, in id order."""
    async with engine.connect() as connection:
        result = await connection.execute(select(inbox_messages).order_by(inbox_messages.c.id))
        return [dict(row._mapping) for row in result]


async def wait_for_rows(
    engine: AsyncEngine, count: int, timeout: float = 10.0
) -> list[dict[str, object]]:
    """The inbox rows once there are ``count`` of them (or whatever is there after ``timeout``)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        found = await stored_rows(engine)
        if len(found) >= count or loop.time() > deadline:
            return found
        await asyncio.sleep(0.05)
