"""``cm-fhir db purge``: apply the retention ages now, with a progress bar. I/O edge.

Reads the same settings as ``serve`` (``--config``, ``CM_FHIR_...``, flags), so it finds the same
database and the same ``retention`` ages. ``--dry-run`` counts what would be purged and changes
nothing. Output is counts per kind, never content; the bar goes to stderr.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from sqlalchemy.exc import SQLAlchemyError

from cm_fhir.cli._app import db_app
from cm_fhir.cli.errors import fail
from cm_fhir.errors import CmFhirError, StoreError
from cm_fhir.retention_policy import RetentionSettings
from cm_fhir.settings import load_settings
from cm_fhir.store.engine import make_engine
from cm_fhir.store.retention import PurgeCounts, purge

__all__ = ["purge_command"]


@db_app.command("purge")
def purge_command(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be purged; change nothing.")
    ] = False,
    config: Annotated[
        Path | None,
        typer.Option("--config", envvar="CM_FHIR_CONFIG", help="TOML or YAML config file."),
    ] = None,
    database_url: Annotated[
        str | None, typer.Option(help="SQLAlchemy URL [SQLite file in the data dir].")
    ] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Embedded data folder.")] = None,
) -> None:
    """Purge PHI older than the retention ages: raw messages, trace, audit, sent outbox."""
    overrides: dict[str, Any] = {}
    if database_url is not None:
        overrides["database_url"] = database_url
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    try:
        settings = load_settings(config, overrides)
        if settings.embedded_database and not settings.data_dir.is_dir():
            fail(f"no embedded database: {settings.data_dir} does not exist (see --data-dir)")
        url, schema = settings.effective_database_url, settings.database_search_path
        counts = asyncio.run(_purge(url, schema, settings.retention, dry_run))
    except CmFhirError as exc:
        fail(str(exc))
    verb = "would purge" if dry_run else "purged"
    typer.echo(f"{verb}: {counts.describe()}")


async def _purge(
    url: str, search_path: str | None, retention: RetentionSettings, dry_run: bool
) -> PurgeCounts:
    engine = make_engine(url, search_path=search_path)
    console = Console(stderr=True)
    try:
        with Progress(
            TextColumn("{task.description:<20}"),
            BarColumn(),
            MofNCompleteColumn(),
            console=console,
            transient=not console.is_terminal,
        ) as bar:
            tasks: dict[str, TaskID] = {}

            def progress(kind: str, done: int, total: int) -> None:
                if kind not in tasks:
                    tasks[kind] = bar.add_task(kind.replace("_", " "), total=total)
                bar.update(tasks[kind], completed=done, total=total)

            return await purge(
                engine,
                retention,
                datetime.now(UTC),
                dry_run=dry_run,
                progress=progress,
            )
    except (SQLAlchemyError, OSError) as exc:
        shown = engine.url.render_as_string(hide_password=True)
        raise StoreError(
            f"cannot purge {shown}: the database is unreachable or not migrated "
            "(run `cm-fhir db upgrade`)"
        ) from exc
    finally:
        await engine.dispose()
