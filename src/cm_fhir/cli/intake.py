"""Intake commands: ``listen``, ``adt send`` and ``db upgrade``. I/O edge.

``cm-fhir listen`` runs the MLLP listener on the embedded defaults (127.0.0.1:2575, a SQLite file
in the working directory, migrated on start) until Ctrl-C or SIGTERM. ``cm-fhir adt send`` is an
MLLP client: it sends every message of the given files (single messages, several back to back, or
FHS/BHS batches, each message in its own frame), prints one line per ACK and exits non-zero when any
message was not answered AA or CA. ``cm-fhir db upgrade`` applies the shipped migrations.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path

import typer

from cm_fhir.cli._app import adt_app, app, db_app
from cm_fhir.errors import CmFhirError, Hl7ParseError
from cm_fhir.hl7v2.header import read_header
from cm_fhir.hl7v2.normalise import split_batch
from cm_fhir.listener import ListenerConfig, run_listener
from cm_fhir.mllp_client import MllpClient, read_ack
from cm_fhir.store.engine import DEFAULT_DATABASE_URL, make_engine, upgrade_database

__all__ = ["listen", "send", "upgrade"]

_DB_URL = typer.Option(
    DEFAULT_DATABASE_URL, "--database-url", envvar="CM_FHIR_DATABASE_URL", help="SQLAlchemy URL."
)


def _fail(message: str, status: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(status)


@app.command()
def listen(
    host: str = typer.Option("127.0.0.1", help="Address to bind."),
    port: int = typer.Option(2575, help="TCP port (0 picks a free one)."),
    database_url: str = _DB_URL,
    max_connections: int = typer.Option(64, help="Concurrent connections accepted."),
    max_message_bytes: int = typer.Option(1_048_576, help="Largest frame accepted."),
    idle_timeout: float = typer.Option(600.0, help="Seconds before an idle connection is closed."),
    tls_cert: Path | None = typer.Option(None, help="PEM certificate chain: serve MLLP over TLS."),
    tls_key: Path | None = typer.Option(None, help="PEM private key for --tls-cert."),
    migrate: bool | None = typer.Option(
        None, help="Upgrade the database on start (default: only for SQLite)."
    ),
) -> None:
    """Accept ADT messages over MLLP, store each, then acknowledge it."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    context = None
    if tls_cert is not None or tls_key is not None:
        if tls_cert is None or tls_key is None:
            raise _fail("--tls-cert and --tls-key go together")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(tls_cert, tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise _fail(f"cannot load the TLS certificate or key: {type(exc).__name__}") from exc
    config = ListenerConfig(
        host=host,
        port=port,
        max_connections=max_connections,
        max_message_bytes=max_message_bytes,
        idle_timeout=idle_timeout,
        ssl_context=context,
    )
    try:
        asyncio.run(run_listener(config, database_url, migrate=migrate))
    except CmFhirError as exc:
        raise _fail(str(exc)) from exc
    except OSError as exc:
        raise _fail(f"cannot listen on {host}:{port}: {exc.strerror}") from exc


@adt_app.command("send")
def send(
    files: list[Path] = typer.Argument(
        ..., help="HL7v2 files: messages, back to back, or batches."
    ),
    host: str = typer.Option("127.0.0.1", help="Listener host."),
    port: int = typer.Option(2575, help="Listener port."),
    timeout: float = typer.Option(30.0, help="Seconds to wait for each ACK."),
    tls: bool = typer.Option(False, help="Use TLS."),
    ca_file: Path | None = typer.Option(None, help="CA bundle to verify the listener (TLS)."),
) -> None:
    """Send messages over MLLP and print each ACK code; exit 1 unless all are AA/CA."""
    messages: list[tuple[str, str]] = []
    for path in files:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise _fail(f"{path}: cannot read: {exc.strerror}") from exc
        try:
            found = split_batch(data)
        except Hl7ParseError as exc:
            raise _fail(f"{path}: {exc}") from exc
        messages += [(f"{path}#{n}", m) for n, m in enumerate(found, start=1)]
    context = None
    if tls or ca_file is not None:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    try:
        ok = asyncio.run(_send_all(messages, host, port, timeout, context))
    except (OSError, TimeoutError) as exc:
        raise _fail(f"cannot reach {host}:{port}: {type(exc).__name__}", 1) from exc
    if not ok:
        raise typer.Exit(1)


async def _send_all(
    messages: list[tuple[str, str]],
    host: str,
    port: int,
    timeout: float,
    context: ssl.SSLContext | None,
) -> bool:
    all_ok = True
    async with await MllpClient.connect(host, port, ssl_context=context, timeout=timeout) as client:
        for label, message in messages:
            try:
                header = read_header(message)
                control_id = header.control_id or "-"
                no_ack = header.enhanced_mode and header.accept_ack_type == "NE"
            except Hl7ParseError:
                control_id, no_ack = "-", False
            if no_ack:
                await client.send_only(message)
                typer.echo(f"{label} {control_id} sent (MSH-15 NE: no ACK requested)")
                continue
            try:
                reply = await client.send(message, timeout=timeout)
            except TimeoutError:
                typer.echo(f"{label} {control_id} no ACK within {timeout:g}s")
                all_ok = False
                continue
            summaries = read_ack(reply)
            code = summaries[0].code if summaries else "??"
            error = summaries[0].error_code if summaries else None
            typer.echo(f"{label} {control_id} {code}" + (f" ERR {error}" if error else ""))
            all_ok = all_ok and code in ("AA", "CA")
    return all_ok


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
        raise _fail(str(exc)) from exc
    typer.echo("database is at the latest revision")
