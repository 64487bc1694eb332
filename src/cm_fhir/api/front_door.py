"""The front door: who is calling, and how much it may send, before any body is read. I/O.

A pure ASGI middleware in front of routing, so nothing reaches FastAPI (which reads and parses a
body before it resolves any dependency) until the caller is known:

1. **Authentication first.** Every path but the open ones (:data:`OPEN_PATHS`: health,
   readiness, the FHIR CapabilityStatement, the OpenAPI document and its pages) needs
   ``Authorization: Bearer <token>``. The token is checked from the headers alone; a refused
   caller gets its 401 (JSON, or an OperationOutcome under ``/fhir``) without one byte of the
   body being read, and the refusal is audited (a digest of what was sent, never the token; the
   client address; the route template). The principal is kept in the request state for the
   routes' scope checks (:func:`cm_fhir.api.deps.current_principal`).
2. **Body limit.** ``http.max_body_bytes`` bounds every request body: a declared
   ``Content-Length`` over it is answered 413 at once; a chunked body is counted while it
   streams and refused with 413 as soon as it passes the limit.

A refusal sent while a body is still on its way carries ``Connection: close``, so the server
stops reading the connection instead of draining the rest.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cm_fhir.api.auth import AuthError
from cm_fhir.api.deps import AppContext, record_denial, route_path, token_subject
from cm_fhir.api.docs import ASSET_PATHS
from cm_fhir.api.errors import error_response

__all__ = ["OPEN_PATHS", "BodyTooLarge", "FrontDoor"]

log = logging.getLogger(__name__)

#: Paths anyone may call (no token): probes, what the FHIR facade supports, the API's own docs.
OPEN_PATHS = frozenset(
    {
        "/health",
        "/ready",
        "/fhir/metadata",
        "/openapi.json",
        "/docs",
        "/docs/oauth2-redirect",
        "/redoc",
        *ASSET_PATHS,
    }
)


#: Paths whose routes authenticate the caller themselves (an EHR's notification secret); the
#: body limit still applies.
OWN_AUTH_PREFIXES = ("/fhir/subscription-notification/",)


class BodyTooLarge(HTTPException):
    """The request body passed ``http.max_body_bytes`` (413)."""

    def __init__(self, limit: int) -> None:
        message = f"the request body exceeds the limit of {limit} bytes"
        super().__init__(413, message, headers={"Connection": "close"})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


def _declared_length(scope: Scope) -> int | None:
    value = _header(scope, b"content-length")
    return int(value) if value is not None and value.isdigit() else None


def _has_body(scope: Scope) -> bool:
    declared = _declared_length(scope)
    return bool(declared) or _header(scope, b"transfer-encoding") is not None


class FrontDoor:
    """Authenticate from the headers, then stream the body through the size limit."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        context: AppContext | None = getattr(scope["app"].state, "context", None)
        if context is None:  # a request before the lifespan ran: nothing is open yet
            await self._refuse(scope, receive, send, 503, "the service is starting")
            return
        path = route_path(scope)
        if path not in OPEN_PATHS and not path.startswith(OWN_AUTH_PREFIXES):
            authorization = _header(scope, b"authorization")
            try:
                principal = await context.authenticator.authenticate(authorization)
            except AuthError as exc:
                await record_denial(scope, token_subject(authorization), "bearer", 401, exc.reason)
                headers = {"WWW-Authenticate": exc.www_authenticate}
                await self._refuse(scope, receive, send, exc.status, exc.reason, headers)
                return
            scope.setdefault("state", {})["principal"] = principal
        limit = context.settings.http.max_body_bytes
        declared = _declared_length(scope)
        if declared is not None and declared > limit:
            await self._refuse(scope, receive, send, 413, BodyTooLarge(limit).detail)
            return
        await self._limited(scope, receive, send, limit)

    async def _limited(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge as exc:  # raised outside the routes' own error handling
            if started:
                raise
            await self._refuse(scope, receive, send, 413, exc.detail)

    async def _refuse(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        status: int,
        message: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        out: dict[str, Any] = dict(headers or {})
        if _has_body(scope):
            out["Connection"] = "close"  # do not drain a body nobody will read
        response = error_response(Request(scope), status, message, headers=out)
        await response(scope, receive, send)
