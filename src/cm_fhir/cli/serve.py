"""``cm-fhir serve`` and ``cm-fhir config example``. I/O edge: binds ports, handles signals.

``serve`` runs the HTTP API, the MLLP listener and the inbox workers in one process (``--role``
picks a subset). Settings come from the flags, then the environment (``CM_FHIR_...``), then the
config file (``--config`` or ``CM_FHIR_CONFIG``, TOML or YAML), then the defaults. SIGINT and
SIGTERM stop it gracefully; a second signal stops at once. ``config example`` prints a commented
TOML file with every setting and its default.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import Annotated, Any

import typer

from cm_fhir.cli._app import app
from cm_fhir.cli.errors import fail
from cm_fhir.errors import CmFhirError
from cm_fhir.service import Service, ServiceInfo
from cm_fhir.settings import Role, load_settings

__all__ = ["EXAMPLE_CONFIG", "config_app", "print_ready", "serve"]

config_app = typer.Typer(help="Service configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")


def print_ready(info: ServiceInfo) -> None:
    """The start-up lines (the tests and the demo read them)."""
    typer.echo(f"cm-fhir serving roles: {', '.join(info.roles)} (database {info.database})")
    if info.http_url:
        typer.echo(f"cm-fhir api on {info.http_url} (OpenAPI: {info.http_url}/docs)")
    if info.mllp_address:
        host, port = info.mllp_address
        typer.echo(f"cm-fhir listening on {host}:{port}")
    if "worker" in info.roles and info.workers:
        typer.echo(f"cm-fhir worker: {info.workers} loop(s)")
    if info.endpoints:
        typer.echo(f"cm-fhir sync to FHIR endpoint(s): {', '.join(info.endpoints)}")
    for note in info.notes:
        typer.echo(f"cm-fhir {note}")
    if info.generated_api_key:
        typer.echo(
            "cm-fhir API key for this run (none configured; localhost only): "
            f"{info.generated_api_key}"
        )
    typer.echo("cm-fhir ready (Ctrl-C or SIGTERM to stop)", nl=True)


async def run_service(service: Service) -> None:
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
        await service.run(stop, print_ready)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


@app.command("serve")
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
    ehr_url: Annotated[
        str | None,
        typer.Option(help="FHIR base URL of the EHR to deliver the outbox to (no auth)."),
    ] = None,
) -> None:
    """Run the HTTP API, the MLLP listener and the workers until Ctrl-C or SIGTERM."""
    overrides: dict[str, Any] = {}
    if database_url is not None:
        overrides["database_url"] = database_url
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    if log_level is not None:
        overrides["log_level"] = log_level
    if ehr_url is not None:
        overrides["ehr_url"] = ehr_url
    http = {k: v for k, v in (("host", http_host), ("port", http_port)) if v is not None}
    mllp = {k: v for k, v in (("host", mllp_host), ("port", mllp_port)) if v is not None}
    if http:
        overrides["http"] = http
    if mllp:
        overrides["mllp"] = mllp
    try:
        settings = load_settings(config, overrides)
        logging.basicConfig(
            level=settings.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s %(message)s",
        )
        service = Service(settings, set(role or [Role.ALL]), migrate=migrate)
        asyncio.run(run_service(service))
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
log_level = "INFO"

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

# The EHR's FHIR API: one URL without auth (or CM_FHIR_EHR_URL, or `serve --ehr-url`) ...
# ehr_url = "https://ehr.example.org/fhir"

[ehr]                       # the sync role: outbox delivery to FHIR endpoints
batch_patients = 20         # patients claimed per endpoint per pass (their writes in order)
poll_interval = 0.5
lease_seconds = 120.0       # claimed rows stay reserved this long for one sync worker
retry_base = 2.0            # back-off after a retryable failure doubles from here ...
retry_max = 300.0           # ... up to this many seconds
shutdown_grace = 30.0
breaker_failures = 5        # failures in a row that open an endpoint's circuit breaker
breaker_cool_down = 30.0

# ... or endpoints with auth (see the README, "Connecting an EHR's FHIR API"):
# [[ehr.endpoints]]
# name = "ehr"
# base_url = "https://ehr.example.org/fhir/r4"
# resource_types = []       # empty: every resource type
# programmes = []           # empty: every programme
# mode = "auto"             # auto (from the CapabilityStatement), transaction, batch, individual
# rate_limit = 10.0         # requests per second; 0 = no limit
# patient_references = "resolve"   # or "identifier": never look the EHR's Patient up
# [ehr.endpoints.auth]
# kind = "smart-backend"    # none, bearer, client-secret, smart-backend
# client_id = "cm-fhir"
# key_file = "/etc/cm-fhir/ehr-key.pem"   # `cm-fhir keys generate` writes it
# scopes = ["system/Task.cu", "system/Patient.rs"]

[health]
max_inbox_age_seconds = 300.0   # /ready 503 when the oldest unprocessed message is older; 0 = off
write_probe_timeout = 2.0       # seconds /ready's inbox write probe waits for the inbox's lock
"""


@config_app.command("example")
def config_example() -> None:
    """Print a commented example config file (TOML) with every setting."""
    typer.echo(EXAMPLE_CONFIG, nl=False)
