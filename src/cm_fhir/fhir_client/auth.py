"""Auth for FHIR endpoints as ``httpx.Auth`` classes: static bearer, OAuth 2.0 client credentials
with a client secret, and (in :mod:`cm_fhir.fhir_client.smart`) SMART Backend Services.

The token flows are httpx auth flows: the token request (and the discovery of the token endpoint
from ``<base>/.well-known/smart-configuration``) is yielded to the client that sends the FHIR
request, so it goes through the same transport, time cap and retries. The token is cached until
``refresh_margin`` seconds before it expires; a 401 on a FHIR request fetches a new token once and
sends the request again once. No endpoint configured: ``auth=None``.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
from collections.abc import AsyncGenerator, Callable, Generator
from typing import Any
from urllib.parse import quote

import httpx

from cm_fhir.errors import RemoteAuthError, RemoteFhirError, RemoteUnavailable
from cm_fhir.fhir_client.responses import json_body
from cm_fhir.fhir_client.status import error_for

__all__ = ["BearerAuth", "ClientSecretAuth", "TokenAuth"]

Json = dict[str, Any]
_OAUTH_CODE = re.compile(r"[a-z_]{1,40}")


class BearerAuth(httpx.Auth):
    """A static bearer token."""

    def __init__(self, token: str) -> None:
        self._header = f"Bearer {token}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header
        yield request


def _oauth_error(response: httpx.Response, what: str) -> RemoteFhirError:
    """A refused token or discovery request: 4xx are our credentials' fault (RemoteAuthError,
    naming the OAuth ``error`` code), 429/5xx may pass (mapped by the status table)."""
    status = response.status_code
    if status == 429 or status >= 500:
        return error_for(
            status, None, method="POST", url=str(response.request.url), headers=response.headers
        )
    error = (json_body(response) or {}).get("error")
    # an RFC 6749 error code (invalid_client, ...); anything else the server wrote is not repeated
    code = f" ({error})" if isinstance(error, str) and _OAUTH_CODE.fullmatch(error) else ""
    return RemoteAuthError(status, f"{what} refused{code}")


def _json_object(response: httpx.Response, what: str) -> Json:
    body = json_body(response)
    if body is None:
        raise RemoteAuthError(response.status_code, f"{what}: the answer is not a JSON object")
    return body


class TokenAuth(httpx.Auth):
    """OAuth 2.0 ``client_credentials``: the token endpoint is given or discovered; subclasses say
    how the client authenticates (:meth:`_client_authentication`)."""

    def __init__(
        self,
        fhir_base_url: str,
        *,
        scopes: str,
        token_url: str | None = None,
        refresh_margin: float = 30.0,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.fhir_base_url = fhir_base_url.rstrip("/")
        self.scopes = scopes
        self.token_url = token_url
        self.refresh_margin = refresh_margin
        self._timeout = timeout
        self._transport = transport
        self._clock = clock
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()
        #: Token requests answered so far (for metrics and tests).
        self.tokens_fetched = 0

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        raise RuntimeError(f"{type(self).__name__} works with httpx.AsyncClient only")

    def _client_authentication(self, token_url: str) -> tuple[dict[str, str], dict[str, str]]:
        """Extra form fields and headers that authenticate the client to ``token_url``."""
        raise NotImplementedError

    def _fresh(self) -> bool:
        return self._token is not None and self._clock() < self._expires_at - self.refresh_margin

    async def _discover(self, http: httpx.AsyncClient) -> str:
        url = f"{self.fhir_base_url}/.well-known/smart-configuration"
        response = await http.get(url, headers={"Accept": "application/json"})
        if response.status_code >= 400:
            raise _oauth_error(response, "SMART discovery")
        endpoint = _json_object(response, "SMART discovery").get("token_endpoint")
        if not isinstance(endpoint, str) or not endpoint.startswith(("https://", "http://")):
            raise RemoteAuthError(response.status_code, "SMART discovery: no token_endpoint")
        if self.fhir_base_url.startswith("https://") and not endpoint.startswith("https://"):
            # credentials never leave over plain HTTP for an HTTPS endpoint
            raise RemoteAuthError(response.status_code, "SMART discovery: token_endpoint not https")
        return endpoint

    async def _fetch(self) -> str:
        async with httpx.AsyncClient(transport=self._transport, timeout=self._timeout) as http:
            try:
                if self.token_url is None:
                    self.token_url = await self._discover(http)
                fields, headers = self._client_authentication(self.token_url)
                form = {"grant_type": "client_credentials", "scope": self.scopes, **fields}
                response = await http.post(
                    self.token_url, data=form, headers={"Accept": "application/json", **headers}
                )
            except httpx.TransportError as exc:
                failed = f"token request failed: {type(exc).__name__}"
                raise RemoteUnavailable(None, failed) from exc
        if response.status_code >= 400:
            raise _oauth_error(response, "token request")
        self.tokens_fetched += 1
        body = _json_object(response, "token request")
        token, lifetime = body.get("access_token"), body.get("expires_in")
        if not isinstance(token, str) or not token:
            raise RemoteAuthError(response.status_code, "token request: no access_token")
        if str(body.get("token_type", "bearer")).lower() != "bearer":
            raise RemoteAuthError(response.status_code, "token request: not a bearer token")
        seconds = float(lifetime) if isinstance(lifetime, int | float) and lifetime > 0 else 300.0
        self._token = token
        self._expires_at = self._clock() + seconds
        return token

    async def token(self, *, stale: str | None = None) -> str:
        """A cached token that is not about to expire (and is not ``stale``), else a new one."""
        async with self._lock:
            if self._token is not None and self._fresh() and self._token != stale:
                return self._token
            return await self._fetch()

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        token = await self.token()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            # Revoked or expired early: one new token, one more try; a second 401 stands.
            request.headers["Authorization"] = f"Bearer {await self.token(stale=token)}"
            yield request


class ClientSecretAuth(TokenAuth):
    """``client_credentials`` with a client secret sent as HTTP Basic (``client_secret_basic``)."""

    def __init__(self, fhir_base_url: str, client_id: str, client_secret: str, **options: Any):
        super().__init__(fhir_base_url, **options)
        self.client_id = client_id
        pair = f"{quote(client_id, safe='')}:{quote(client_secret, safe='')}"
        self._basic = "Basic " + base64.b64encode(pair.encode()).decode("ascii")

    def _client_authentication(self, token_url: str) -> tuple[dict[str, str], dict[str, str]]:
        return {}, {"Authorization": self._basic}
