"""Intake commands: ``listen`` and ``db upgrade``. I/O edge.

``cm-fhir listen`` runs the MLLP listener on the embedded defaults (127.0.0.1:2575, a SQLite file
in the working directory, migrated on start) until Ctrl-C or SIGTERM; its options are the ``mllp``
settings (unset ones come from ``CM_FHIR_MLLP__...``, then the defaults). ``cm-fhir db upgrade``
applies the shipped migrations. ``cm-fhir adt send`` lives in :mod:`cm_fhir.cli.adt_send`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer

from cm_fhir.cli._app import app, db_app
from cm_fhir.cli.errors import fail
from cm_fhir.errors import CmFhirError
from cm_fhir.listener import ListenerConfig, run_listener
from cm_fhir.logs import LogFormat, configure_logging
from cm_fhir.settings import load_settings
from cm_fhir.store.engine import DEFAULT_DATABASE_URL, make_engine, upgrade_database

__all__ = ["listen", "upgrade"]

_DB_URL = typer.Option(
    DEFAULT_DATABASE_URL, "--database-url", envvar="CM_FHIR_DATABASE_URL", help="SQLAlchemy URL."
)


@app.command()
def listen(
    host: str | None = typer.Option(None, help="Address to bind [127.0.0.1]."),
    port: int | None = typer.Option(None, help="TCP port, 0 picks a free one [2575]."),
    database_url: str = _DB_URL,
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
    migrate: bool | None = typer.Option(
        None, help="Upgrade the database on start (default: only for SQLite)."
    ),
    log_format: LogFormat | None = typer.Option(
        None, help="text, or json: one object per line [text]."
    ),
) -> None:
    """Accept ADT messages over MLLP, store each, then acknowledge it.

    Unset options come from the environment (CM_FHIR_MLLP__...), then the defaults in brackets.
    """
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
    mllp = {name: value for name, value in given.items() if value is not None}
    log = {"format": log_format} if log_format is not None else {}
    try:
        settings = load_settings(None, {"mllp": mllp, "log": log})
        configure_logging(settings.log.level, settings.log.format)
        config = ListenerConfig.from_settings(settings.mllp)
    except CmFhirError as exc:
        fail(str(exc))
    try:
        asyncio.run(run_listener(config, database_url, migrate=migrate))
    except CmFhirError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot listen on {config.host}:{config.port}: {exc.strerror}")


@db_app.command("upgrade")
def upgrade(database_url: str = _DB_URL) -> None:
    """Apply the database migrations shipped with cm-fhir (idempotent)."""

    async def _run() -> None:
        engine = make_engine(database_url)
        try:
            await upgrade_database(engine)
        finally:
            await engine.dispose()

    try:
        asyncio.run(_run())
    except CmFhirError as exc:
        fail(str(exc))
    typer.echo("database is at the latest revision")
