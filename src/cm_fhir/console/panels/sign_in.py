"""Signing in and out of the console. I/O (the API's authenticator; the audit trail).

The form has one field, "API key", which takes a static API key or an OAuth2 access token: the
same :class:`~cm_fhir.api.auth.Authenticator` as the API checks it, and the user needs the
``read`` scope. A refusal is audited like a refused API call (a digest of what was sent, never
the value) and answered with the form again, saying only that the key was not accepted.
"""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from cm_fhir.api.auth import AuthError
from cm_fhir.api.deps import record_denial, token_subject
from cm_fhir.console.deps import (
    FormError,
    base_path,
    context_of,
    read_form,
    render,
    sessions_of,
)
from cm_fhir.console.session import (
    COOKIE,
    PRE_COOKIE,
    cookie_header,
    expired_cookie_header,
    same_token,
)

__all__ = ["router"]

router = APIRouter(prefix="/console")

_PRE_MAX_AGE = 600


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def _form(request: Request, status: int = 200, error: str | None = None) -> Response:
    token = secrets.token_urlsafe(24)
    response = render(
        request, "sign_in.html", {"signin_token": token, "error": error, "signed_in": False}, status
    )
    response.headers.append(
        "set-cookie",
        cookie_header(
            PRE_COOKIE,
            token,
            path=base_path(request),
            max_age=_PRE_MAX_AGE,
            secure=_secure(request),
        ),
    )
    return response


@router.get("/sign-in", summary="The sign-in form")
async def sign_in_form(request: Request) -> Response:
    return _form(request)


@router.post("/sign-in", summary="Sign in with an API key or an access token")
async def sign_in(request: Request) -> Response:
    context = context_of(request)
    try:
        fields = await read_form(request)
    except FormError as exc:
        return _form(request, 400, str(exc))
    if not same_token(fields.get("signin_token"), request.cookies.get(PRE_COOKIE, "\x00")):
        return _form(request, 400, "The form has expired; please sign in again.")
    key = fields.get("api_key", "")
    if not key:
        return _form(request, 400, "Enter an API key or an access token.")
    authorization = f"Bearer {key}"
    try:
        principal = await context.authenticator.authenticate(authorization)
        if not principal.has_scope("read"):
            raise AuthError(403, "the console needs the 'read' scope", scope="read")
    except AuthError as exc:
        await record_denial(
            request.scope, token_subject(authorization), "console", exc.status, exc.reason
        )
        message = (
            "This key or token does not grant the 'read' scope."
            if exc.status == 403
            else "Sign-in failed: the key or token was not accepted."
        )
        return _form(request, exc.status, message)
    store = sessions_of(request)
    session_id, _ = store.create(key, principal.subject, principal.method, principal.scopes)
    response = RedirectResponse(base_path(request), status_code=303)
    max_age = int(store.lifetime.total_seconds())
    secure = _secure(request)
    path = base_path(request)
    response.headers.append(
        "set-cookie", cookie_header(COOKIE, session_id, path=path, max_age=max_age, secure=secure)
    )
    response.headers.append(
        "set-cookie", expired_cookie_header(PRE_COOKIE, path=path, secure=secure)
    )
    return response


@router.post("/sign-out", summary="Sign out")
async def sign_out(request: Request) -> Response:
    store = sessions_of(request)
    session_id = request.cookies.get(COOKIE)
    session = store.get(session_id)
    if session is not None:
        try:
            fields = await read_form(request)
        except FormError:
            fields = {}
        if not same_token(fields.get("csrf"), session.csrf):
            return RedirectResponse(base_path(request), status_code=303)
        store.drop(session_id)
    response = RedirectResponse(base_path(request) + "/sign-in", status_code=303)
    response.headers.append(
        "set-cookie",
        expired_cookie_header(COOKIE, path=base_path(request), secure=_secure(request)),
    )
    return response
