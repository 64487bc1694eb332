"""``cm-fhir db upgrade | current | history`` on SQLite and PostgreSQL: the applied revisions are
named, the PostgreSQL schema setting is honoured (and created), plain URLs work, and ``serve``
starts on what ``db upgrade`` migrated."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from cm_fhir.cli import app
from cm_fhir.service import check_database
from cm_fhir.settings import load_settings
from cm_fhir.store.engine import engine_for, make_engine, revision_history, upgrade_database
from inbox_fixtures import PG_URL, _pg_admin

REVISIONS = [name for name, _ in revision_history()]
HEAD = REVISIONS[-1]


@dataclass(frozen=True)
class Target:
    """Where the commands point: the flags, and the label they print for it."""

    flags: list[str]
    label: str
    schema: str | None = None


def _plain(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def target(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Target]:
    for name in list(os.environ):
        if name.startswith("CM_FHIR_") or name == "DATABASE_URL":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    if request.param == "sqlite":
        yield Target(["--data-dir", "site-data"], str(tmp_path / "site-data" / "cm-fhir.sqlite3"))
        return
    schema = f"cmfhir_cli_{uuid.uuid4().hex[:10]}"
    try:
        asyncio.run(_pg_admin("SELECT 1"))
    except Exception as exc:
        pytest.skip(f"PostgreSQL unreachable: {type(exc).__name__}")
    # Not created here: `db upgrade` creates the schema it is given.
    yield Target(["--database-url", _plain(PG_URL), "--database-schema", schema], schema, schema)
    asyncio.run(_pg_admin(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


def test_upgrade_names_what_it_applied_then_current_and_history_agree(target: Target) -> None:
    runner = CliRunner()
    first = runner.invoke(app, ["db", "upgrade", *target.flags])
    assert first.exit_code == 0, first.output + first.stderr
    assert target.label in first.output
    assert f"applied {', '.join(REVISIONS)}; now at {HEAD}" in first.output
    again = runner.invoke(app, ["db", "upgrade", *target.flags])
    assert f"already at the latest revision {HEAD}" in again.output
    current = runner.invoke(app, ["db", "current", *target.flags])
    assert current.exit_code == 0
    assert f"at {HEAD} (latest)" in current.output
    history = runner.invoke(app, ["db", "history", *target.flags]).output.splitlines()
    assert [line.split()[0] for line in history[1:]] == REVISIONS
    assert all(" applied" in line for line in history[1:])
    assert "(current)" in history[-1]


def test_an_older_database_is_upgraded_from_where_it_is(target: Target, tmp_path: Path) -> None:
    settings = load_settings(overrides=_overrides(target))
    older = REVISIONS[1]

    async def _to_older() -> None:
        if settings.embedded_database:
            settings.data_dir.mkdir(parents=True)
        engine = engine_for(settings)
        try:
            assert await upgrade_database(engine, older) == REVISIONS[:2]
        finally:
            await engine.dispose()

    asyncio.run(_to_older())
    runner = CliRunner()
    current = runner.invoke(app, ["db", "current", *target.flags])
    assert current.exit_code == 1  # a failed check: not at the latest revision
    assert f"at {older}; this cm-fhir needs {HEAD}" in current.output
    history = runner.invoke(app, ["db", "history", *target.flags]).output.splitlines()
    pending = ["pending"] * (len(REVISIONS) - 2)
    assert [line.split()[1] for line in history[1:]] == ["applied", "applied", *pending]
    upgraded = runner.invoke(app, ["db", "upgrade", *target.flags])
    assert f"applied {', '.join(REVISIONS[2:])}; now at {HEAD}" in upgraded.output


def _overrides(target: Target) -> dict[str, str]:
    pairs = dict(zip(target.flags[::2], target.flags[1::2], strict=True))
    names = {"--data-dir": "data_dir", "--database-url": "database_url"}
    names["--database-schema"] = "database_schema"
    return {names[flag]: value for flag, value in pairs.items()}


@pytest.mark.postgres
def test_the_schema_setting_is_honoured_by_upgrade_and_by_serve_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in list(os.environ):
        if name.startswith("CM_FHIR_") or name == "DATABASE_URL":
            monkeypatch.delenv(name)
    schema = f"cmfhir_env_{uuid.uuid4().hex[:10]}"
    try:
        asyncio.run(_pg_admin("SELECT 1"))
    except Exception as exc:
        pytest.skip(f"PostgreSQL unreachable: {type(exc).__name__}")
    monkeypatch.setenv("DATABASE_URL", _plain(PG_URL).replace("postgresql://", "postgres://"))
    monkeypatch.setenv("CM_FHIR_DATABASE_SCHEMA", schema)
    public_before = asyncio.run(_public_tables())
    try:
        result = CliRunner().invoke(app, ["db", "upgrade"])
        assert result.exit_code == 0, result.stderr
        assert schema in result.output

        async def _check() -> int:
            settings = load_settings()
            engine = engine_for(settings)
            try:
                await check_database(engine, settings, migrate=False)  # serve's start-up check
            finally:
                await engine.dispose()
            admin = make_engine(PG_URL)
            try:
                async with admin.connect() as connection:
                    ours = await connection.scalar(
                        text(
                            "SELECT count(*) FROM information_schema.tables "
                            "WHERE table_schema = :schema AND table_name = 'alembic_version'"
                        ),
                        {"schema": schema},
                    )
                return int(ours or 0)
            finally:
                await admin.dispose()

        assert asyncio.run(_check()) == 1
        assert asyncio.run(_public_tables()) == public_before  # nothing went to public
    finally:
        asyncio.run(_pg_admin(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


async def _public_tables() -> int:
    admin = make_engine(PG_URL)
    try:
        async with admin.connect() as connection:
            count = await connection.scalar(
                text("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")
            )
        return int(count or 0)
    finally:
        await admin.dispose()
