"""Database engines and migrations. I/O: opens connections, runs Alembic.

:func:`make_engine` builds an async engine for a URL. Plain URLs get the async driver
(:func:`async_url`: ``sqlite:///x.db`` -> aiosqlite, ``postgresql://`` and ``postgres://`` ->
asyncpg). SQLite is set to WAL with ``synchronous=FULL`` (a commit survives power loss) and
``BEGIN IMMEDIATE`` transactions (a writer takes the lock up front instead of failing on upgrade);
PostgreSQL may be given a schema (``search_path``) so that tests and tenants can live in their own.
:func:`engine_for` does this for a :class:`~cm_fhir.settings.Settings`. :func:`upgrade_database`
runs the hand-written Alembic revisions shipped in ``cm_fhir.store.migrations`` (creating the
schema first) and returns the revisions it applied; :func:`revision_history` lists them all.
"""

from __future__ import annotations

import sqlite3
import weakref
from importlib.resources import files
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from cm_fhir.errors import ConfigError, StoreError
from cm_fhir.settings import DATABASE_DRIVERS, Settings

__all__ = [
    "READ_ONLY_OPTION",
    "async_url",
    "current_revision",
    "engine_for",
    "make_engine",
    "open_sqlite_writer",
    "revision_history",
    "sibling_engine",
    "sqlite_thread_engine",
    "upgrade_database",
]


