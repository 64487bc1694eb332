"""The async FHIR R4 client: one endpoint, its auth, its retry policy and its circuit breaker.

Every request goes through :meth:`FhirClient.request`: the breaker admits it, httpx sends it within
the attempt's time cap, :func:`~cm_fhir.fhir_client.status.raise_for_response` maps the answer,
and :class:`~cm_fhir.fhir_client.retry.RetryPolicy` repeats it when it is safe and worth it.
:meth:`FhirClient.write_bundle` sends one of our transaction Bundles the way the server can take
it (:mod:`cm_fhir.fhir_client.bundles`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Any, Literal

import httpx

from cm_fhir.errors import RemoteFhirError, RemoteInvalid, RemoteUnavailable
from cm_fhir.fhir.bundle import dumps
from cm_fhir.fhir_client.breaker import CircuitBreaker
from cm_fhir.fhir_client.bundles import BundleWriter
from cm_fhir.fhir_client.capabilities import ServerCapabilities, parse_capability_statement
from cm_fhir.fhir_client.responses import EntryResult, FhirResponse, json_body
from cm_fhir.fhir_client.retry import RetryPolicy, is_idempotent
from cm_fhir.fhir_client.status import error_for_transport, raise_for_response

__all__ = ["FhirClient", "WriteMode"]

Json = dict[str, Any]
WriteMode = Literal["auto", "transaction", "batch", "individual"]
FHIR_JSON = "application/fhir+json"


def _etag(if_match: str) -> str:
    """``3`` or ``W/"3"`` -> ``W/"3"``."""
    return if_match if if_match.startswith(("W/", '"')) else f'W/"{if_match}"'


def _json(response: httpx.Response, what: str) -> Json:
    """The response's JSON object; RemoteInvalid when it is not one."""
    body = json_body(response)
    if body is None:
        raise RemoteInvalid(response.status_code, f"{what}: the answer is not a JSON object")
    return body


