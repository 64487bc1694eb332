"""The circuit breaker: closed -> open -> half-open (one probe) -> closed or open again."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import respx

from cm_fhir.errors import CircuitOpen, RemoteInvalid, RemoteUnavailable
from cm_fhir.fhir_client import CircuitBreaker, FhirClient, RetryPolicy

BASE = "http://ehr.test/fhir"
ONCE = RetryPolicy(max_attempts=1)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_transitions() -> None:
    clock = Clock()
    breaker = CircuitBreaker("ehr", failure_threshold=3, cool_down=10, clock=clock)
    for _ in range(2):
        breaker.before_call()
        breaker.record_failure()
    assert breaker.state == "closed"
    breaker.before_call()
    breaker.record_success()  # a success resets the count
    for _ in range(3):
        breaker.before_call()
        breaker.record_failure()
    assert breaker.state == "open"
    with pytest.raises(CircuitOpen) as caught:
        breaker.before_call()
    assert caught.value.retry_after == pytest.approx(10)
    assert caught.value.retryable  # the caller may try again later, not now
    clock.now += 9.5
    assert breaker.state == "open"
    clock.now += 0.5
    assert breaker.state == "half-open"
    breaker.before_call()  # the one probe
    with pytest.raises(CircuitOpen):
        breaker.before_call()  # no second call while the probe runs
    breaker.record_failure()
    assert breaker.state == "open"  # the probe failed: another cool-down
    clock.now += 10
    breaker.before_call()
    breaker.record_success()
    snapshot = breaker.snapshot()
    assert (snapshot.state, snapshot.consecutive_failures, snapshot.opened_count) == (
        "closed",
        0,
        2,
    )


def test_a_cancelled_probe_lets_another_through() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, cool_down=1, clock=clock)
    breaker.before_call()
    breaker.record_failure()
    clock.now += 1
    breaker.before_call()
    breaker.release()
    breaker.before_call()
    assert breaker.state == "half-open"


@respx.mock
async def test_the_client_stops_calling_an_endpoint_that_keeps_failing() -> None:
    clock = Clock()
    breaker = CircuitBreaker(BASE, failure_threshold=2, cool_down=30, clock=clock)
    route = respx.get(f"{BASE}/Task/t1").mock(return_value=httpx.Response(503))
    async with FhirClient(BASE, retry=ONCE, breaker=breaker) as client:
        for _ in range(2):
            with pytest.raises(RemoteUnavailable):
                await client.read("Task", "t1")
        with pytest.raises(CircuitOpen):
            await client.read("Task", "t1")
        assert route.call_count == 2  # the third call never left
        assert client.breaker.snapshot().state == "open"
        clock.now += 30
        route.mock(return_value=httpx.Response(200, json={"resourceType": "Task"}))
        await client.read("Task", "t1")
        assert client.breaker.state == "closed"


@respx.mock
async def test_retries_stop_when_the_circuit_opens() -> None:
    breaker = CircuitBreaker(BASE, failure_threshold=3, cool_down=60)
    route = respx.get(f"{BASE}/Task/t1").mock(return_value=httpx.Response(500))
    retry = RetryPolicy(max_attempts=10, initial_backoff=0.001, max_backoff=0.001)
    async with FhirClient(BASE, retry=retry, breaker=breaker) as client:
        with pytest.raises(CircuitOpen):
            await client.read("Task", "t1")
    assert route.call_count == 3


@respx.mock
async def test_answers_of_a_live_server_do_not_open_it() -> None:
    breaker = CircuitBreaker(BASE, failure_threshold=2)
    respx.put(f"{BASE}/Task/t1").mock(return_value=httpx.Response(400))
    respx.get(f"{BASE}/Task/t1").mock(return_value=httpx.Response(429))
    async with FhirClient(BASE, retry=ONCE, breaker=breaker) as client:
        for _ in range(3):
            with pytest.raises(RemoteInvalid):
                await client.update({"resourceType": "Task", "id": "t1"})
            with pytest.raises(Exception, match="429"):
                await client.read("Task", "t1")
    assert breaker.state == "closed"


@respx.mock
async def test_timeouts_and_connection_errors_count() -> None:
    breaker = CircuitBreaker(BASE, failure_threshold=2)
    respx.get(f"{BASE}/Task/t1").mock(
        side_effect=[httpx.ReadTimeout("slow"), httpx.ConnectError("refused")]
    )
    async with FhirClient(BASE, retry=ONCE, breaker=breaker) as client:
        for _ in range(2):
            with pytest.raises(RemoteUnavailable):
                await client.read("Task", "t1")
    assert breaker.state == "open"


@respx.mock
async def test_attempts_over_their_time_cap_count_as_failures() -> None:
    started: list[httpx.Request] = []

    async def hang(request: httpx.Request) -> httpx.Response:
        started.append(request)
        await asyncio.sleep(30)
        return httpx.Response(200)

    breaker = CircuitBreaker(BASE, failure_threshold=2)
    respx.get(f"{BASE}/Task/t1").mock(side_effect=hang)
    retry = RetryPolicy(max_attempts=1, attempt_timeout=0.1)
    async with FhirClient(BASE, retry=retry, breaker=breaker) as client:
        for _ in range(2):
            with pytest.raises(RemoteUnavailable, match="timed out"):
                await client.read("Task", "t1")
        with pytest.raises(CircuitOpen):
            await client.read("Task", "t1")
    assert len(started) == 2  # the third never left
