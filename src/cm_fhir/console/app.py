"""The console's place in the service: a gate in front of the API's front door. I/O.

:class:`ConsoleGate` is a pure ASGI middleware that the app factory puts just outside
:class:`~cm_fhir.api.front_door.FrontDoor`. Requests under ``/console`` go to the console's own
FastAPI app (built by :func:`console_app` from the panels in :mod:`cm_fhir.console.panels`),
which authenticates with its session cookie instead of a bearer header; every other request goes
on to the front door untouched. Every console answer gets the same security headers: a Content
Security Policy that lets the page load nothing but its own origin's assets, no framing, no
referrer, ``nosniff``, and ``no-store`` for pages.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cm_fhir.api.deps import route_path
from cm_fhir.console.deps import (
    API_APP_KEY,
    CONTEXT_KEY,
    STORE_KEY,
    SignInRequired,
    not_found,
    redirect_to_sign_in,
)
from cm_fhir.console.panels import panel_routers
from cm_fhir.console.session import SessionStore

__all__ = ["PREFIX", "ConsoleGate", "console_app"]

PREFIX = "/console"

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
)


def console_app() -> FastAPI:
    """The console's pages: one router per panel, no OpenAPI document of its own."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.add_exception_handler(SignInRequired, redirect_to_sign_in)
    app.add_exception_handler(RequestValidationError, not_found)
    app.add_exception_handler(StarletteHTTPException, not_found)
    for router in panel_routers():
        app.include_router(router)
    return app


class ConsoleGate:
    """Send ``/console`` requests to the console app; everything else to ``app``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.console = console_app()
        self.sessions = SessionStore()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = route_path(scope) if scope["type"] == "http" else ""
        if path != PREFIX and not path.startswith(PREFIX + "/"):
            await self.app(scope, receive, send)
            return
        api_app = scope["app"]
        state = scope.setdefault("state", {})
        state[API_APP_KEY] = api_app
        state[CONTEXT_KEY] = context = getattr(api_app.state, "context", None)
        self.console.state.context = context  # the API's helpers (audit of refusals) read it
        state[STORE_KEY] = self.sessions

        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers += [h for h in SECURITY_HEADERS if h[0] not in names]
                if b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.console(scope, receive, secured)
