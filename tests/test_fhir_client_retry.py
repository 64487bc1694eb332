"""Retries: only safe requests, only retryable errors; Retry-After, RateLimit, caps (respx)."""

from __future__ import annotations

import asyncio
import email.utils
import time

import httpx
import pytest
import respx

from cm_fhir.errors import (
    RemoteInvalid,
    RemoteRateLimited,
    RemoteUnavailable,
)
from cm_fhir.fhir.bundle import WriteMode, transaction_bundle
from cm_fhir.fhir_client import FhirClient, RetryPolicy
from cm_fhir.fhir_client.retry import is_idempotent

BASE = "http://ehr.test/fhir"
TASK = {"resourceType": "Task", "id": "t1", "status": "requested", "intent": "order"}


class Sleeps:
    """Records the waits instead of sleeping them."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def policy(sleeps: Sleeps, **options: float) -> RetryPolicy:
    return RetryPolicy(sleep=sleeps, **options)  # type: ignore[arg-type]


def failing(*statuses: int, headers: dict[str, str] | None = None) -> list[httpx.Response]:
    return [httpx.Response(s, headers=headers) for s in statuses]


@respx.mock
async def test_503s_then_success_with_growing_jittered_backoff() -> None:
    sleeps = Sleeps()
    route = respx.get(f"{BASE}/Task/t1").mock(
        side_effect=[*failing(503, 503, 503), httpx.Response(200, json=TASK)]
    )
    async with FhirClient(BASE, retry=policy(sleeps, initial_backoff=1, max_backoff=100)) as c:
        response = await c.read("Task", "t1")
    assert response.resource == TASK
    assert route.call_count == 4
    assert len(sleeps.waits) == 3
    # full jitter: each wait is within [0, initial * 2^n]
    for n, wait in enumerate(sleeps.waits):
        assert 0 <= wait <= 2 ** (n + 1)


@respx.mock
async def test_retry_after_seconds_is_honoured_exactly() -> None:
    sleeps = Sleeps()
    route = respx.get(f"{BASE}/Task/t1").mock(
        side_effect=[*failing(429, headers={"Retry-After": "3"}), httpx.Response(200, json=TASK)]
    )
    async with FhirClient(BASE, retry=policy(sleeps)) as client:
        await client.read("Task", "t1")
    assert route.call_count == 2
    assert sleeps.waits == [3.0]


@respx.mock
async def test_retry_after_http_date_and_ratelimit_reset() -> None:
    sleeps = Sleeps()
    date = email.utils.formatdate(time.time() + 20, usegmt=True)
    route = respx.get(f"{BASE}/Task/t1").mock(
        side_effect=[
            *failing(503, headers={"Retry-After": date}),
            *failing(429, headers={"RateLimit": "limit=5, remaining=0, reset=4"}),
            httpx.Response(200, json=TASK),
        ]
    )
    async with FhirClient(BASE, retry=policy(sleeps)) as client:
        await client.read("Task", "t1")
    assert route.call_count == 3
    assert sleeps.waits[0] == pytest.approx(20, abs=1.5)
    assert sleeps.waits[1] == 4.0


@respx.mock
async def test_a_wait_beyond_the_budget_gives_up_at_once() -> None:
    sleeps = Sleeps()
    route = respx.get(f"{BASE}/Task/t1").mock(
        side_effect=failing(429, headers={"Retry-After": "120"})
    )
    async with FhirClient(BASE, retry=policy(sleeps, total_budget=60)) as client:
        with pytest.raises(RemoteRateLimited) as caught:
            await client.read("Task", "t1")
    assert caught.value.retry_after == 120.0
    assert route.call_count == 1
    assert sleeps.waits == []


@respx.mock
async def test_attempts_are_capped_and_the_last_error_is_raised() -> None:
    sleeps = Sleeps()
    route = respx.get(f"{BASE}/Task/t1").mock(return_value=httpx.Response(502))
    async with FhirClient(BASE, retry=policy(sleeps, max_attempts=4)) as client:
        with pytest.raises(RemoteUnavailable) as caught:
            await client.read("Task", "t1")
    assert caught.value.status == 502
    assert route.call_count == 4


@respx.mock
async def test_the_budget_is_measured_in_real_time() -> None:
    """Attempts that each take time use the budget up: no attempt starts after it."""

    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.3)
        return httpx.Response(503)

    route = respx.get(f"{BASE}/Task/t1").mock(side_effect=slow)
    retry = RetryPolicy(max_attempts=50, total_budget=1.0, initial_backoff=0.01, max_backoff=0.01)
    started = time.monotonic()
    async with FhirClient(BASE, retry=retry) as client:
        with pytest.raises(RemoteUnavailable):
            await client.read("Task", "t1")
    assert time.monotonic() - started < 2.0
    assert 2 <= route.call_count <= 4


@respx.mock
async def test_each_attempt_is_capped() -> None:
    calls = 0

    async def first_hangs(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(30)
        return httpx.Response(200, json=TASK)

    respx.get(f"{BASE}/Task/t1").mock(side_effect=first_hangs)
    retry = RetryPolicy(attempt_timeout=0.2, initial_backoff=0.01)
    started = time.monotonic()
    async with FhirClient(BASE, retry=retry) as client:
        response = await client.read("Task", "t1")
    assert response.status == 200
    assert calls == 2
    assert time.monotonic() - started < 5


@respx.mock
async def test_plain_post_create_is_not_retried() -> None:
    sleeps = Sleeps()
    route = respx.post(f"{BASE}/Task").mock(return_value=httpx.Response(503))
    async with FhirClient(BASE, retry=policy(sleeps)) as client:
        with pytest.raises(RemoteUnavailable):
            await client.create({"resourceType": "Task"})
    assert route.call_count == 1


@respx.mock
async def test_a_dropped_connection_on_a_plain_post_is_not_retried() -> None:
    route = respx.post(f"{BASE}/Task").mock(side_effect=httpx.RemoteProtocolError("dropped"))
    async with FhirClient(BASE, retry=policy(Sleeps())) as client:
        with pytest.raises(RemoteUnavailable):
            await client.create({"resourceType": "Task"})
    assert route.call_count == 1


@respx.mock
async def test_conditional_create_is_retried() -> None:
    route = respx.post(f"{BASE}/Task").mock(
        side_effect=[httpx.Response(503), httpx.Response(201, json=TASK)]
    )
    async with FhirClient(BASE, retry=policy(Sleeps())) as client:
        response = await client.create({"resourceType": "Task"}, if_none_exist="identifier=a|b")
    assert response.status == 201
    assert route.call_count == 2
    assert route.calls[0].request.headers["If-None-Exist"] == "identifier=a|b"


@respx.mock
async def test_4xx_is_not_retried() -> None:
    route = respx.put(f"{BASE}/Task/t1").mock(return_value=httpx.Response(422))
    async with FhirClient(BASE, retry=policy(Sleeps())) as client:
        with pytest.raises(RemoteInvalid):
            await client.update(TASK)
    assert route.call_count == 1


def _resources() -> list[dict[str, object]]:
    ident = [{"system": "urn:t", "value": "1"}]
    return [{"resourceType": "Task", "id": "t1", "identifier": ident}]


@pytest.mark.parametrize("mode", [WriteMode.CONDITIONAL_UPDATE, WriteMode.CONDITIONAL_CREATE])
@respx.mock
async def test_conditional_transactions_are_retried(mode: WriteMode) -> None:
    answer = {"resourceType": "Bundle", "type": "transaction-response", "entry": []}
    route = respx.post(BASE).mock(
        side_effect=[httpx.Response(503), httpx.Response(200, json=answer)]
    )
    async with FhirClient(BASE, retry=policy(Sleeps())) as client:
        await client.transaction(transaction_bundle(_resources(), mode))
    assert route.call_count == 2


@respx.mock
async def test_a_transaction_with_a_plain_post_is_not_retried() -> None:
    bundle = transaction_bundle(_resources())
    bundle["entry"][0]["request"] = {"method": "POST", "url": "Task"}
    route = respx.post(BASE).mock(return_value=httpx.Response(503))
    async with FhirClient(BASE, retry=policy(Sleeps())) as client:
        with pytest.raises(RemoteUnavailable):
            await client.transaction(bundle)
    assert route.call_count == 1


def test_idempotence_rules() -> None:
    assert is_idempotent("GET", "Task", {})
    assert is_idempotent("PUT", "Task?identifier=a|b", {})
    assert is_idempotent("DELETE", "Task/1", {})
    assert is_idempotent("POST", "Task/_search", {})
    assert is_idempotent("POST", "Task", {"If-None-Exist": "identifier=a|b"})
    assert not is_idempotent("POST", "Task", {})
    assert not is_idempotent("PATCH", "Task/1", {})
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [{"request": {"method": "PUT"}}]}
    assert is_idempotent("POST", "", {}, batch)
    batch["entry"].append({"request": {"method": "POST", "url": "Task"}})
    assert not is_idempotent("POST", "", {}, batch)
