"""A :class:`~cm_fhir.fhir_client.FhirClient` per configured endpoint: auth, rate limit. I/O.

:func:`open_client` builds the client of one :class:`~cm_fhir.sync.config.EndpointSettings`: its
``httpx.Auth`` (none, static bearer, OAuth2 client secret, SMART Backend Services with the private
key read from ``key_file``), its send mode and transaction cap, and a transport that counts the
requests made and spaces them to the endpoint's ``rate_limit`` (requests per second). A key file
that cannot be read, or whose algorithm is not the configured ``alg``, is a ConfigError naming
the setting, never the key.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import httpx

from cm_fhir.errors import ConfigError
from cm_fhir.fhir_client import (
    BearerAuth,
    CircuitBreaker,
    ClientSecretAuth,
    FhirClient,
    RetryPolicy,
    SmartBackendAuth,
)
from cm_fhir.fhir_client.keys import algorithm_of, load_private_key
from cm_fhir.sync.config import EhrSettings, EndpointSettings

__all__ = ["CountingTransport", "RequestCount", "make_auth", "open_client"]


@dataclass(slots=True)
class RequestCount:
    """HTTP requests made to one endpoint by this process."""

    requests: int = 0


class CountingTransport(httpx.AsyncBaseTransport):
    """Counts requests and keeps them at most ``rate`` per second (0: no limit)."""

    def __init__(
        self, inner: httpx.AsyncBaseTransport, count: RequestCount, rate: float = 0.0
    ) -> None:
        self._inner = inner
        self._count = count
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._next = 0.0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._interval:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self._interval
            if start > now:
                await asyncio.sleep(start - now)
        self._count.requests += 1
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def make_auth(endpoint: EndpointSettings) -> httpx.Auth | None:
    """The endpoint's ``httpx.Auth`` (None without auth)."""
    auth = endpoint.auth
    where = f"ehr endpoint {endpoint.name}: auth"
    scopes = " ".join(auth.scopes)
    if auth.kind == "none":
        return None
    if auth.kind == "bearer":
        assert auth.token is not None
        return BearerAuth(auth.token.get_secret_value())
    if auth.kind == "client-secret":
        assert auth.client_id is not None
        assert auth.client_secret is not None
        return ClientSecretAuth(
            endpoint.base_url,
            auth.client_id,
            auth.client_secret.get_secret_value(),
            scopes=scopes,
            token_url=auth.token_url,
        )
    assert auth.client_id is not None
    assert auth.key_file is not None
    try:
        key = load_private_key(auth.key_file.read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"{where}.key_file: cannot read a PEM private key from it") from exc
    if auth.alg is not None and algorithm_of(key) != auth.alg:
        raise ConfigError(f"{where}.alg is {auth.alg} but key_file holds a {algorithm_of(key)} key")
    return SmartBackendAuth(
        endpoint.base_url,
        auth.client_id,
        key,
        scopes=scopes,
        kid=auth.kid,
        token_url=auth.token_url,
    )


def open_client(
    endpoint: EndpointSettings,
    count: RequestCount,
    config: EhrSettings,
    *,
    retry: RetryPolicy | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> FhirClient:
    """A client for ``endpoint`` whose requests are counted in ``count``."""
    inner = transport or httpx.AsyncHTTPTransport()
    return FhirClient(
        endpoint.base_url,
        auth=make_auth(endpoint),
        retry=retry or RetryPolicy(attempt_timeout=endpoint.timeout),
        breaker=CircuitBreaker(
            endpoint.name,
            failure_threshold=config.breaker_failures,
            cool_down=config.breaker_cool_down,
        ),
        timeout=endpoint.timeout,
        transport=CountingTransport(inner, count, endpoint.rate_limit),
        mode=endpoint.mode,
        max_transaction_entries=endpoint.max_transaction_entries,
    )
