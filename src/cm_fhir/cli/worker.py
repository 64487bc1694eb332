"""``cm-fhir worker`` and ``cm-fhir replay``: process the inbox, put rows back. I/O edge.

``cm-fhir worker`` processes inbox rows into cases, outbox, trace and FHIR resources until Ctrl-C
or SIGTERM (the transaction in flight commits first); ``--once`` stops when nothing is claimable.
``--concurrency N`` runs N worker processes on PostgreSQL (rows of one patient are never processed
concurrently or out of order); SQLite has a single writer and always runs one. Without ``--once``
it also closes due cases every ``--close-check-seconds``. Unset options come from the ``worker``
settings (environment, config file, defaults). ``cm-fhir replay`` puts rows back to ``received``:
``--all``, given ids, or ``--dead-letter ID`` (which also releases the rows waiting behind it);
it works next to a running ``serve`` on the same database. Output is counts and ids, never
message content.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
from multiprocessing.context import SpawnProcess
from typing import TYPE_CHECKING

import typer

from cm_fhir.cli._app import app
from cm_fhir.cli.errors import EXIT_PROBLEMS, EXIT_UNUSABLE, fail
from cm_fhir.cli.options import (
    LogFormatOption,
    LogLevelOption,
    MappingsOption,
    StoreOptions,
    TimezoneOption,
    configure_logging,
    existing_database,
    store_options,
)
from cm_fhir.settings import Settings

if TYPE_CHECKING:
    from cm_fhir.worker import BatchResult


__all__ = ["replay_command", "worker"]

log = logging.getLogger(__name__)


def _summary(result: BatchResult) -> str:
    return (
        f"processed {result.processed}, ignored {result.ignored}, failed {result.failed}, "
        f"needs attention {result.needs_attention}, "
        f"retried {result.retried}, dead-lettered {result.dead_lettered}; "
        f"outbox {result.outbox}, trace {result.trace}, "
        f"resources written {result.resources_written}, removed {result.resources_removed}"
    )


async def _migrate(settings: Settings, migrate: bool) -> None:
    from cm_fhir.service import check_database
    from cm_fhir.store.engine import engine_for

    engine = engine_for(settings, pool_size=1)
    try:
        await check_database(engine, settings, migrate=migrate)
    finally:
        await engine.dispose()


async def _run(settings: Settings, once: bool) -> BatchResult:
    from cm_fhir.retention import RetentionJob
    from cm_fhir.service_roles import make_workers
    from cm_fhir.store.engine import engine_for
    from cm_fhir.worker import Worker

    engine = engine_for(settings)
    try:
        worker = make_workers(engine, settings, count=1)[0]
        assert isinstance(worker, Worker)
        log.info("worker process %d started", os.getpid())
        if once:
            return await worker.run_once()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, stop.set)
        purger = asyncio.create_task(RetentionJob(engine, settings.retention).run(stop))
        try:
            return await worker.run(stop)
        finally:
            stop.set()
            await purger
    finally:
        await engine.dispose()


def _child(settings: Settings, once: bool) -> None:
    """One extra worker process (``--concurrency``); prints its own summary."""
    configure_logging(settings)
    with contextlib.suppress(KeyboardInterrupt):
        result = asyncio.run(_run(settings, once))
        typer.echo(f"worker process: {_summary(result)}")


@app.command()
@store_options
def worker(
    once: bool = typer.Option(False, "--once", help="Stop when nothing is left to claim."),
    concurrency: int | None = typer.Option(
        None, min=1, help="Worker processes (PostgreSQL only) [1]."
    ),
    batch_size: int | None = typer.Option(None, min=1, help="Inbox rows per transaction [200]."),
    max_attempts: int | None = typer.Option(
        None, min=1, help="Attempts before a row is dead-lettered [5]."
    ),
    retry_delay: float | None = typer.Option(
        None, min=0, help="Seconds between attempts of a row [5]."
    ),
    close_check_seconds: float | None = typer.Option(
        None, min=0.01, help="Seconds between checks for cases due to close [60]."
    ),
    processing_id: list[str] | None = typer.Option(
        None, help="MSH-11 processing id to apply (repeat for several) [P]; others are ignored."
    ),
    migrate: bool = typer.Option(
        False, "--migrate", help="Upgrade a PostgreSQL database on start (SQLite always is)."
    ),
    store: StoreOptions = StoreOptions(),
    mappings: MappingsOption = None,
    timezone: TimezoneOption = None,
    log_level: LogLevelOption = None,
    log_format: LogFormatOption = None,
) -> None:
    """Process the inbox: cases, outbox, trace and FHIR resources, per patient in order.

    Without ``--once`` it also purges PHI past the ``retention`` ages.
    """
    from cm_fhir.store.engine import async_url
    from cm_fhir.worker import BatchResult

    settings = store.settings(
        mappings_dir=mappings,
        timezone=timezone,
        log={"level": log_level, "format": log_format},
        worker={
            "batch_size": batch_size,
            "max_attempts": max_attempts,
            "retry_delay": retry_delay,
            "close_check_seconds": close_check_seconds,
            "apply_processing_ids": tuple(processing_id) if processing_id else None,
        },
    )
    configure_logging(settings)
    processes = concurrency or 1
    if async_url(settings.effective_database_url).get_backend_name() == "sqlite" and processes > 1:
        typer.echo("SQLite has a single writer: running one worker process", err=True)
        processes = 1
    children: list[SpawnProcess] = []
    result = BatchResult()
    try:
        # Alone, before any process starts: they all find an up-to-date schema.
        asyncio.run(_migrate(settings, migrate))
        context = multiprocessing.get_context("spawn")
        for _ in range(processes - 1):
            process = context.Process(target=_child, args=(settings, once))
            process.start()
            children.append(process)
        result = asyncio.run(_run(settings, once))
    except KeyboardInterrupt:
        pass
    finally:
        for process in children:
            process.join()
    typer.echo(_summary(result))
    if any(process.exitcode for process in children):
        raise typer.Exit(EXIT_PROBLEMS)


@app.command("replay")
@store_options
def replay_command(
    ids: list[int] | None = typer.Argument(None, help="Inbox row ids to process again."),
    all_rows: bool = typer.Option(False, "--all", help="Every inbox row."),
    dead_letter: int | None = typer.Option(
        None, "--dead-letter", help="A dead letter to retry; releases the rows behind it."
    ),
    store: StoreOptions = StoreOptions(),
) -> None:
    """Put inbox rows back to ``received``; the worker processes them again (idempotently)."""
    from cm_fhir.worker import replay, replay_dead_letter

    if sum(bool(x) for x in (ids, all_rows, dead_letter is not None)) != 1:
        fail("give row ids, --all or --dead-letter ID", EXIT_UNUSABLE)
    settings = store.settings()

    async def _replay() -> str | None:
        engine = await existing_database(settings)
        try:
            if dead_letter is not None:
                if not await replay_dead_letter(engine, dead_letter):
                    return None
                return f"dead letter #{dead_letter} is back in the queue"
            count = await replay(engine, None if all_rows else ids)
            return f"{count} row(s) back in the queue"
        finally:
            await engine.dispose()

    done = asyncio.run(_replay())
    if done is None:
        fail(f"inbox row {dead_letter} is not a dead letter", EXIT_PROBLEMS)
    typer.echo(done)
