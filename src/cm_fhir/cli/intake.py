"""``cm-fhir listen``: the MLLP listener alone. I/O edge.

``cm-fhir listen`` runs the listener role of the service (``cm-fhir serve --role listener``) on
the configured database until Ctrl-C or SIGTERM; its options are the ``mllp`` settings (unset
ones come from ``CM_FHIR_MLLP__...``, the config file, then the defaults). The first line it
prints is ``cm-fhir listening on HOST:PORT``. ``cm-fhir db ...`` lives in :mod:`cm_fhir.cli.db`,
``cm-fhir adt send`` in :mod:`cm_fhir.cli.adt_send`.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from cm_fhir.cli._app import app
from cm_fhir.cli.options import (
    LogFormatOption,
    LogLevelOption,
    StoreOptions,
    configure_logging,
    store_options,
)
from cm_fhir.logs import LogFormat, console_json
from cm_fhir.settings import Role

if TYPE_CHECKING:
    from cm_fhir.service import ServiceInfo


__all__ = ["listen"]


def _print_listening(info: ServiceInfo, fmt: LogFormat = LogFormat.TEXT) -> None:
    lines = []
    if info.mllp_address is not None:
        host, port = info.mllp_address
        lines.append(f"cm-fhir listening on {host}:{port}")
    lines.append(f"cm-fhir ready (database {info.database}; Ctrl-C or SIGTERM to stop)")
    for line in lines:
        typer.echo(line if fmt is LogFormat.TEXT else console_json(line, "cm_fhir.listen"))


@app.command()
@store_options
def listen(
    host: str | None = typer.Option(None, help="Address to bind [127.0.0.1]."),
    port: int | None = typer.Option(None, help="TCP port, 0 picks a free one [2575]."),
    max_connections: int | None = typer.Option(None, help="Connections at once [64]."),
    max_connections_per_peer: int | None = typer.Option(
        None, help="Connections per client address and per TLS client identity, 0 = no limit [8]."
    ),
    max_message_bytes: int | None = typer.Option(None, help="Largest frame [1048576]."),
    idle_timeout: float | None = typer.Option(
        None, help="Seconds without a whole frame before closing, 0 = never [600]."
    ),
    frame_timeout: float | None = typer.Option(
        None, help="Seconds for a begun frame to end, 0 = no limit [60]."
    ),
    tls_cert: Path | None = typer.Option(None, help="PEM certificate chain: serve MLLP over TLS."),
    tls_key: Path | None = typer.Option(None, help="PEM private key for --tls-cert."),
    tls_client_ca: Path | None = typer.Option(
        None, help="PEM CA: require client certificates it signed (mutual TLS)."
    ),
    allow_network: list[str] | None = typer.Option(
        None, help="Client address or CIDR network allowed (repeat); default: any."
    ),
    allow_sender: list[str] | None = typer.Option(
        None, help="MSH-3|MSH-4 sender allowed: 'APP|FAC', 'APP' or '*|FAC' (repeat); default: any."
    ),
    allow_public_bind: bool = typer.Option(
        False, help="Listen beyond loopback without TLS or --allow-network."
    ),
    migrate: bool = typer.Option(
        False, "--migrate", help="Upgrade a PostgreSQL database on start (SQLite always is)."
    ),
    store: StoreOptions = StoreOptions(),
    log_level: LogLevelOption = None,
    log_format: LogFormatOption = None,
) -> None:
    """Accept ADT messages over MLLP, store each, then acknowledge it.

    Unset options come from the environment (CM_FHIR_MLLP__...), the config file, then the
    defaults in brackets.
    """
    from cm_fhir.cli.serve import run_service
    from cm_fhir.service import Service

    given = {
        "host": host,
        "port": port,
        "max_connections": max_connections,
        "max_connections_per_peer": max_connections_per_peer,
        "max_message_bytes": max_message_bytes,
        "idle_timeout": idle_timeout,
        "frame_timeout": frame_timeout,
        "tls_cert": tls_cert,
        "tls_key": tls_key,
        "tls_client_ca": tls_client_ca,
        "allowed_networks": tuple(allow_network) if allow_network else None,
        "allowed_senders": tuple(allow_sender) if allow_sender else None,
        "allow_public_bind": allow_public_bind or None,
    }
    settings = store.settings(
        log={"level": log_level, "format": log_format},
        mllp=given,
    )
    configure_logging(settings)
    service = Service(settings, {Role.LISTENER}, migrate=migrate)
    run_service(service, functools.partial(_print_listening, fmt=settings.log.format))
