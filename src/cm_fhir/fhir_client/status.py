"""The one seam where HTTP answers and transport failures become :mod:`cm_fhir.errors`.

:data:`STATUS_TABLE` maps a status (and, for 400/422, the OperationOutcome's issue code) to the
exception class; nothing else in the package decides what a status means. Only transport errors,
429 and 5xx are retryable. Messages name the method, the resource type and the issue codes, never
a query string, an identifier or the outcome's text (they may carry PHI); the outcome itself
travels on the exception.
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Mapping
from typing import Any

import httpx

from cm_fhir.errors import (
    RemoteAuthError,
    RemoteConflict,
    RemoteFhirError,
    RemoteInvalid,
    RemoteNotFound,
    RemotePreconditionFailed,
    RemoteRateLimited,
    RemoteTooCostly,
    RemoteUnavailable,
)
from cm_fhir.fhir_client.responses import json_body

__all__ = [
    "STATUS_TABLE",
    "error_for",
    "error_for_transport",
    "issue_codes",
    "raise_for_response",
    "retry_after_seconds",
    "stated_cap",
]

Json = dict[str, Any]

#: (statuses, issue code or None for any, class). The first matching row wins.
STATUS_TABLE: tuple[tuple[frozenset[int], str | None, type[RemoteFhirError]], ...] = (
    (frozenset({429}), None, RemoteRateLimited),
    (frozenset({401, 403}), None, RemoteAuthError),
    (frozenset({404, 410}), None, RemoteNotFound),
    (frozenset({409}), None, RemoteConflict),
    (frozenset({412}), None, RemotePreconditionFailed),
    (frozenset({413}), None, RemoteTooCostly),
    (frozenset({400, 422}), "too-costly", RemoteTooCostly),
    (frozenset({400, 422}), None, RemoteInvalid),
    (frozenset(range(500, 600)), None, RemoteUnavailable),
)


#: How servers that do not use ``too-costly`` say a transaction is too big (lower case). Medplum
#: answers 400 ``invalid`` "Transaction requires strict isolation but has too many entries" for
#: a transaction of more than 8 entries with conditional writes, and "Transaction contains more
#: update operations than allowed" beyond 50 updates. Read as ``too-costly``.
SIZE_REFUSALS = ("too many entries", "more update operations than allowed")


def _issues(outcome: Json | None) -> list[Json]:
    if not isinstance(outcome, dict) or outcome.get("resourceType") != "OperationOutcome":
        return []
    return [i for i in outcome.get("issue") or [] if isinstance(i, dict)]


def issue_codes(outcome: Json | None) -> list[str]:
    """The ``issue.code`` values of an OperationOutcome, in order; ``too-costly`` also for an
    issue whose text is one of the :data:`SIZE_REFUSALS`."""
    codes = []
    for issue in _issues(outcome):
        codes.append(str(issue.get("code")))
        text = f"{(issue.get('details') or {}).get('text', '')} {issue.get('diagnostics', '')}"
        if any(phrase in text.lower() for phrase in SIZE_REFUSALS):
            codes.append("too-costly")
    return codes


_STATED_CAP = re.compile(r"at most (\d+)")


def stated_cap(outcome: Json | None) -> int | None:
    """The size a too-costly refusal says the server takes ("... accepts at most 8 entries"),
    or None when it says no number."""
    for issue in _issues(outcome):
        text = f"{(issue.get('details') or {}).get('text', '')} {issue.get('diagnostics', '')}"
        found = _STATED_CAP.search(text.lower())
        if found is not None and int(found.group(1)) > 0:
            return int(found.group(1))
    return None


def _describe(method: str, url: str) -> str:
    """``PUT Task``: the method and the resource type of a URL, never its query or ids."""
    path = httpx.URL(url).path.rstrip("/")
    parts = [p for p in path.split("/") if p]
    kind = next((p for p in reversed(parts) if p[:1].isupper() and p.isalpha()), "")
    if not kind and parts and parts[-1] == "metadata":
        kind = "metadata"
    return f"{method} {kind or '(base)'}"


_RATELIMIT_RESET = re.compile(r"(?:^|[;,\s])(?:reset|t)\s*=\s*(\d+)")


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds the server asks us to wait, or None if it said nothing.

    ``Retry-After`` (seconds or an HTTP date), else ``RateLimit-Reset``, else the ``reset`` or
    ``t`` parameter of ``RateLimit``."""
    value = headers.get("Retry-After")
    if value is not None:
        value = value.strip()
        if value.isdigit():
            return float(value)
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            when = None
        if when is not None:
            current = time.time() if now is None else now
            return max(0.0, when.timestamp() - current)
    reset = headers.get("RateLimit-Reset") or headers.get("X-RateLimit-Reset")
    if reset is not None and reset.strip().isdigit():
        return float(reset.strip())
    combined = headers.get("RateLimit")
    if combined is not None and (found := _RATELIMIT_RESET.search(combined)):
        return float(found.group(1))
    return None


def error_for(
    status: int,
    outcome: Json | None,
    *,
    method: str,
    url: str,
    headers: Mapping[str, str] | None = None,
) -> RemoteFhirError:
    """The exception for an error answer (``status`` >= 400, or an unexpected 3xx)."""
    codes = issue_codes(outcome)
    cls: type[RemoteFhirError] = RemoteFhirError
    for statuses, code, candidate in STATUS_TABLE:
        if status in statuses and (code is None or code in codes):
            cls = candidate
            break
    message = _describe(method, url)
    if codes:
        message += f" ({', '.join(codes)})"
    if cls is RemoteRateLimited or cls is RemoteUnavailable:
        wait = retry_after_seconds(headers or {})
        return cls(status, message, outcome, retry_after=wait)
    return cls(status, message, outcome)


def raise_for_response(response: httpx.Response) -> None:
    """Raise the mapped error if ``response`` is an error answer. A redirect (other than 304) is
    one too: the client follows none (a FHIR API does not move; a login page is not an answer)."""
    if response.status_code < 300 or response.status_code == 304:
        return
    body = json_body(response)
    outcome = body if body is not None and body.get("resourceType") == "OperationOutcome" else None
    raise error_for(
        response.status_code,
        outcome,
        method=response.request.method,
        url=str(response.request.url),
        headers=response.headers,
    )


def error_for_transport(exc: Exception, *, method: str, url: str) -> RemoteUnavailable:
    """A transport failure (connect, read, timeout, dropped connection) as RemoteUnavailable."""
    kind = "timed out" if isinstance(exc, httpx.TimeoutException | TimeoutError) else "failed"
    return RemoteUnavailable(None, f"{_describe(method, url)} {kind}: {type(exc).__name__}")
