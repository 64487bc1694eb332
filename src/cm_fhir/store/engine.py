"""Database engines and migrations. I/O: opens connections, runs Alembic.

:func:`make_engine` builds an async engine for a URL: SQLite (aiosqlite) is set to WAL with
``synchronous=FULL`` (a commit survives power loss) and ``BEGIN IMMEDIATE`` transactions (a
writer takes the lock up front instead of failing on upgrade); PostgreSQL (asyncpg) may be given a
``search_path`` so that tests and tenants can live in their own schema. :func:`upgrade_database`
runs the hand-written Alembic revisions shipped in ``cm_fhir.store.migrations``.
"""

from __future__ import annotations

import sqlite3
from importlib.resources import files
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, event
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from cm_fhir.errors import ConfigError, StoreError

__all__ = [
    "DEFAULT_DATABASE_URL",
    "current_revision",
    "make_engine",
    "open_sqlite_writer",
    "upgrade_database",
]

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///cm-fhir.sqlite3"


def make_engine(url: str, *, search_path: str | None = None, pool_size: int = 5) -> AsyncEngine:
    """Create an async engine for ``url`` with the settings the inbox relies on."""
    try:
        if url.startswith("sqlite"):
            engine = create_async_engine(url, connect_args={"timeout": 30})
            _configure_sqlite(engine)
            return engine
        connect_args: dict[str, Any] = {}
        if search_path:
            connect_args["server_settings"] = {"search_path": search_path}
        return create_async_engine(
            url, pool_size=pool_size, max_overflow=pool_size, connect_args=connect_args
        )
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise ConfigError(f"database URL cannot be used: {type(exc).__name__}") from exc


def open_sqlite_writer(engine: AsyncEngine) -> sqlite3.Connection:
    """A plain sqlite3 connection to the engine's SQLite file, for the inbox writer thread.

    Same settings as :func:`make_engine` (WAL, ``synchronous=FULL``, busy timeout); the caller
    issues ``BEGIN IMMEDIATE`` / ``COMMIT`` itself, so a group commit is one thread hop with no
    pool or statement-compilation cost.
    """
    path = engine.url.database
    if path in (None, "", ":memory:"):
        raise ConfigError("the inbox needs a SQLite file, not an in-memory database")
    try:
        connection = sqlite3.connect(
            path, timeout=30, isolation_level=None, check_same_thread=False
        )
        for pragma in _SQLITE_PRAGMAS:
            connection.execute(pragma)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the SQLite inbox: {type(exc).__name__}") from exc
    return connection


_SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    "PRAGMA busy_timeout=30000",
)


def _configure_sqlite(engine: AsyncEngine) -> None:
    target = engine.sync_engine

    @event.listens_for(target, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself (the driver's implicit BEGIN is
        # deferred and would fail with SQLITE_BUSY when a read upgrades to a write).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in _SQLITE_PRAGMAS:
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(target, "begin")
    def _on_begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(files("cm_fhir.store") / "migrations"))
    config.attributes["connection"] = connection
    return config


async def upgrade_database(engine: AsyncEngine, revision: str = "head") -> None:
    """Apply the shipped migrations up to ``revision`` (idempotent)."""

    def _upgrade(connection: Connection) -> None:
        command.upgrade(_alembic_config(connection), revision)

    try:
        async with engine.begin() as connection:
            await connection.run_sync(_upgrade)
    except (SQLAlchemyError, OSError) as exc:
        raise StoreError(f"database migration failed: {type(exc).__name__}") from exc


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at, or None before the first migration."""
    from alembic.runtime.migration import MigrationContext

    def _read(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    async with engine.connect() as connection:
        return await connection.run_sync(_read)
