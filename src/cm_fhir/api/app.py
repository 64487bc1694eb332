"""The application factory: :func:`create_app` builds one FastAPI app for one set of settings. I/O.

Nothing happens at import. The lifespan opens what the app needs (the engine, unless one is
passed in; an inbox writer for ``POST /api/hl7v2``, unless one is shared with the MLLP listener)
and closes what it opened. Two pure ASGI middlewares run before routing: the outer logs one line
per request with the method, the route *template*, the status, the time taken and the request id
(the client's ``X-Request-ID`` when sane, else a new one; echoed in the response and carried by
every line logged meanwhile; never the query string or a body, which may hold patient
identifiers) and turns an unhandled error into a
JSON 500, so no traceback reaches a client; the inner, :mod:`cm_fhir.api.front_door`,
authenticates from the headers and bounds the body before anything reads it.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from importlib.resources import files
from typing import Any

from alembic.config import Config
from alembic.script import ScriptDirectory
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import cm_fhir
from cm_fhir.api import metrics
from cm_fhir.api.auth import Authenticator
from cm_fhir.api.deps import AppContext, route_template
from cm_fhir.api.docs import install_docs
from cm_fhir.api.errors import error_response, install_error_handlers
from cm_fhir.api.front_door import FrontDoor
from cm_fhir.api.routes import routers
from cm_fhir.api.routes.ehr_notifications import open_receivers
from cm_fhir.console import ConsoleGate
from cm_fhir.listener import ListenerConfig, MllpListener
from cm_fhir.logs import request_id
from cm_fhir.mapping.payer_exchange import default_payer_exchange, load_payer_exchange
from cm_fhir.mapping.programmes import load_programmes
from cm_fhir.mapping.registry import MappingRegistry, default_registry, load_registry
from cm_fhir.settings import Settings
from cm_fhir.store.engine import current_revision, engine_for
from cm_fhir.store.writer import InboxWriter

__all__ = ["create_app", "head_revision", "schema_is_current", "site_registry"]

log = logging.getLogger("cm_fhir.api.access")

_DESCRIPTION = """\
cm-fhir's service API: the HL7v2 inbox (list, inspect, ingest over HTTP, replay dead letters),
the FHIR outbox, cases, and a read-only FHIR R4 facade under `/fhir`.

Every route except `/health` and `/ready` needs `Authorization: Bearer <token>`: a static API
key (`CM_FHIR_API_KEYS`) or an OAuth2 access token (JWT) from the configured authorisation
server. Scopes: `read`, `write`; SMART `system/*.read` (or `system/<Type>.read`) on `/fhir`.
"""


def head_revision() -> str:
    """The newest migration shipped with this build."""
    config = Config()
    config.set_main_option("script_location", str(files("cm_fhir.store") / "migrations"))
    head = ScriptDirectory.from_config(config).get_current_head()
    if head is None:
        raise RuntimeError("no migrations are shipped")
    return head


async def schema_is_current(engine: AsyncEngine) -> bool:
    """Whether the database is at :func:`head_revision`."""
    return await current_revision(engine) == head_revision()


class _AccessLog:
    """One log line per request (route template, no query string); a JSON 500 on a crash."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        response_started = False
        rid = request_id_of(scope)
        token = request_id.set(rid)
        header = (b"x-request-id", rid.encode("ascii"))

        async def _send(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = int(message["status"])
                response_started = True
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        try:
            await self.app(scope, receive, _send)
        except Exception as exc:
            log.error("unhandled %s", type(exc).__name__)
            if not response_started:
                response = error_response(Request(scope), 500, "internal error")
                await response(scope, receive, _send)
        finally:
            elapsed = (time.perf_counter() - started) * 1000
            method, route = scope.get("method", "?"), route_template(scope)
            log.info(
                "%s %s %d %.1fms",
                method,
                route,
                status,
                elapsed,
                extra={
                    "request_id": rid,
                    "method": method,
                    "route": route,
                    "status": status,
                    "ms": round(elapsed, 1),
                },
            )
            request_id.reset(token)


_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,64}")


def request_id_of(scope: Scope) -> str:
    """The client's ``X-Request-ID`` when it is 1-64 characters of ``A-Za-z0-9._:-``, else new."""
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id" and _REQUEST_ID.fullmatch(value):
            return bytes(value).decode("ascii")
    return uuid.uuid4().hex


def site_registry(settings: Settings) -> MappingRegistry:
    """The mapping registry for ``settings``: the bundled files merged with ``mappings_dir``."""
    folder = settings.mappings_dir
    return load_registry(folder) if folder is not None else default_registry()


def create_app(
    settings: Settings,
    *,
    engine: AsyncEngine | None = None,
    inbox_writer: InboxWriter | None = None,
    context: AppContext | None = None,
) -> FastAPI:
    """Build the API for ``settings``.

    ``engine``: use this engine (the caller disposes of it) instead of opening one.
    ``inbox_writer``: share the MLLP listener's group-commit writer for ``POST /api/hl7v2``.
    ``context``: the service passes its own, to report role states on ``/ready``.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            own_engine = engine is None
            active = engine or engine_for(settings)
            if own_engine:
                stack.push_async_callback(active.dispose)
            writer = inbox_writer
            if writer is None:
                writer = await stack.enter_async_context(InboxWriter(active))
            ctx = context or AppContext(
                settings=settings,
                engine=active,
                authenticator=Authenticator(
                    [key.get_secret_value() for key in settings.api_keys], settings.auth
                ),
                registry=site_registry(settings),
                payer_exchange=(
                    load_payer_exchange(settings.mappings_dir)
                    if settings.mappings_dir is not None
                    else default_payer_exchange()
                ),
                programmes=load_programmes(settings.mappings_dir),
            )
            ctx.engine = active
            ctx.ingest = MllpListener(
                ListenerConfig(max_message_bytes=settings.mllp.max_message_bytes), writer
            )
            ctx.notifications = await open_receivers(
                settings,
                active,
                stack,
                registry=ctx.registry,
                payer_exchange=ctx.payer_exchange,
            )
            ctx.schema_current = await schema_is_current(active)
            ctx.roles.setdefault("api", "running")
            ctx.roles["api"] = "running"
            app.state.context = ctx
            try:
                yield
            finally:
                ctx.roles["api"] = "stopped"

    app = FastAPI(
        title="cm-fhir",
        version=cm_fhir.__version__ if hasattr(cm_fhir, "__version__") else "0",
        description=_DESCRIPTION,
        lifespan=lifespan,
        root_path=settings.http.root_path,
        responses=_COMMON_RESPONSES,
        docs_url=None,
        redoc_url=None,
    )
    install_docs(app)
    install_error_handlers(app)
    for router in routers():
        app.include_router(router)
    app.include_router(metrics.router)
    app.add_middleware(FrontDoor)  # inner: authenticates and bounds the body before routing
    app.add_middleware(ConsoleGate)  # /console: its own pages, signed in with a session cookie
    app.add_middleware(_AccessLog)
    return app


_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "status": {"type": "integer"},
                "code": {"type": "string"},
                "message": {"type": "string"},
                "fields": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
                    },
                },
            },
        }
    },
}
_COMMON_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {
        "description": "No or invalid bearer token",
        "content": {"application/json": {"schema": _ERROR_SCHEMA}},
    },
    403: {
        "description": "The token lacks the scope",
        "content": {"application/json": {"schema": _ERROR_SCHEMA}},
    },
}
