"""``cm-fhir serve`` and ``cm-fhir config example``. I/O edge: binds ports, handles signals.

``serve`` runs the HTTP API, the MLLP listener and the inbox workers in one process (``--role``
picks a subset). Settings come from the flags, then the environment (``CM_FHIR_...``), then the
config file (``--config`` or ``CM_FHIR_CONFIG``, TOML or YAML), then the defaults. SIGINT and
SIGTERM stop it gracefully; a second signal stops at once. ``config example`` prints a commented
TOML file with every setting and its default.
"""

from __future__ import annotations

import asyncio
import functools
import signal
from pathlib import Path
from typing import Annotated, Any

import typer

from cm_fhir.cli._app import app
from cm_fhir.cli.errors import fail
from cm_fhir.errors import CmFhirError
from cm_fhir.logs import LogFormat, configure_logging, console_json
from cm_fhir.service import Service, ServiceInfo
from cm_fhir.settings import Role, load_settings

__all__ = ["EXAMPLE_CONFIG", "config_app", "print_ready", "serve"]

config_app = typer.Typer(help="Service configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")


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
    lines += [f"cm-fhir {note}" for note in info.notes]
    if info.generated_api_key:
        lines.append(
            "cm-fhir API key for this run (none configured; localhost only): "
            f"{info.generated_api_key}"
        )
    lines.append("cm-fhir ready (Ctrl-C or SIGTERM to stop)")
    for line in lines:
        typer.echo(line if fmt is LogFormat.TEXT else console_json(line, "cm_fhir.serve"))


async def run_service(service: Service, fmt: LogFormat = LogFormat.TEXT) -> None:
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
        await service.run(stop, functools.partial(print_ready, fmt=fmt))
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


@app.command("serve")
def serve(
    role: Annotated[
        list[Role] | None,
        typer.Option("--role", help="Role(s) to run: api, listener, worker or all (default)."),
    ] = None,
    http_host: Annotated[str | None, typer.Option(help="API address [127.0.0.1].")] = None,
    http_port: Annotated[int | None, typer.Option(help="API port, 0 = free [8080].")] = None,
    mllp_host: Annotated[str | None, typer.Option(help="MLLP address [127.0.0.1].")] = None,
    mllp_port: Annotated[int | None, typer.Option(help="MLLP port, 0 = free [2575].")] = None,
    database_url: Annotated[
        str | None, typer.Option(help="SQLAlchemy URL [SQLite file in the data dir].")
    ] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Embedded data folder.")] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", envvar="CM_FHIR_CONFIG", help="TOML or YAML config file."),
    ] = None,
    migrate: Annotated[
        bool, typer.Option(help="Upgrade a non-embedded database on start instead of refusing.")
    ] = False,
    log_level: Annotated[str | None, typer.Option(help="DEBUG, INFO, WARNING...")] = None,
    log_format: Annotated[
        LogFormat | None, typer.Option(help="text, or json: one object per line [text].")
    ] = None,
) -> None:
    """Run the HTTP API, the MLLP listener and the workers until Ctrl-C or SIGTERM."""
    overrides: dict[str, Any] = {}
    if database_url is not None:
        overrides["database_url"] = database_url
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    log = {k: v for k, v in (("level", log_level), ("format", log_format)) if v is not None}
    if log:
        overrides["log"] = log
    http = {k: v for k, v in (("host", http_host), ("port", http_port)) if v is not None}
    mllp = {k: v for k, v in (("host", mllp_host), ("port", mllp_port)) if v is not None}
    if http:
        overrides["http"] = http
    if mllp:
        overrides["mllp"] = mllp
    try:
        settings = load_settings(config, overrides)
        configure_logging(settings.log.level, settings.log.format)
        service = Service(settings, set(role or [Role.ALL]), migrate=migrate)
        asyncio.run(run_service(service, settings.log.format))
    except CmFhirError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot bind: {exc.strerror or type(exc).__name__}")
    except (KeyboardInterrupt, asyncio.CancelledError):
        raise typer.Exit(130) from None


