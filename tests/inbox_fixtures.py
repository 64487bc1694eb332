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
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from cm_fhir.listener import ListenerConfig, MllpListener
from cm_fhir.store.engine import make_engine, upgrade_database
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
