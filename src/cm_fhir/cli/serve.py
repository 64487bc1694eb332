"""``cm-fhir serve``. I/O edge: binds ports, handles signals.

``serve`` runs the HTTP API, the MLLP listener and the inbox workers in one process (``--role``
picks a subset). Settings come from the flags, then the environment (``CM_FHIR_...``), then the
config file (``--config`` or ``CM_FHIR_CONFIG``, TOML or YAML), then the defaults
(:mod:`cm_fhir.cli.options`). SIGINT and SIGTERM stop it gracefully; a second signal stops at
once. :func:`run_service` is shared with ``cm-fhir listen``; it runs on uvloop's event loop when
uvloop is installed (:mod:`cm_fhir.event_loop`).
"""

from __future__ import annotations

import asyncio
import functools
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer

from cm_fhir import event_loop
from cm_fhir.cli._app import app
from cm_fhir.cli.options import (
    LogFormatOption,
    LogLevelOption,
    MappingsOption,
    StoreOptions,
    TimezoneOption,
    configure_logging,
    store_options,
)
from cm_fhir.logs import LogFormat, console_json
from cm_fhir.settings import Role

if TYPE_CHECKING:
    from cm_fhir.service import Service, ServiceInfo


__all__ = ["print_ready", "run_service", "serve"]


def print_ready(info: ServiceInfo, fmt: LogFormat = LogFormat.TEXT) -> None:
    """The start-up lines on stdout (the tests and the demo read them); JSON objects in json."""
    lines = [f"cm-fhir serving roles: {', '.join(info.roles)} (database {info.database})"]
    if info.http_url:
        lines.append(f"cm-fhir api on {info.http_url} (OpenAPI: {info.http_url}/docs)")
    if info.mllp_address:
        host, port = info.mllp_address
        lines.append(f"cm-fhir listening on {host}:{port}")
    if "worker" in info.roles and info.workers:
        lines.append(f"cm-fhir worker: {info.workers} loop(s)")
    if info.endpoints:
        lines.append(f"cm-fhir sync to FHIR endpoint(s): {', '.join(info.endpoints)}")
    lines += [f"cm-fhir {note}" for note in info.notes]
    if info.generated_api_key:
        lines.append(
            "cm-fhir API key for this run (none configured; localhost only): "
            f"{info.generated_api_key}"
        )
    lines.append("cm-fhir ready (Ctrl-C or SIGTERM to stop)")
    for line in lines:
        typer.echo(line if fmt is LogFormat.TEXT else console_json(line, "cm_fhir.serve"))


def run_service(service: Service, on_ready: Callable[[ServiceInfo], None] = print_ready) -> None:
    """Run ``service`` until SIGINT/SIGTERM (exit 130 when a second signal cuts the stop)."""
    try:
        event_loop.run(_run_until_signal(service, on_ready))
    except (KeyboardInterrupt, asyncio.CancelledError):
        raise typer.Exit(130) from None


async def _run_until_signal(service: Service, on_ready: Callable[[ServiceInfo], None]) -> None:
    """Run ``service`` until SIGINT/SIGTERM; a second signal cancels the graceful stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()

    def _on_signal() -> None:
        if stop.is_set() and main is not None:
            main.cancel()
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, _on_signal)
    try:
        await service.run(stop, on_ready)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


@app.command("serve")
@store_options
def serve(
    role: Annotated[
        list[Role] | None,
        typer.Option(
            "--role", help="Role(s) to run: api, listener, worker, sync or all (default)."
        ),
    ] = None,
    http_host: Annotated[str | None, typer.Option(help="API address [127.0.0.1].")] = None,
    http_port: Annotated[int | None, typer.Option(help="API port, 0 = free [8080].")] = None,
    mllp_host: Annotated[str | None, typer.Option(help="MLLP address [127.0.0.1].")] = None,
    mllp_port: Annotated[int | None, typer.Option(help="MLLP port, 0 = free [2575].")] = None,
    migrate: Annotated[
        bool,
        typer.Option("--migrate", help="Upgrade a PostgreSQL database on start (SQLite is)."),
    ] = False,
    store: StoreOptions = StoreOptions(),
    mappings: MappingsOption = None,
    timezone: TimezoneOption = None,
    log_level: LogLevelOption = None,
    log_format: LogFormatOption = None,
    ehr_url: Annotated[
        str | None,
        typer.Option(help="FHIR base URL of the EHR to deliver the outbox to (no auth)."),
    ] = None,
    payer_url: Annotated[
        str | None,
        typer.Option(help="FHIR base URL of the payer to notify and ask for reviews (no auth)."),
    ] = None,
) -> None:
    """Run the HTTP API, the MLLP listener and the workers until Ctrl-C or SIGTERM."""
    from cm_fhir.service import Service

    settings = store.settings(
        mappings_dir=mappings,
        timezone=timezone,
        log={"level": log_level, "format": log_format},
        ehr_url=ehr_url,
        payer_url=payer_url,
        http={"host": http_host, "port": http_port},
        mllp={"host": mllp_host, "port": mllp_port},
    )
    configure_logging(settings)
    service = Service(settings, set(role or [Role.ALL]), migrate=migrate)
    run_service(service, functools.partial(print_ready, fmt=settings.log.format))
