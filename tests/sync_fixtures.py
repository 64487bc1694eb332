"""Helpers for the outbox delivery tests: feed ADT, run the worker and the sync role, read the
FHIR server back. Does I/O (database, HTTP to the test FHIR server).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import httpx
import orjson
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from cm_fhir.fhir_client import RetryPolicy
from cm_fhir.store.case_tables import outbox
from cm_fhir.sync.config import EhrSettings, EndpointSettings
from cm_fhir.sync.runner import SyncWorker

Json = dict[str, Any]

#: Fast back-off for tests: the server's faults clear in seconds, not minutes.
FAST = EhrSettings(
    retry_base=0.05,
    retry_max=0.5,
    poll_interval=0.05,
    lease_seconds=30,
    breaker_cool_down=0.3,
)
FAST_RETRY = RetryPolicy(
    max_attempts=3, attempt_timeout=10, total_budget=10, initial_backoff=0.01, max_backoff=0.2
)


class Observed(httpx.AsyncBaseTransport):
    """The real transport, recording each transaction POST: (its status, its entries)."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.transactions: list[tuple[int, list[Json]]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.method == "POST" and request.url.path.endswith("/fhir"):
            body = orjson.loads(request.content)
            self.transactions.append((response.status_code, body.get("entry") or []))
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()

    def refused(self) -> int:
        return sum(1 for status, _ in self.transactions if status == 400)


def endpoint(base_url: str, **options: Any) -> EndpointSettings:
    return EndpointSettings(name=options.pop("name", "default"), base_url=base_url, **options)


def sync_worker(
    engine: AsyncEngine, base_url: str, config: EhrSettings = FAST, **options: Any
) -> SyncWorker:
    return SyncWorker(engine, [endpoint(base_url, **options)], config, retry=FAST_RETRY)


async def outbox_states(engine: AsyncEngine) -> dict[str, int]:
    query = select(outbox.c.state, func.count()).group_by(outbox.c.state)
    async with engine.connect() as connection:
        return {str(s): int(n) for s, n in (await connection.execute(query)).all()}


async def expected_identifiers(engine: AsyncEngine) -> set[str]:
    """``Type|system|value`` of every resource in each case's newest Bundle."""
    newest = select(func.max(outbox.c.id)).group_by(outbox.c.case_id, outbox.c.endpoint)
    query = select(outbox.c.identifiers).where(outbox.c.id.in_(newest))
    async with engine.connect() as connection:
        found = (await connection.execute(query)).scalars().all()
    return {i for text in found for i in orjson.loads(text)}


def search_url(base_url: str, identifier: str) -> str:
    rtype, system, value = identifier.split("|", 2)
    return f"{base_url}/{rtype}?identifier={quote(system, safe=':/')}|{quote(value, safe='')}"


async def on_server(base_url: str, identifiers: Sequence[str]) -> dict[str, list[Json]]:
    """The server's resources for each ``Type|system|value``."""
    out: dict[str, list[Json]] = {}
    async with httpx.AsyncClient(timeout=30) as client:
        for identifier in identifiers:
            response = await client.get(search_url(base_url, identifier))
            response.raise_for_status()
            out[identifier] = [e["resource"] for e in response.json().get("entry") or []]
    return out