def async_url(url: str) -> URL:
    """``url`` with the async driver cm-fhir uses (``sqlite:///x.db`` -> aiosqlite).

    ``sslmode`` (libpq's name, found in most ``DATABASE_URL`` values) becomes asyncpg's ``ssl``.

    Raises:
        ConfigError: not a URL, or a database cm-fhir does not support (names the scheme).
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(
            "database_url is not a database URL (e.g. sqlite:///cm-fhir.sqlite3 or "
            "postgresql://user@host/db)"
        ) from exc
    name = DATABASE_DRIVERS.get(parsed.drivername.lower())
    if name is None:
        raise ConfigError(
            f"database_url: {parsed.drivername}:// is not supported; use sqlite:// or postgresql://"
        )
    parsed = parsed.set(drivername=name)
    if name == "postgresql+asyncpg" and "sslmode" in parsed.query:
        query = dict(parsed.query)
        query["ssl"] = query.pop("sslmode")
        parsed = parsed.set(query=query)
    return parsed


def engine_for(settings: Settings, *, pool_size: int = 5) -> AsyncEngine:
    """The engine of the configured database (URL, or the embedded file, and schema)."""
    return make_engine(
        settings.effective_database_url, search_path=settings.database_schema, pool_size=pool_size
    )


_MADE: weakref.WeakKeyDictionary[AsyncEngine, tuple[str, str | None, int]] = (
    weakref.WeakKeyDictionary()
)


def make_engine(url: str, *, search_path: str | None = None, pool_size: int = 5) -> AsyncEngine:
    """Create an async engine for ``url`` with the settings the inbox relies on."""
    target = async_url(url)
    try:
        if target.get_backend_name() == "sqlite":
            engine = create_async_engine(target, connect_args={"timeout": 30})
            _configure_sqlite(engine.sync_engine)
        else:
            connect_args: dict[str, Any] = {}
            if search_path:
                connect_args["server_settings"] = {"search_path": search_path}
            engine = create_async_engine(
                target, pool_size=pool_size, max_overflow=pool_size, connect_args=connect_args
            )
    except (SQLAlchemyError, ImportError, ValueError, TypeError) as exc:
        raise ConfigError(f"database_url cannot be used: {exc}") from exc
    _MADE[engine] = (url, search_path, pool_size)
    return engine


def sibling_engine(engine: AsyncEngine) -> AsyncEngine:
    """A new engine to the same database with the same settings (URL, schema, pool), for use
    on another event loop: an async engine's connections belong to the loop that opened them.

    Raises:
        ConfigError: ``engine`` was not made by :func:`make_engine`.
    """
    made = _MADE.get(engine)
    if made is None:
        raise ConfigError("this engine was not made by make_engine: its settings are not known")
    url, search_path, pool_size = made
    return make_engine(url, search_path=search_path, pool_size=pool_size)


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
        raise StoreError(f"cannot open the SQLite inbox {path}: {exc}") from exc
    return connection


def sqlite_thread_engine(engine: AsyncEngine) -> Engine | None:
    """A synchronous engine (the standard library's sqlite3) on the async engine's SQLite file,
    for work that runs whole in one thread of its own; None for an in-memory database.

    Same settings as :func:`make_engine` (WAL, ``synchronous=FULL``, ``BEGIN IMMEDIATE`` unless
    :data:`READ_ONLY_OPTION`): a transaction of many statements then costs no thread hop per
    statement, and its Python work does not run on the event loop.
    """
    path = engine.url.database
    if engine.dialect.name != "sqlite" or path in (None, "", ":memory:"):
        return None
    url = engine.url.set(drivername="sqlite")
    sync = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, pool_size=1)
    _configure_sqlite(sync)
    return sync


#: Execution option for a connection that only reads: on SQLite its transactions begin deferred
#: (``connection.execution_options(**{READ_ONLY_OPTION: True})``); it must not write.
READ_ONLY_OPTION = "cm_fhir_read_only"

_SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    "PRAGMA busy_timeout=30000",
)


def _configure_sqlite(target: Engine) -> None:
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
        # Writers take the lock at BEGIN; a connection marked READ_ONLY reads in a deferred
        # transaction, so a held write lock never makes it wait.
        read_only = connection.get_execution_options().get(READ_ONLY_OPTION, False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def _alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(files("cm_fhir.store") / "migrations"))
    config.attributes["connection"] = connection
    return config


def revision_history() -> list[tuple[str, str]]:
    """The shipped revisions, oldest first: ``(revision, description)``."""
    script = ScriptDirectory.from_config(_alembic_config())
    return [(r.revision, r.doc or "") for r in reversed(list(script.walk_revisions()))]


def _ensure_schema(connection: Connection) -> None:
    """Create the first schema of a PostgreSQL ``search_path`` if it is missing."""
    if connection.dialect.name != "postgresql":
        return
    first = str(connection.scalar(text("SELECT current_setting('search_path')")))
    name = first.split(",")[0].strip().strip('"')
    if not name or name.startswith("$"):
        return
    found = connection.scalar(
        text("SELECT 1 FROM pg_namespace WHERE nspname = :name"), {"name": name}
    )
    if found is None:
        quoted = connection.dialect.identifier_preparer.quote_identifier(name)
        connection.execute(text(f"CREATE SCHEMA {quoted}"))


async def upgrade_database(engine: AsyncEngine, revision: str = "head") -> list[str]:
    """Apply the shipped migrations up to ``revision`` (idempotent); the revisions applied.

    On PostgreSQL the configured schema is created first when it does not exist.
    """
    from alembic.runtime.migration import MigrationContext

    def _upgrade(connection: Connection) -> list[str]:
        _ensure_schema(connection)
        before = MigrationContext.configure(connection).get_current_revision()
        command.upgrade(_alembic_config(connection), revision)
        after = MigrationContext.configure(connection).get_current_revision()
        if after == before:
            return []
        names = [name for name, _ in revision_history()]
        start = names.index(before) + 1 if before in names else 0
        stop = names.index(after) + 1 if after in names else len(names)
        return names[start:stop]

    try:
        async with engine.begin() as connection:
            return await connection.run_sync(_upgrade)
    except (SQLAlchemyError, OSError) as exc:
        raise StoreError(f"database migration failed: {_reason(exc)}") from exc


def _reason(exc: BaseException) -> str:
    """A database error in words (the driver's message, not a class name)."""
    original = getattr(exc, "orig", None) or exc
    text_ = str(original).strip().splitlines()[0] if str(original).strip() else ""
    return text_ or "the database refused"


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at, or None before the first migration."""
    from alembic.runtime.migration import MigrationContext

    def _read(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    async with engine.connect() as connection:
        return await connection.run_sync(_read)
