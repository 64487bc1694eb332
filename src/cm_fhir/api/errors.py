"""Every error the API returns is JSON; under ``/fhir`` it is an OperationOutcome.

``/api`` and the rest answer ``{"error": {"status", "code", "message", "fields"?}}``; ``/fhir``
answers an OperationOutcome as ``application/fhir+json``. Validation errors name the field
(``query.limit``, ``body.ids[2]``) and what is wrong with it, never the value sent (it may be
PHI). Errors of the :mod:`cm_fhir.errors` tree map to statuses here; anything unexpected is a
500 whose log line names the exception type only. I/O only for a refused scope (403), which is
audited like every refusal.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from cm_fhir.api.auth import AuthError
from cm_fhir.api.deps import Auditor, record_denial, route_path
from cm_fhir.errors import (
    CmFhirError,
    ConfigError,
    DomainError,
    InboundMessageError,
    MappingError,
    RecordConflict,
    RecordNotFound,
    RecordVersionMismatch,
    RemoteFhirError,
    RemoteUnavailable,
    SearchParameterError,
    StoreError,
    ValidationError,
)
from cm_fhir.fhir.outcome import Issue, operation_outcome

__all__ = ["FHIR_JSON", "error_response", "install_error_handlers"]

log = logging.getLogger(__name__)
FHIR_JSON = "application/fhir+json"

# HTTP status -> FHIR issue type (http://hl7.org/fhir/issue-type).
_ISSUE_CODES = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    406: "not-supported",
    409: "conflict",
    413: "too-costly",
    415: "not-supported",
    422: "processing",
    501: "not-supported",
    503: "transient",
}
_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    500: "internal_error",
    501: "not_implemented",
    503: "unavailable",
}


def _is_fhir(request: Request) -> bool:
    path = route_path(request.scope)
    return path == "/fhir" or path.startswith("/fhir/")


def error_response(
    request: Request,
    status: int,
    message: str,
    *,
    fields: Sequence[tuple[str, str]] = (),
    headers: dict[str, str] | None = None,
    outcome: dict[str, Any] | None = None,
) -> JSONResponse:
    """The error body for ``request``: an OperationOutcome under /fhir, else the API shape."""
    if _is_fhir(request):
        if outcome is None:
            code = _ISSUE_CODES.get(status, "exception")
            issues = [Issue("error", code, text, where) for where, text in fields] or [
                Issue("error", code, message)
            ]
            outcome = operation_outcome(issues)
        return JSONResponse(outcome, status, headers=headers, media_type=FHIR_JSON)
    body: dict[str, Any] = {
        "status": status,
        "code": _CODES.get(status, "error"),
        "message": message,
    }
    if fields:
        body["fields"] = [{"field": where, "message": text} for where, text in fields]
    return JSONResponse({"error": body}, status, headers=headers)


async def json_bundle(
    request: Request, audit: Auditor, action: str, resource_type: str
) -> tuple[bytes, Any] | Response:
    """The request's raw body and its JSON; or, for a body that is not JSON, the 400 answer
    (the attempt audited as a failed ``action`` on ``resource_type``)."""
    raw = await request.body()
    try:
        return raw, json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        await audit.record(action, resource_type, None, outcome="failure")
        return error_response(request, 400, "the body is not JSON", fields=[("Bundle", "not JSON")])


def _field_name(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "request"


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    fields = [(_field_name(tuple(e.get("loc", ()))), str(e.get("msg", ""))) for e in exc.errors()]
    names = ", ".join(sorted({name for name, _ in fields}))
    return error_response(request, 422, f"invalid request: {names}", fields=fields)


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    message = exc.detail if isinstance(exc.detail, str) else "request failed"
    headers = dict(exc.headers) if exc.headers else None
    return error_response(request, exc.status_code, message, headers=headers)


async def _auth(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AuthError)
    principal = getattr(request.state, "principal", None)
    if principal is not None:
        await record_denial(
            request.scope, principal.subject, principal.method, exc.status, exc.reason
        )
    headers = {"WWW-Authenticate": exc.www_authenticate}
    return error_response(request, exc.status, exc.reason, headers=headers)


#: The one table from the error tree to HTTP statuses: the first class ``exc`` is an instance of
#: wins, so subclasses come before their parents. Local record conditions (``Record*``) answer
#: 404/409/412; a remote FHIR server's failure surfacing here is a gateway error (502, or 503 when
#: it may pass), never the remote status, so a remote 404 never reads as one of ours.
_STATUSES: tuple[tuple[type[CmFhirError], int], ...] = (
    (RecordNotFound, 404),
    (RecordVersionMismatch, 412),
    (RecordConflict, 409),
    (SearchParameterError, 400),
    (ValidationError, 422),
    (MappingError, 422),
    (InboundMessageError, 422),
    (DomainError, 409),
    (StoreError, 503),
    (RemoteUnavailable, 503),
    (RemoteFhirError, 502),
    (ConfigError, 500),
)

#: Errors whose message is safe and useful to a client even with a 5xx status.
_SPOKEN_5XX = (StoreError, RemoteFhirError)


def _status_of(exc: CmFhirError) -> int:
    return next((status for cls, status in _STATUSES if isinstance(exc, cls)), 500)


async def _domain(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CmFhirError)
    status = _status_of(exc)
    if status >= 500:
        log.error("%s on %s %s", type(exc).__name__, request.method, _route_of(request))
    outcome = exc.outcome if isinstance(exc, ValidationError) else None
    message = str(exc) if status < 500 or isinstance(exc, _SPOKEN_5XX) else "internal error"
    headers = {"Retry-After": "5"} if status == 503 else None
    return error_response(request, status, message, outcome=outcome, headers=headers)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled %s on %s %s", type(exc).__name__, request.method, _route_of(request))
    return error_response(request, 500, "internal error")


def _route_of(request: Request) -> str:
    route = request.scope.get("route")
    return str(getattr(route, "path", "?"))


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers on ``app``."""
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(AuthError, _auth)
    app.add_exception_handler(CmFhirError, _domain)
    app.add_exception_handler(Exception, _unexpected)
