"""``cm-fhir worker`` and ``cm-fhir replay``: process the inbox, put rows back. I/O edge.

``cm-fhir worker`` processes inbox rows into cases, outbox, trace and FHIR resources until Ctrl-C
or SIGTERM (the transaction in flight commits first); ``--once`` stops when nothing is claimable.
``--concurrency N`` runs N worker processes on PostgreSQL (rows of one patient are never processed
concurrently or out of order); SQLite has a single writer and always runs one. Without ``--once``
it also closes due cases every ``--close-check-seconds``. ``cm-fhir replay``
puts rows back to ``received``: ``--all``, given ids, or ``--dead-letter ID`` (which also releases
the rows waiting behind it). Output is counts and ids, never message content.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
from multiprocessing.context import SpawnProcess

import typer

from cm_fhir.cli._app import app
from cm_fhir.errors import CmFhirError
from cm_fhir.logs import LogFormat, configure_logging
from cm_fhir.retention import RetentionJob
from cm_fhir.settings import load_settings
from cm_fhir.store.engine import DEFAULT_DATABASE_URL, make_engine, upgrade_database
from cm_fhir.worker import BatchResult, Worker, WorkerConfig, replay, replay_dead_letter

__all__ = ["replay_command", "worker"]

log = logging.getLogger(__name__)

_DB_URL = typer.Option(
    DEFAULT_DATABASE_URL, "--database-url", envvar="CM_FHIR_DATABASE_URL", help="SQLAlchemy URL."
)
_SCHEMA = typer.Option(
    None, "--schema", envvar="CM_FHIR_DATABASE_SCHEMA", help="PostgreSQL schema (search_path)."
)


def _summary(result: BatchResult) -> str:
    return (
        f"processed {result.processed}, ignored {result.ignored}, failed {result.failed}, "
        f"needs attention {result.needs_attention}, "
        f"retried {result.retried}, dead-lettered {result.dead_lettered}; "
        f"outbox {result.outbox}, trace {result.trace}, "
        f"resources written {result.resources_written}, removed {result.resources_removed}"
    )


async def _migrate(url: str, schema: str | None) -> None:
    engine = make_engine(url, search_path=schema)
    try:
        await upgrade_database(engine)
    finally:
        await engine.dispose()


async def _run(url: str, schema: str | None, config: WorkerConfig, once: bool) -> BatchResult:
    engine = make_engine(url, search_path=schema)
    try:
        worker = Worker(engine, config)
        log.info("worker process %d started", os.getpid())
        if once:
            return await worker.run_once()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, stop.set)
        purger = asyncio.create_task(RetentionJob(engine, load_settings().retention).run(stop))
        try:
            return await worker.run(stop)
        finally:
            stop.set()
            await purger
    finally:
        await engine.dispose()


def _child(url: str, schema: str | None, config: WorkerConfig, once: bool) -> None:
    """One extra worker process (``--concurrency``); prints its own summary."""
    with contextlib.suppress(KeyboardInterrupt):
        result = asyncio.run(_run(url, schema, config, once))
        typer.echo(f"worker process: {_summary(result)}")


@app.command()
def worker(
    database_url: str = _DB_URL,
    schema: str | None = _SCHEMA,
    once: bool = typer.Option(False, "--once", help="Stop when nothing is left to claim."),
    concurrency: int = typer.Option(1, min=1, help="Worker processes (PostgreSQL only)."),
    batch_size: int = typer.Option(200, min=1, help="Inbox rows per transaction."),
    max_attempts: int = typer.Option(5, min=1, help="Attempts before a row is dead-lettered."),
    retry_delay: float = typer.Option(5.0, min=0, help="Seconds between attempts of a row."),
    close_check_seconds: float = typer.Option(
        60.0, min=0.01, help="Seconds between checks for cases due to close."
    ),
    processing_id: list[str] = typer.Option(
        ["P"], help="MSH-11 processing id to apply (repeat for several); others are ignored."
    ),
    migrate: bool | None = typer.Option(
        None, help="Upgrade the database on start (default: only for SQLite)."
    ),
    log_format: LogFormat | None = typer.Option(
        None, help="text, or json: one object per line [text]."
    ),
) -> None:
    """Process the inbox: cases, outbox, trace and FHIR resources, per patient in order.

    Without ``--once`` it also purges PHI past the ``retention`` ages (CM_FHIR_RETENTION__...).
    """
    try:
        logs = load_settings(None, {"log": {"format": log_format} if log_format else {}}).log
    except CmFhirError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    configure_logging(logs.level, logs.format)
    sqlite = database_url.startswith("sqlite")
    if sqlite and concurrency > 1:
        typer.echo("SQLite has a single writer: running one worker process", err=True)
        concurrency = 1
    config = WorkerConfig(
        batch_size=batch_size,
        max_attempts=max_attempts,
        retry_delay=retry_delay,
        close_check_seconds=close_check_seconds,
        apply_processing_ids=frozenset(p.upper() for p in processing_id),
    )
    children: list[SpawnProcess] = []
    result = BatchResult()
    try:
        if migrate if migrate is not None else sqlite:
            # Alone, before any process starts: they all find an up-to-date schema.
            asyncio.run(_migrate(database_url, schema))
        context = multiprocessing.get_context("spawn")
        for _ in range(concurrency - 1):
            process = context.Process(target=_child, args=(database_url, schema, config, once))
            process.start()
            children.append(process)
        result = asyncio.run(_run(database_url, schema, config, once))
    except CmFhirError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    except KeyboardInterrupt:
        pass
    finally:
        for process in children:
            process.join()
    typer.echo(_summary(result))
    if any(process.exitcode for process in children):
        raise typer.Exit(1)


@app.command("replay")
def replay_command(
    ids: list[int] = typer.Argument(None, help="Inbox row ids to process again."),
    database_url: str = _DB_URL,
    schema: str | None = _SCHEMA,
    all_rows: bool = typer.Option(False, "--all", help="Every inbox row."),
    dead_letter: int | None = typer.Option(
        None, "--dead-letter", help="A dead letter to retry; releases the rows behind it."
    ),
) -> None:
    """Put inbox rows back to ``received``; the worker processes them again (idempotently)."""
    if sum(bool(x) for x in (ids, all_rows, dead_letter is not None)) != 1:
        typer.echo("error: give row ids, --all or --dead-letter ID", err=True)
        raise typer.Exit(2)

    async def _replay() -> str:
        engine = make_engine(database_url, search_path=schema)
        try:
            if dead_letter is not None:
                if not await replay_dead_letter(engine, dead_letter):
                    raise typer.Exit(1)
                return f"dead letter #{dead_letter} is back in the queue"
            count = await replay(engine, None if all_rows else ids)
            return f"{count} row(s) back in the queue"
        finally:
            await engine.dispose()

    try:
        typer.echo(asyncio.run(_replay()))
    except CmFhirError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