EXAMPLE_CONFIG = """\
# cm-fhir service configuration (TOML; YAML with the same keys works too).
# Precedence: command-line flags > environment (CM_FHIR_..., nested with __, e.g.
# CM_FHIR_HTTP__PORT=8081) > this file > built-in defaults.

# Embedded default: a SQLite file in data_dir, created and migrated on start.
data_dir = "cm-fhir-data"
# PostgreSQL instead (run `cm-fhir db upgrade --database-url ...` before the first start):
# database_url = "postgresql+asyncpg://cm_fhir@db.example.org:5432/cm_fhir"
# database_search_path = "cm_fhir"

# Static API keys (16+ characters). Prefer the environment: CM_FHIR_API_KEYS=key1,key2
# api_keys = ["change-me-to-a-long-random-key"]

[http]
host = "127.0.0.1"          # without keys or a JWKS the API only binds to localhost
port = 8080
max_body_bytes = 1048576    # every request body, HL7v2 over HTTP included; larger is 413
graceful_timeout = 10.0     # seconds to finish open requests on shutdown
root_path = ""              # prefix when behind a reverse proxy

[mllp]
host = "127.0.0.1"          # beyond loopback: needs TLS or allowed_networks (or allow_public_bind)
port = 2575
max_connections = 64
max_connections_per_peer = 8  # per client address and per TLS client certificate; 0 = no limit
max_message_bytes = 1048576
idle_timeout = 600.0        # seconds without a whole frame; 0 disables
frame_timeout = 60.0        # seconds for a begun frame to end; 0 disables
shutdown_grace = 10.0
# tls_cert = "/etc/cm-fhir/mllp.crt"
# tls_key = "/etc/cm-fhir/mllp.key"
# tls_client_ca = "/etc/cm-fhir/ehr-ca.crt"   # mutual TLS: client certificates it signed
allowed_networks = []       # e.g. ["10.20.0.0/16", "192.0.2.7"]; empty: any address
allowed_senders = []        # MSH-3|MSH-4, e.g. ["EPICADT|NORTHSIDE", "LAB"]; empty: any sender
allow_public_bind = false
unreadable_keep_bytes = 4096  # of an unreadable message (SHA-256 and length kept too)
unreadable_limit = 10       # unreadable frames from one address per window, then a cool-down
unreadable_window = 60.0
cooldown = 300.0            # seconds that address's connections are closed at accept

[worker]
concurrency = 2             # worker loops on PostgreSQL; SQLite runs one
batch_size = 200
max_attempts = 5            # then the message is dead-lettered
retry_delay = 5.0
poll_interval = 0.5
shutdown_grace = 30.0
close_check_seconds = 60.0  # how often cases due to close are looked for
apply_processing_ids = ["P"]  # MSH-11 applied to cases; T (training), D (debugging) only stored

[auth]
# OAuth2 bearer tokens (JWT), checked against the authorisation server's JWKS.
# jwks_url = "https://auth.example.org/.well-known/jwks.json"
# issuer = "https://auth.example.org/"
# audience = "cm-fhir"
algorithms = ["RS256", "ES256", "PS256"]
leeway = 30.0
jwks_cache_seconds = 300
jwks_timeout = 5.0

[log]
level = "INFO"
format = "text"             # json: one JSON object per line (time, level, logger, message, fields)

[retention]
# Ages: a whole number and s, m, h, d or w; "off" keeps for ever. The worker role purges.
raw_messages = "30d"        # raw HL7v2 of processed/ignored messages (the row itself stays)
trace = "365d"              # workflow trace of settled messages
audit = "off"               # the audit trail is often a legal record
sent_outbox = "30d"         # sent FHIR writes (the newest per case is kept)
interval = "1h"
batch_size = 1000           # rows per transaction

[health]
max_inbox_age_seconds = 300.0   # /ready 503 when the oldest unprocessed message is older; 0 = off
write_probe_timeout = 2.0       # seconds /ready's inbox write probe waits for the inbox's lock
"""


@config_app.command("example")
def config_example() -> None:
    """Print a commented example config file (TOML) with every setting."""
    typer.echo(EXAMPLE_CONFIG, nl=False)
