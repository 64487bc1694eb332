"""When and how long to retry a request (tenacity inside).

Only a request that is safe to repeat is retried (:func:`is_idempotent`): GET, HEAD, PUT, DELETE,
a POST create with ``If-None-Exist``, a search by POST, and a transaction or batch Bundle whose
every entry is one of those. A plain POST create is sent once: a lost answer could otherwise mean
two resources. Only retryable errors are retried (transport, timeout, 5xx, 429; see
:mod:`cm_fhir.fhir_client.status`), never a :class:`~cm_fhir.errors.CircuitOpen`.

The wait is exponential with full jitter, unless the server said how long (``Retry-After`` in
seconds or as an HTTP date, ``RateLimit-Reset``, ``RateLimit: ...;t=N``): then exactly that. Each
attempt is capped (``attempt_timeout``), and the whole call has a ``total_budget``: no attempt
starts, and no wait begins, that would end after it. The last error is raised as it is.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import tenacity

from cm_fhir.errors import CircuitOpen, RemoteFhirError, RemoteUnavailable

__all__ = ["RetryPolicy", "is_idempotent", "is_idempotent_bundle"]

T = TypeVar("T")
Json = dict[str, Any]

_SAFE_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE"})


def is_idempotent_bundle(bundle: Json) -> bool:
    """A transaction or batch every entry of which is safe to send again."""
    for entry in bundle.get("entry") or []:
        request = entry.get("request") or {}
        method = str(request.get("method", "")).upper()
        if method in _SAFE_METHODS:
            continue
        if method == "POST" and request.get("ifNoneExist"):
            continue
        return False
    return True


def is_idempotent(
    method: str, path: str, headers: Mapping[str, str], body: Json | None = None
) -> bool:
    """Whether sending this request twice has the effect of sending it once."""
    method = method.upper()
    if method in _SAFE_METHODS:
        return True
    if method != "POST":
        return False
    if path.rstrip("/").endswith("_search") or headers.get("If-None-Exist"):
        return True
    if isinstance(body, dict) and body.get("resourceType") == "Bundle":
        return body.get("type") in ("transaction", "batch") and is_idempotent_bundle(body)
    return False


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, RemoteFhirError) and exc.retryable and not isinstance(exc, CircuitOpen)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long one logical request is tried."""

    max_attempts: int = 6
    attempt_timeout: float = 30.0
    total_budget: float = 120.0
    initial_backoff: float = 0.25
    max_backoff: float = 15.0
    sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep, compare=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.attempt_timeout <= 0 or self.total_budget <= 0:
            raise ValueError("max_attempts >= 1, attempt_timeout > 0 and total_budget > 0")

    def _wait(self) -> Callable[[tenacity.RetryCallState], float]:
        backoff = tenacity.wait_random_exponential(
            multiplier=self.initial_backoff, max=self.max_backoff
        )

        def wait(state: tenacity.RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            asked = getattr(exc, "retry_after", None)
            if isinstance(asked, int | float) and not isinstance(exc, CircuitOpen):
                return max(0.0, float(asked))
            return float(backoff(state))

        return wait

    async def run(self, attempt: Callable[[float], Awaitable[T]], *, idempotent: bool) -> T:
        """Call ``attempt(timeout)`` until it returns, retrying retryable errors if idempotent.

        ``timeout`` is the cap for that attempt: ``attempt_timeout``, or less when the budget ends
        sooner. The attempt enforces it (the client does, around connect, send and the whole
        body, so that its circuit breaker counts an overrun as a failure) and raises a retryable
        error when it runs over.
        """
        started = time.monotonic()

        async def capped() -> T:
            remaining = self.total_budget - (time.monotonic() - started)
            timeout = min(self.attempt_timeout, remaining)
            if timeout <= 0:
                raise RemoteUnavailable(None, "retry budget exhausted")
            return await attempt(timeout)

        if not idempotent:
            return await capped()
        retrying = tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception(_retryable),
            stop=tenacity.stop_after_attempt(self.max_attempts)
            | tenacity.stop_before_delay(self.total_budget),
            wait=self._wait(),
            sleep=self.sleep,
            reraise=True,
        )
        return await retrying(capped)