class FhirClient:
    """An async client for one FHIR R4 endpoint. Use it as ``async with FhirClient(url) as c``."""

    def __init__(
        self,
        base_url: str,
        *,
        auth: httpx.Auth | None = None,
        retry: RetryPolicy | None = None,
        breaker: CircuitBreaker | None = None,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        mode: WriteMode = "auto",
        max_transaction_entries: int | None = None,
    ) -> None:
        if max_transaction_entries is not None and max_transaction_entries < 1:
            raise ValueError("max_transaction_entries must be at least 1")
        self.base_url = base_url.rstrip("/")
        self.retry = retry or RetryPolicy(attempt_timeout=timeout)
        self.breaker = breaker or CircuitBreaker(self.base_url)
        self.mode: WriteMode = mode
        self.max_transaction_entries = max_transaction_entries
        self._http = httpx.AsyncClient(
            auth=auth,
            transport=transport,
            timeout=timeout,
            headers={"Accept": FHIR_JSON},
            follow_redirects=False,
        )
        self._capabilities: ServerCapabilities | None = None
        self._capabilities_lock = asyncio.Lock()
        self._writer = BundleWriter(self)

    async def __aenter__(self) -> FhirClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- the one way a request goes out -----------------------------------------------------

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}" if path else self.base_url

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Json | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        url: str | None = None,
    ) -> httpx.Response:
        """Send one request to ``path`` (relative to the base; ``url`` overrides it) through the
        breaker, the time cap, the status table and the retry policy; the successful response."""
        target = url or self.url(path)
        sent_headers = dict(headers or {})
        content = None
        if body is not None:
            sent_headers["Content-Type"] = FHIR_JSON
            content = dumps(body)
        idempotent = is_idempotent(method, path, sent_headers, body)

        async def attempt(timeout: float) -> httpx.Response:
            self.breaker.before_call()
            try:
                async with asyncio.timeout(timeout):
                    response = await self._http.request(
                        method, target, content=content, headers=sent_headers, params=params
                    )
                raise_for_response(response)
            except (httpx.TransportError, TimeoutError) as exc:
                self.breaker.record_failure()
                raise error_for_transport(exc, method=method, url=target) from exc
            except RemoteUnavailable:
                self.breaker.record_failure()
                raise
            except RemoteFhirError:
                self.breaker.record_success()
                raise
            except httpx.HTTPError as exc:
                self.breaker.release()
                raise RemoteFhirError(None, f"{method}: {type(exc).__name__}") from exc
            except BaseException:
                self.breaker.release()
                raise
            self.breaker.record_success()
            return response

        return await self.retry.run(attempt, idempotent=idempotent)

    # -- capabilities -----------------------------------------------------------------------

    async def capabilities(self) -> ServerCapabilities:
        """The server's capabilities, read from ``/metadata`` once and then cached."""
        async with self._capabilities_lock:
            if self._capabilities is None:
                response = await self.request("GET", "metadata")
                try:
                    self._capabilities = parse_capability_statement(
                        _json(response, "GET metadata"),
                        max_transaction_entries=self.max_transaction_entries,
                    )
                except ValueError as exc:
                    raise RemoteInvalid(
                        response.status_code, "GET metadata: not a CapabilityStatement"
                    ) from exc
            return self._capabilities

    def learn_transaction_cap(self, max_entries: int) -> None:
        """Remember a smaller transaction size after the server refused a bigger one."""
        current = self.max_transaction_entries
        if current is None or max_entries < current:
            self.max_transaction_entries = max_entries
            if self._capabilities is not None:
                self._capabilities = self._capabilities.with_cap(max_entries)

    # -- the REST interactions --------------------------------------------------------------

    async def read(self, resource_type: str, id: str) -> FhirResponse:
        return FhirResponse.of(await self.request("GET", f"{resource_type}/{id}"))

    async def vread(self, resource_type: str, id: str, version_id: str) -> FhirResponse:
        path = f"{resource_type}/{id}/_history/{version_id}"
        return FhirResponse.of(await self.request("GET", path))

    async def search(self, resource_type: str, params: Mapping[str, str]) -> AsyncIterator[Json]:
        """The matching resources across every page (``Bundle.link`` ``next``)."""
        response = await self.request("GET", resource_type, params=params)
        visited: set[str] = set()
        while True:
            bundle = _json(response, f"GET {resource_type}")
            for entry in bundle.get("entry") or []:
                mode = (entry.get("search") or {}).get("mode", "match")
                if mode == "match" and isinstance(entry.get("resource"), dict):
                    yield entry["resource"]
            following = next(
                (
                    str(link.get("url"))
                    for link in bundle.get("link") or []
                    if link.get("relation") == "next" and link.get("url")
                ),
                None,
            )
            if following is None:
                return
            if not self._same_origin(following):
                raise RemoteInvalid(None, f"GET {resource_type}: next page on another origin")
            if following in visited:
                raise RemoteInvalid(None, f"GET {resource_type}: the pages loop")
            visited.add(following)
            response = await self.request("GET", resource_type, url=following)

    def _same_origin(self, url: str) -> bool:
        base, other = httpx.URL(self.base_url), httpx.URL(url)
        return (base.scheme, base.host, base.port) == (other.scheme, other.host, other.port)

    async def create(self, resource: Json, *, if_none_exist: str | None = None) -> FhirResponse:
        """POST a resource; with ``if_none_exist`` (``identifier=sys|val``) a conditional create."""
        headers = {"If-None-Exist": if_none_exist} if if_none_exist else None
        path = str(resource["resourceType"])
        return FhirResponse.of(await self.request("POST", path, body=resource, headers=headers))

    async def update(self, resource: Json, *, if_match: str | None = None) -> FhirResponse:
        """PUT ``Type/id``; with ``if_match`` (a version id or an ETag) RemotePreconditionFailed
        when the server holds another version."""
        path = f"{resource['resourceType']}/{resource['id']}"
        headers = {"If-Match": _etag(if_match)} if if_match else None
        return FhirResponse.of(await self.request("PUT", path, body=resource, headers=headers))

    async def conditional_update(
        self, resource_type: str, criteria: str, resource: Json
    ) -> FhirResponse:
        """PUT ``Type?criteria``: create when nothing matches, update the one match."""
        path = f"{resource_type}?{criteria}"
        return FhirResponse.of(await self.request("PUT", path, body=resource))

    async def delete(self, resource_type: str, id: str) -> FhirResponse:
        return FhirResponse.of(await self.request("DELETE", f"{resource_type}/{id}"))

    async def transaction(self, bundle: Json) -> Json:
        """POST a transaction Bundle; the transaction-response Bundle."""
        return await self._post_bundle(bundle, "transaction")

    async def batch(self, bundle: Json) -> Json:
        """POST a batch Bundle; the batch-response Bundle (entries fail one by one)."""
        return await self._post_bundle(bundle, "batch")

    async def _post_bundle(self, bundle: Json, kind: str) -> Json:
        if bundle.get("resourceType") != "Bundle" or bundle.get("type") != kind:
            raise ValueError(f"not a {kind} Bundle")
        answer = _json(await self.request("POST", "", body=bundle), f"POST {kind}")
        if answer.get("resourceType") != "Bundle":
            raise RemoteInvalid(None, f"POST {kind}: the answer is not a Bundle")
        return answer

    async def write_bundle(self, bundle: Json, *, split: bool = True) -> list[EntryResult]:
        """Write one of our transaction Bundles the way this server supports (see
        :mod:`cm_fhir.fhir_client.bundles`); one result per entry of ``bundle``, in its order.
        Without ``split``, a transaction is sent whole and a size refusal raised
        (RemoteTooCostly) for the caller to regroup."""
        return await self._writer.write(bundle, split=split)
