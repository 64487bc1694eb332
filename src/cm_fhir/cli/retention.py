"""``cm-fhir db purge``: apply the retention ages now, with a progress bar. I/O edge.

Reads the same settings as ``serve`` (``--config``, ``CM_FHIR_...``, flags), so it finds the same
database and the same ``retention`` ages. ``--dry-run`` counts what would be purged and changes
nothing. Output is counts per kind, never content; the bar goes to stderr.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer

from cm_fhir.cli._app import db_app
from cm_fhir.cli.options import (
    StoreOptions,
    existing_database,
    store_options,
)
from cm_fhir.errors import StoreError
from cm_fhir.settings import Settings

if TYPE_CHECKING:
    from rich.progress import TaskID

    from cm_fhir.store.retention import PurgeCounts


__all__ = ["purge_command"]


@db_app.command("purge")
@store_options
def purge_command(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be purged; change nothing.")
    ] = False,
    store: StoreOptions = StoreOptions(),
) -> None:
    """Purge PHI older than the retention ages: raw messages, trace, audit, sent outbox."""
    settings = store.settings()
    counts = asyncio.run(_purge(settings, dry_run))
    verb = "would purge" if dry_run else "purged"
    typer.echo(f"{verb}: {counts.describe()}")


async def _purge(settings: Settings, dry_run: bool) -> PurgeCounts:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    from sqlalchemy.exc import SQLAlchemyError

    from cm_fhir.store.retention import purge

    engine = await existing_database(settings)  # names a missing or unmigrated database
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
                settings.retention,
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
