"""Running the service's roles in one process: HTTP API, MLLP listener, inbox workers. I/O.

:class:`Service` opens the database (creating and migrating the embedded SQLite file itself;
refusing any other database that is not at the shipped revision, with the command that fixes it),
then starts the roles asked for: the API under a programmatic uvicorn server on a socket bound
here (so port 0 works and the port is known before serving), the MLLP listener, the inbox
workers (:class:`cm_fhir.worker.Worker`, found at run time behind :class:`WorkerRole`; a build
without it runs no worker and says so), which also close the cases that are due, and the
``sync`` role (:class:`cm_fhir.sync.runner.SyncWorker`), which delivers the outbox to the
configured FHIR endpoints (``all`` includes it when an endpoint is configured). API and
listener share one group-commit inbox writer. The workers use the site's mappings
(``mappings_dir``) and ``timezone``; a port already in use is refused naming the address.
Stopping is graceful and ordered: readiness goes false; the listener and the API stop accepting
and finish what is in flight (ACKs included); the workers commit the batch in flight; queued inbox
writes commit; the engine closes. With no credentials configured, a random API key is generated
for the run and the API must bind to a loopback address.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from pydantic import SecretStr
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from cm_fhir.api.app import create_app, head_revision, site_registry
from cm_fhir.api.auth import Authenticator
from cm_fhir.api.deps import AppContext
from cm_fhir.errors import ConfigError, StoreError
from cm_fhir.listener import ListenerConfig, MllpListener, check_exposure
from cm_fhir.mapping.payer_exchange import load_payer_exchange
from cm_fhir.mapping.programmes import load_programmes
from cm_fhir.mllp_peers import is_loopback
from cm_fhir.retention import RetentionJob
from cm_fhir.service_roles import (
    SWITCH_INTERVAL,
    cancel,
    close_workers,
    make_workers,
    worker_available,
)
from cm_fhir.settings import Role, Settings
from cm_fhir.store.engine import current_revision, engine_for, upgrade_database
from cm_fhir.store.outbox_signal import outbox_wakeup
from cm_fhir.store.wakeup import Wakeup
from cm_fhir.store.writer import InboxWriter
from cm_fhir.sync.runner import SyncWorker
from cm_fhir.sync.subscription_delivery import SubscriptionDelivery

__all__ = ["Service", "ServiceInfo", "check_database"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ServiceInfo:
    """Where the running roles can be reached (filled in as they start)."""

    roles: tuple[str, ...]
    http_url: str | None = None
    mllp_address: tuple[str, int] | None = None
    workers: int = 0
    endpoints: tuple[str, ...] = ()
    generated_api_key: str | None = None
    database: str = ""
    notes: list[str] = field(default_factory=list)


async def check_database(engine: AsyncEngine, settings: Settings, *, migrate: bool) -> None:
    """Migrate (SQLite, or ``migrate``) or refuse a database not at the head revision.

    SQLite (the embedded file or a ``sqlite://`` URL) is migrated on start: it has no operator to
    run a migration. Another database must be upgraded with ``cm-fhir db upgrade`` or
    ``migrate``.
    """
    if engine.dialect.name == "sqlite":
        database = engine.url.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        migrate = True
    try:
        if migrate:
            await upgrade_database(engine)
            return
        current = await current_revision(engine)
    except (SQLAlchemyError, OSError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        label = engine.url.render_as_string(hide_password=True)
        raise ConfigError(
            f"cannot open the database {label}: {reason[0] if reason else 'refused'}"
        ) from exc
    except StoreError as exc:
        label = engine.url.render_as_string(hide_password=True)
        raise ConfigError(f"{label}: {exc}") from exc
    head = head_revision()
    if current != head:
        state = "has no cm-fhir schema" if current is None else f"is at revision {current}"
        raise ConfigError(
            f"the database {state}; this cm-fhir needs {head}. Run `cm-fhir db upgrade` with the "
            "same --database-url / --database-schema (or start with --migrate) first"
        )


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handlers: the service decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


def _reason(exc: OSError) -> str:
    """An operating-system error in words ("Address already in use")."""
    return os.strerror(exc.errno) if exc.errno else (exc.strerror or str(exc) or "refused")


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot serve the API on {host}:{port} (http.host/http.port): {_reason(exc)}"
        ) from exc
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class Service:
    """The roles of one ``cm-fhir serve`` process; :meth:`run` until ``stop`` is set."""

    def __init__(
        self, settings: Settings, roles: set[Role] | None = None, *, migrate: bool = False
    ) -> None:
        roles = roles or {Role.ALL}
        try:
            self.endpoints = settings.endpoints
            self.payers = settings.payer_endpoints
        except ValueError as exc:
            raise ConfigError(f"invalid settings: {exc}") from exc
        if Role.ALL in roles:
            roles = {Role.API, Role.LISTENER, Role.WORKER}
            if self.endpoints or self.payers:
                roles.add(Role.SYNC)
        if Role.SYNC in roles and not (self.endpoints or self.payers):
            raise ConfigError(
                "the sync role needs an EHR or payer endpoint: --ehr-url URL (CM_FHIR_EHR_URL), "
                "--payer-url URL (CM_FHIR_PAYER_URL), or [[ehr.endpoints]] / [[payer.endpoints]] "
                "in the config file"
            )
        self.roles = roles
        self.migrate = migrate
        self.settings = self._with_credentials(settings)
        # Like the API's bind check: refuse an unprotected public MLLP bind before anything starts.
        self._listener_config: ListenerConfig | None = None
        if Role.LISTENER in roles:
            self._listener_config = ListenerConfig.from_settings(settings.mllp)
            check_exposure(self._listener_config)
        self.info = ServiceInfo(
            roles=tuple(
                r.value for r in (Role.API, Role.LISTENER, Role.WORKER, Role.SYNC) if r in roles
            ),
            generated_api_key=self._generated,
        )

    def _with_credentials(self, settings: Settings) -> Settings:
        self._generated: str | None = None
        if settings.credentials_configured or Role.API not in self.roles:
            return settings
        if not is_loopback(settings.http.host):
            raise ConfigError(
                f"no API keys or JWKS configured: the API may only bind to localhost, not "
                f"{settings.http.host}. Set CM_FHIR_API_KEYS or auth.jwks_url"
            )
        self._generated = secrets.token_urlsafe(24)
        return settings.model_copy(update={"api_keys": (SecretStr(self._generated),)})

    async def run(
        self,
        stop: asyncio.Event,
        on_ready: Callable[[ServiceInfo], None] | None = None,
    ) -> None:
        settings = self.settings
        engine = engine_for(settings)
        self.info.database = engine.url.render_as_string(hide_password=True)
        context = AppContext(
            settings=settings,
            engine=engine,
            authenticator=Authenticator(
                [k.get_secret_value() for k in settings.api_keys], settings.auth
            ),
            registry=site_registry(settings),
            payer_exchange=load_payer_exchange(settings.mappings_dir),
            programmes=load_programmes(settings.mappings_dir),
        )
        try:
            await check_database(engine, settings, migrate=self.migrate)
            async with contextlib.AsyncExitStack() as stack:
                stack.push_async_callback(engine.dispose)
                await self._run_roles(stack, engine, context, stop, on_ready)
        finally:
            await engine.dispose()

    async def _run_roles(
        self,
        stack: contextlib.AsyncExitStack,
        engine: AsyncEngine,
        context: AppContext,
        stop: asyncio.Event,
        on_ready: Callable[[ServiceInfo], None] | None,
    ) -> None:
        settings = self.settings
        writer: InboxWriter | None = None
        # inbox -> worker -> sync, in this process; every other commit of outbox rows on this
        # engine notifies ``committed`` by itself (outbox_signal), the worker's own engines not
        arrived, committed = Wakeup(), outbox_wakeup(engine)
        if Role.API in self.roles or Role.LISTENER in self.roles:
            writer = await stack.enter_async_context(InboxWriter(engine, committed=arrived))
        listener: MllpListener | None = None
        server: _QuietServer | None = None
        server_task: asyncio.Task[None] | None = None
        worker_stop = asyncio.Event()
        worker_tasks: list[asyncio.Task[Any]] = []

        if Role.WORKER in self.roles:
            if worker_available():
                context.roles["worker"] = "running"
                workers = make_workers(engine, settings, own_loop=writer is not None)
                stack.push_async_callback(
                    close_workers,
                    workers,
                    worker_stop,
                    worker_tasks,
                    settings.worker.shutdown_grace,
                )
                if writer is not None:
                    # The worker's thread (SQLite) is busy in Python while the loop waits to
                    # answer a sender: hand the interpreter over every 0.5 ms, not every 5 ms.
                    sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
                worker_tasks.extend(  # the same list close_workers waits for
                    asyncio.create_task(
                        w.run(worker_stop, arrived=arrived, committed=committed),
                        name=f"worker-{n}",
                    )
                    for n, w in enumerate(workers)
                )
                purger = RetentionJob(engine, settings.retention)
                worker_tasks.append(asyncio.create_task(purger.run(worker_stop), name="retention"))
                self.info.workers = len(workers)
            else:
                self.info.notes.append("worker: not in this build; messages stay queued")
        sync_task: asyncio.Task[None] | None = None
        if Role.SYNC in self.roles:
            sync = SyncWorker(
                engine,
                self.endpoints,
                settings.ehr,
                payers=self.payers,
                registry=context.registry,
                payer_exchange=context.payer_exchange,
                public_url=settings.payer.public_url,
            )
            context.sync = sync
            context.roles["sync"] = "running"
            sync_task = asyncio.create_task(sync.run(worker_stop), name="sync")
            self.info.endpoints = tuple(e.name for e in (*self.endpoints, *self.payers))
        if Role.API in self.roles or Role.SYNC in self.roles:  # payer side: PAS subscriptions
            notifier = SubscriptionDelivery(engine, settings.ehr, f"subscriptions:{os.getpid()}")
            notifying = asyncio.create_task(
                notifier.run(worker_stop, context.subscription_events), name="subscriptions"
            )
            stack.push_async_callback(cancel, notifying)
            worker_tasks.append(notifying)
        if Role.LISTENER in self.roles:
            assert writer is not None
            mllp = settings.mllp
            assert self._listener_config is not None
            listener = MllpListener(self._listener_config, writer)
            context.listener = listener
            try:
                await listener.start()
            except OSError as exc:
                raise ConfigError(
                    f"cannot listen for MLLP on {mllp.host}:{mllp.port} (mllp.host/mllp.port): "
                    f"{_reason(exc)}"
                ) from exc
            context.roles["listener"] = "running"
            self.info.mllp_address = (mllp.host, listener.port)
        if Role.API in self.roles:
            context.roles["api"] = "starting"
            sock = _bind(settings.http.host, settings.http.port)
            app = create_app(settings, engine=engine, inbox_writer=writer, context=context)
            uv_config = uvicorn.Config(
                app,
                lifespan="on",
                log_config=None,
                access_log=False,
                server_header=False,
                timeout_graceful_shutdown=int(settings.http.graceful_timeout),
                root_path=settings.http.root_path,
                limit_concurrency=1000,
            )
            server = _QuietServer(uv_config)
            server_task = asyncio.create_task(server.serve(sockets=[sock]), name="http")
            while not server.started and not server_task.done():
                await asyncio.sleep(0.02)
            if server_task.done():
                sock.close()
                server_task.result()
                raise ConfigError("the HTTP API did not start")
            host, port = sock.getsockname()[:2]
            shown = f"[{host}]" if ":" in host else host
            self.info.http_url = f"http://{shown}:{port}"
        if on_ready is not None:
            on_ready(self.info)

        waiters = [asyncio.create_task(stop.wait())]
        if server_task is not None:
            waiters.append(server_task)  # type: ignore[arg-type]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        log.info("stopping: no new connections or requests, finishing in-flight work")
        for role in context.roles:
            context.roles[role] = "stopping"
        intake: list[Any] = []
        if listener is not None:
            intake.append(listener.stop())
        if server is not None and server_task is not None:
            server.should_exit = True
            intake.append(server_task)
        await asyncio.gather(*intake, return_exceptions=True)
        worker_stop.set()
        if worker_tasks:
            done, pending = await asyncio.wait(worker_tasks, timeout=settings.worker.shutdown_grace)
            for task in pending:
                task.cancel()
            for task in done:
                if task.exception() is not None:
                    log.error("worker stopped with %s", type(task.exception()).__name__)
        if sync_task is not None:
            done, _ = await asyncio.wait([sync_task], timeout=settings.ehr.shutdown_grace)
            if not done:
                sync_task.cancel()  # leased rows are sent again when their lease runs out
            elif sync_task.exception() is not None:
                log.error("sync stopped with %s", type(sync_task.exception()).__name__)
        waiters[0].cancel()
        log.info("stopped")
