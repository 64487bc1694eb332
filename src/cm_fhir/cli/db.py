"""``cm-fhir db upgrade | current | history``: the schema of the configured database. I/O edge.

All three resolve the database like every other command (``--database-url``, ``--data-dir``,
``--database-schema``, ``--config``, ``CM_FHIR_...``). ``upgrade`` applies the shipped
migrations (creating the PostgreSQL schema if it is missing) and names the revisions it applied;
``current`` prints the revision the database is at and exits 1 when it is not the latest;
``history`` lists the shipped revisions and which of them the database has.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer

from cm_fhir.cli._app import db_app
from cm_fhir.cli.errors import EXIT_PROBLEMS, fail
from cm_fhir.cli.options import (
    StoreOptions,
    cannot_open,
    database_label,
    existing_database,
    store_options,
)
from cm_fhir.errors import StoreError
from cm_fhir.settings import Settings

__all__ = ["current", "history", "upgrade"]


@db_app.command("upgrade")
@store_options
def upgrade(
    store: StoreOptions = StoreOptions(),
) -> None:
    """Apply the database migrations shipped with cm-fhir (idempotent)."""
    from cm_fhir.store.engine import engine_for, revision_history, upgrade_database

    settings = store.settings()
    label = database_label(settings)

    async def _run() -> list[str]:
        if settings.embedded_database:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = engine_for(settings, pool_size=1)
        try:
            return await upgrade_database(engine)
        finally:
            await engine.dispose()

    try:
        applied = asyncio.run(_run())
    except StoreError as exc:
        fail(f"{label}: {exc}")
    head = revision_history()[-1][0]
    if applied:
        typer.echo(f"{label}: applied {', '.join(applied)}; now at {head}")
    else:
        typer.echo(f"{label}: already at the latest revision {head}")


async def _revision(settings: Settings) -> str | None:
    from cm_fhir.store.engine import current_revision

    engine = await existing_database(settings)
    try:
        return await current_revision(engine)
    finally:
        await engine.dispose()


@db_app.command("current")
@store_options
def current(
    store: StoreOptions = StoreOptions(),
) -> None:
    """Print the revision the database is at; exit 1 unless it is the latest."""
    from cm_fhir.store.engine import revision_history

    settings = store.settings()
    revision = asyncio.run(_revision(settings))
    head = revision_history()[-1][0]
    label = database_label(settings)
    if revision == head:
        typer.echo(f"{label}: at {revision} (latest)")
        return
    typer.echo(f"{label}: at {revision}; this cm-fhir needs {head}: run `cm-fhir db upgrade`")
    raise typer.Exit(EXIT_PROBLEMS)


async def _applied(settings: Settings) -> str | None:
    """The database's revision; None when it has none yet (a missing SQLite file included)."""
    from sqlalchemy.exc import SQLAlchemyError

    from cm_fhir.store.engine import async_url, current_revision, engine_for

    url = async_url(settings.effective_database_url)
    if url.get_backend_name() == "sqlite" and not Path(str(url.database)).is_file():
        return None
    engine = engine_for(settings, pool_size=1)
    try:
        return await current_revision(engine)
    except (SQLAlchemyError, OSError) as exc:
        raise cannot_open(settings, exc) from exc
    finally:
        await engine.dispose()


@db_app.command("history")
@store_options
def history(
    store: StoreOptions = StoreOptions(),
) -> None:
    """List the shipped revisions, oldest first, and which ones the database has."""
    from cm_fhir.store.engine import revision_history

    settings = store.settings()
    revision = asyncio.run(_applied(settings))
    revisions = revision_history()
    names = [name for name, _ in revisions]
    applied = names.index(revision) + 1 if revision in names else 0
    typer.echo(f"{database_label(settings)}:")
    for position, (name, doc) in enumerate(revisions):
        mark = "applied" if position < applied else "pending"
        current_mark = " (current)" if name == revision else ""
        typer.echo(f"  {name:<24} {mark}{current_mark}  {doc}")
