"""What every console panel shares: the signed-in user, the API, forms, and rendering. I/O.

``ConsoleDep`` gives a panel route a :class:`Console`: the live session (else the user is sent
to the sign-in page, and no data is read), the service's :class:`~cm_fhir.api.deps.AppContext`,
and :class:`ConsoleApi`, which calls the service's own HTTP API in process with the session's
key or token, so the console obeys the API's rules (scopes, ETag/If-Match, audit) and has no
data rules of its own. :meth:`Console.form` reads a POSTed form (bounded) and refuses it
without the session's CSRF token or from another origin. :meth:`Console.page` renders a
template of ``templates/`` with the navigation, the CSRF token and the user.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.resources import files
from typing import Annotated, Any
from urllib.parse import parse_qs, urlsplit

import httpx
from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.types import ASGIApp

from cm_fhir.api.auth import AuthError, Principal
from cm_fhir.api.deps import AppContext, Auditor, route_template
from cm_fhir.console.session import COOKIE, Session, SessionStore, same_token

__all__ = [
    "API_APP_KEY",
    "CONTEXT_KEY",
    "NAVIGATION",
    "STORE_KEY",
    "Console",
    "ConsoleApi",
    "ConsoleDep",
    "FormError",
    "SignInRequired",
    "api_message",
    "api_page",
    "base_path",
    "environment",
    "not_found",
    "redirect_to_sign_in",
    "render",
]

log = logging.getLogger(__name__)

API_APP_KEY = "cm_fhir_console_api_app"
CONTEXT_KEY = "cm_fhir_console_context"
STORE_KEY = "cm_fhir_console_sessions"
MAX_FORM_BYTES = 64 * 1024

#: The navigation, in order: (accessible name, path below /console).
NAVIGATION: tuple[tuple[str, str], ...] = (
    ("Overview", ""),
    ("Messages", "/messages"),
    ("Dead letters", "/dead-letters"),
    ("Outbox", "/outbox"),
    ("Worklist", "/worklist"),
    ("Cases", "/cases"),
    ("Reviews", "/reviews"),
)


class SignInRequired(Exception):
    """No live session: the answer is a redirect to the sign-in page."""


class FormError(Exception):
    """A POSTed form that must not be acted on (CSRF, origin, size, encoding)."""


_environment: Environment | None = None


def environment() -> Environment:
    """The Jinja environment over the package's templates (autoescaped)."""
    global _environment
    if _environment is None:
        folder = str(files("cm_fhir.console") / "templates")
        _environment = Environment(
            loader=FileSystemLoader(folder),
            autoescape=select_autoescape(("html",), default=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
    return _environment


def base_path(request: Request) -> str:
    """The console's URL prefix as the browser sees it (behind a proxy: with its root path)."""
    return str(request.scope.get("root_path", "")).rstrip("/") + "/console"


def render(
    request: Request, template: str, values: Mapping[str, Any], status: int = 200
) -> HTMLResponse:
    """Render ``template`` with ``values`` and the shared ones (``base``, ``nav``)."""
    shared = {"base": base_path(request), "nav": NAVIGATION, "path": request.url.path}
    html = environment().get_template(template).render({**shared, **values})
    return HTMLResponse(html, status)


async def redirect_to_sign_in(request: Request, exc: Exception) -> Response:
    return RedirectResponse(base_path(request) + "/sign-in", status_code=303)


async def not_found(request: Request, exc: Exception) -> Response:
    """A page the console does not have (or a malformed id in its path): a plain 404 page that
    echoes nothing of the request."""
    return render(request, "not_found.html", {"title": "Not found", "signed_in": False}, 404)


async def api_page(
    console: Console, path: str, **params: Any
) -> tuple[list[dict[str, Any]], str | None, str | None]:
    """One page of an API list: its items, the next page's cursor, and the API's error message
    when it refused (then no items)."""
    answer = await console.api.get(path, **params)
    if answer.status_code != 200:
        return [], None, api_message(answer)
    page = answer.json()
    return page["items"], page["next_cursor"], None


def api_message(response: httpx.Response) -> str:
    """The API's error message (never a body we cannot read)."""
    try:
        body = response.json()
    except ValueError:
        return f"the service answered {response.status_code}"
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("message", response.status_code))
    return f"the service answered {response.status_code}"


class ConsoleApi:
    """The service's HTTP API, called in process with the signed-in user's credentials."""

    def __init__(self, app: ASGIApp, token: str, client: tuple[str, int]) -> None:
        self._transport = httpx.ASGITransport(app=app, client=client)
        self._headers = {"Authorization": f"Bearer {token}"}

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Any = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        async with httpx.AsyncClient(
            transport=self._transport, base_url="http://console.internal", timeout=30
        ) as client:
            return await client.request(
                method,
                path,
                params=params,
                json=json,
                headers={**self._headers, **(headers or {})},
            )

    async def get(self, path: str, **params: Any) -> httpx.Response:
        clean = {k: v for k, v in params.items() if v not in (None, "", [])}
        return await self.request("GET", path, params=clean)


@dataclass(slots=True)
class Console:
    """One console request of a signed-in user."""

    request: Request
    context: AppContext
    session: Session
    api: ConsoleApi

    def auditor(self) -> Auditor:
        """Audit rows for what the console reads itself (not through the API)."""
        method: Any = self.session.method
        principal = Principal(self.session.subject, self.session.scopes, method)
        client = self.request.client.host if self.request.client else None
        return Auditor(self.context.engine, principal, route_template(self.request.scope), client)

    async def form(self) -> dict[str, str]:
        """The POSTed form (first value of each field); FormError without the CSRF token."""
        fields = await read_form(self.request)
        if not same_token(fields.get("csrf"), self.session.csrf):
            raise FormError("the form has expired; reload the page and try again")
        return fields

    def page(self, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        shared = {"csrf": self.session.csrf, "user": self.session.subject, "signed_in": True}
        return render(self.request, template, {**shared, **values}, status)

    def now(self) -> datetime:
        return datetime.now(UTC)


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    host = request.headers.get("host", "")
    return urlsplit(origin).netloc == host


async def read_form(request: Request) -> dict[str, str]:
    """A urlencoded form body, at most :data:`MAX_FORM_BYTES`, from this origin only."""
    if not _same_origin(request):
        raise FormError("the form was sent from another site")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise FormError("the form must be sent as application/x-www-form-urlencoded")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise FormError("the form is too large")
    try:
        parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=200)
    except (UnicodeDecodeError, ValueError) as exc:
        raise FormError("the form could not be read") from exc
    return {name: values[0].strip() for name, values in parsed.items()}


def context_of(request: Request) -> AppContext:
    context: AppContext | None = request.scope.get("state", {}).get(CONTEXT_KEY)
    if context is None:
        raise SignInRequired()
    return context


def sessions_of(request: Request) -> SessionStore:
    store: SessionStore = request.scope["state"][STORE_KEY]
    return store


async def signed_in(request: Request) -> Console:
    """The signed-in user's :class:`Console`; SignInRequired (a redirect) otherwise.

    The key or token is checked again on every request, so an expired JWT or a removed key ends
    the session at once. A user without the ``read`` scope is signed out as well.
    """
    context = context_of(request)
    store = sessions_of(request)
    session_id = request.cookies.get(COOKIE)
    session = store.get(session_id)
    if session is None:
        raise SignInRequired()
    try:
        principal = await context.authenticator.authenticate(f"Bearer {session.token}")
    except AuthError as exc:
        store.drop(session_id)
        raise SignInRequired() from exc
    if not principal.has_scope("read"):
        store.drop(session_id)
        raise SignInRequired()
    session.scopes = principal.scopes
    client = request.client
    address = (client.host, client.port) if client else ("127.0.0.1", 0)
    api = ConsoleApi(request.scope["state"][API_APP_KEY], session.token, address)
    return Console(request, context, session, api)


ConsoleDep = Annotated[Console, Depends(signed_in)]
