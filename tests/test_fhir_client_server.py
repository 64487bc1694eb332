"""The FHIR client against the real test FHIR server: adaptation to what the server supports,
and the fault mode (503s, 429 with Retry-After, slow answers, dropped connections).

Every test writes fresh cases (example documents with a new id) and checks what the server holds
afterwards: each resource exactly once, found by its business identifier, and every reference
pointing at a stored resource.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from cm_fhir.domain import Case
from cm_fhir.errors import (
    CircuitOpen,
    RemotePreconditionFailed,
    RemoteUnavailable,
)
from cm_fhir.fhir import WriteMode, map_case
from cm_fhir.fhir.bundle import bundle_resources, identifier_query
from cm_fhir.fhir.split import split_transaction
from cm_fhir.fhir_client import CircuitBreaker, FhirClient, RetryPolicy, update_owned
from fhir_server_fixture import TRANSACTION_CAP, FhirFaults

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
Json = dict[str, Any]
FAST = RetryPolicy(max_attempts=6, initial_backoff=0.01, max_backoff=0.05, attempt_timeout=10)


def fresh_bundle(name: str = "stroke-inpatient-rehab", mode: WriteMode = WriteMode.UPDATE) -> Json:
    """A fresh case's transaction Bundle. PUT by id by default: the server takes a transaction
    of those whole; conditional writes are capped at 8 entries per transaction (Medplum's rule)."""
    doc = json.loads((EXAMPLES / f"{name}.json").read_text(encoding="utf-8"))
    doc["id"] = f"{doc['id'][:40]}-{uuid.uuid4().hex[:8]}"
    return map_case(Case.model_validate(doc), mode=mode, validate=False)


async def assert_landed(client: FhirClient, bundle: Json) -> None:
    """Each resource of ``bundle`` is stored exactly once and its references resolve."""
    for resource in bundle_resources(bundle):
        rtype = resource["resourceType"]
        found = [r async for r in client.search(rtype, {"identifier": _ident(resource)})]
        assert len(found) == 1, f"{rtype} stored {len(found)} times"
        for ref in _references(found[0]):
            if "/" in ref and not ref.startswith(("urn:", "http", "#")) and "?" not in ref:
                kind, rid = ref.split("/", 1)
                assert (await client.read(kind, rid)).status == 200, ref


def _ident(resource: Json) -> str:
    first = resource["identifier"][0]
    return f"{first['system']}|{first['value']}"


def _references(value: Any) -> list[str]:
    out: list[str] = []
    if isinstance(value, dict):
        if isinstance(value.get("reference"), str):
            out.append(value["reference"])
        for item in value.values():
            out += _references(item)
    elif isinstance(value, list):
        for item in value:
            out += _references(item)
    return out


# -- adaptation -------------------------------------------------------------------------------


async def test_one_transaction_when_the_server_takes_it(faulty_fhir_server: FhirFaults) -> None:
    bundle = fresh_bundle()
    async with FhirClient(faulty_fhir_server.base_url, retry=FAST) as client:
        results = await client.write_bundle(bundle)
        again = await client.write_bundle(bundle)  # a resend writes nothing new
        await assert_landed(client, bundle)
    assert [r.full_url for r in results] == [e["fullUrl"] for e in bundle["entry"]]
    assert all(r.ok and r.location for r in results)
    assert [r.location for r in again] == [r.location for r in results]
    counts = faulty_fhir_server.requests()
    assert counts["by_request"]["POST transaction"] == 2
    assert counts["by_request"]["GET metadata"] == 1  # read once, then cached


async def test_a_configured_cap_splits_before_sending(capped_fhir_server: str) -> None:
    bundle = fresh_bundle(mode=WriteMode.CONDITIONAL_UPDATE)
    assert len(bundle["entry"]) > TRANSACTION_CAP
    counts = FhirFaults(capped_fhir_server)
    before = counts.requests()["by_request"].get("POST transaction", 0)
    async with FhirClient(
        capped_fhir_server, retry=FAST, max_transaction_entries=TRANSACTION_CAP
    ) as client:
        results = await client.write_bundle(bundle)
        await assert_landed(client, bundle)
    sent = counts.requests()["by_request"]["POST transaction"] - before
    assert sent == 3  # 15 entries: 8 + 7, then the back links again
    assert len(results) == len(bundle["entry"])
    assert all(r.ok for r in results)


@pytest.mark.parametrize(
    ("server", "mode"),
    [
        # refuses every transaction over 8 entries: 400 too-costly
        ("capped_fhir_server", WriteMode.UPDATE),
        # Medplum's own rule: conditional transactions over 8 entries, 400 invalid + its words
        ("fhir_server", WriteMode.CONDITIONAL_UPDATE),
    ],
)
async def test_the_servers_refusal_teaches_the_cap(
    request: pytest.FixtureRequest, server: str, mode: WriteMode
) -> None:
    base_url = request.getfixturevalue(server)
    counts = FhirFaults(base_url)
    async with FhirClient(base_url, retry=FAST) as client:
        first = fresh_bundle(mode=mode)
        before = counts.requests()["by_request"].get("POST transaction", 0)
        await client.write_bundle(first)
        assert client.max_transaction_entries is not None
        assert client.max_transaction_entries <= TRANSACTION_CAP
        refused = counts.requests()["by_request"]["POST transaction"] - before
        assert refused > len(split_transaction(first, client.max_transaction_entries))
        before = counts.requests()["by_request"]["POST transaction"]
        second = fresh_bundle(mode=mode)
        await client.write_bundle(second)  # no refusal this time: the cap is known
        sent = counts.requests()["by_request"]["POST transaction"] - before
        assert sent == len(split_transaction(second, client.max_transaction_entries))
        await assert_landed(client, first)
        await assert_landed(client, second)


@pytest.mark.parametrize("mode", [WriteMode.CONDITIONAL_CREATE, WriteMode.CONDITIONAL_UPDATE])
async def test_without_transactions_it_writes_batches(
    faulty_fhir_server: FhirFaults, mode: WriteMode
) -> None:
    faulty_fhir_server.set(no_transaction=True)
    bundle = fresh_bundle(mode=mode)
    async with FhirClient(faulty_fhir_server.base_url, retry=FAST) as client:
        assert not (await client.capabilities()).transaction
        results = await client.write_bundle(bundle)
        await client.write_bundle(bundle)
        await assert_landed(client, bundle)
    assert all(r.ok for r in results)
    by_request = faulty_fhir_server.requests()["by_request"]
    assert "POST transaction" not in by_request
    assert by_request["POST batch"] >= 4  # waves, twice


async def test_without_bundles_it_writes_ordered_puts(faulty_fhir_server: FhirFaults) -> None:
    faulty_fhir_server.set(no_transaction=True, no_batch=True)
    bundle = fresh_bundle(mode=WriteMode.CONDITIONAL_UPDATE)
    async with FhirClient(faulty_fhir_server.base_url, retry=FAST) as client:
        results = await client.write_bundle(bundle)
        await assert_landed(client, bundle)
    assert all(r.ok for r in results)
    by_method = faulty_fhir_server.requests()["by_method"]
    assert "POST" not in by_method
    assert by_method["PUT"] > len(bundle["entry"])  # every entry, and the back links again


# -- faults -----------------------------------------------------------------------------------


async def test_three_503s_then_it_lands(faulty_fhir_server: FhirFaults) -> None:
    faulty_fhir_server.set(fail_first_n=3)
    bundle = fresh_bundle()
    async with FhirClient(faulty_fhir_server.base_url, retry=FAST) as client:
        await client.write_bundle(bundle)
        faulty_fhir_server.clear()
        await assert_landed(client, bundle)
    counts = faulty_fhir_server.requests()
    assert counts["faults"]["503"] == 3
    assert counts["by_request"]["POST transaction"] == 4


@pytest.mark.parametrize("fmt", ["seconds", "http-date", "ratelimit"])
async def test_429_waits_as_long_as_the_server_says(
    faulty_fhir_server: FhirFaults, fmt: str
) -> None:
    faulty_fhir_server.set(fail_first_n=1, fail_status=429, retry_after=2, retry_after_format=fmt)
    bundle = fresh_bundle()
    started = time.monotonic()
    async with FhirClient(faulty_fhir_server.base_url, retry=FAST) as client:
        await client.write_bundle(bundle)
    waited = time.monotonic() - started
    # an HTTP date has whole seconds: it may say 1.x s when read
    assert waited >= (1.0 if fmt == "http-date" else 2.0)
    assert faulty_fhir_server.requests()["faults"]["429"] == 1


async def test_a_slow_answer_is_abandoned_and_retried(faulty_fhir_server: FhirFaults) -> None:
    faulty_fhir_server.set(delay_ms=3000, delay_first_n=1)
    bundle = fresh_bundle()
    retry = RetryPolicy(attempt_timeout=0.8, initial_backoff=0.01, max_backoff=0.05)
    started = time.monotonic()
    async with FhirClient(faulty_fhir_server.base_url, retry=retry) as client:
        await client.write_bundle(bundle)
        assert time.monotonic() - started < 2.8
        await assert_landed(client, bundle)
    assert faulty_fhir_server.requests()["by_request"]["POST transaction"] == 2


async def test_a_dropped_connection_is_retried(faulty_fhir_server: FhirFaults) -> None:
    faulty_fhir_server.set(drop_first_n=2)
    bundle = fresh_bundle()
    async with FhirClient(faulty_fhir_server.base_url, retry=FAST) as client:
        await client.write_bundle(bundle)
        await assert_landed(client, bundle)
    assert faulty_fhir_server.requests()["faults"]["dropped"] == 2


async def test_a_lost_answer_after_the_write_duplicates_nothing(
    faulty_fhir_server: FhirFaults,
) -> None:
    faulty_fhir_server.set(drop_first_n=1, drop_after_processing=True)
    bundle = fresh_bundle(mode=WriteMode.CONDITIONAL_UPDATE)
    async with FhirClient(
        faulty_fhir_server.base_url, retry=FAST, max_transaction_entries=TRANSACTION_CAP
    ) as client:
        await client.write_bundle(bundle)  # written, answer lost, written again: same resources
        await assert_landed(client, bundle)


async def test_a_plain_post_is_never_sent_twice(faulty_fhir_server: FhirFaults) -> None:
    faulty_fhir_server.set(drop_first_n=1, drop_after_processing=True)
    marker = uuid.uuid4().hex
    task = {
        "resourceType": "Task",
        "identifier": [{"system": "urn:test:plain-post", "value": marker}],
        "status": "requested",
        "intent": "order",
    }
    async with FhirClient(faulty_fhir_server.base_url, retry=FAST) as client:
        with pytest.raises(RemoteUnavailable):
            await client.create(task)
        found = [r async for r in client.search("Task", {"identifier": _ident(task)})]
    assert len(found) == 1  # the server wrote it once; we did not send it again
    assert faulty_fhir_server.requests()["by_request"]["POST Task"] == 1


async def test_the_circuit_opens_and_closes_on_a_real_server(
    faulty_fhir_server: FhirFaults,
) -> None:
    faulty_fhir_server.set(fail_ratio_503=1.0)
    breaker = CircuitBreaker("ehr", failure_threshold=3, cool_down=0.5)
    once = RetryPolicy(max_attempts=1)
    async with FhirClient(faulty_fhir_server.base_url, retry=once, breaker=breaker) as client:
        for _ in range(3):
            with pytest.raises(RemoteUnavailable):
                await client.read("Task", "x")
        with pytest.raises(CircuitOpen):
            await client.read("Task", "x")
        assert faulty_fhir_server.requests()["total"] == 3
        faulty_fhir_server.clear()
        time.sleep(0.5)
        assert breaker.state == "half-open"
        await client.capabilities()  # the probe: metadata answers
        assert breaker.state == "closed"


# -- REST interactions ------------------------------------------------------------------------


def _task(marker: str, **extra: Any) -> Json:
    return {
        "resourceType": "Task",
        "identifier": [{"system": "urn:test:client", "value": marker}],
        "status": "requested",
        "intent": "order",
        **extra,
    }


async def test_conditional_create_read_vread_and_if_match(fhir_server: str) -> None:
    marker = uuid.uuid4().hex
    task = _task(marker)
    criteria = f"identifier=urn:test:client|{marker}"
    async with FhirClient(fhir_server, retry=FAST) as client:
        created = await client.create(task, if_none_exist=criteria)
        same = await client.create(task, if_none_exist=criteria)
        assert (created.status, same.status) == (201, 200)
        assert created.resource
        assert same.resource
        rid = created.resource["id"]
        assert same.resource["id"] == rid
        assert created.version_id
        assert created.etag

        current = await client.read("Task", rid)
        assert current.version_id == created.version_id
        updated = await client.update(
            {**current.resource, "status": "ready"}, if_match=current.etag
        )
        assert updated.status == 200
        assert updated.version_id != created.version_id
        old = await client.vread("Task", rid, str(created.version_id))
        assert old.resource
        assert old.resource["status"] == "requested"

        with pytest.raises(RemotePreconditionFailed):
            await client.update({**current.resource, "status": "cancelled"}, if_match=current.etag)
        assert (await client.read("Task", rid)).resource["status"] == "ready"  # type: ignore[index]

        again = await client.conditional_update("Task", criteria, {**task, "priority": "urgent"})
        assert again.status == 200
        assert again.resource
        assert again.resource["id"] == rid


async def test_a_412_reapplies_only_the_fields_we_own(fhir_server: str) -> None:
    marker = uuid.uuid4().hex
    async with FhirClient(fhir_server, retry=FAST) as client:
        ours = (await client.create(_task(marker, description="call the family"))).resource
        assert ours is not None
        seen = ours["meta"]["versionId"]
        # someone in the EHR takes the task meanwhile
        theirs = {**ours, "owner": {"display": "Nurse on ward 3"}, "status": "accepted"}
        await client.update(theirs)
        ours_next = {**ours, "description": "call the family and the GP", "status": "accepted"}
        result = await update_owned(client, ours_next, ["description"], if_match=seen)
    assert result.resource is not None
    assert result.resource["description"] == "call the family and the GP"
    assert result.resource["owner"] == {"display": "Nurse on ward 3"}  # theirs, kept


async def test_search_follows_every_page(fhir_server: str) -> None:
    marker = uuid.uuid4().hex
    system = f"urn:test:page:{marker}"
    async with FhirClient(fhir_server, retry=FAST) as client:
        for n in range(5):
            task = _task(str(n), code={"coding": [{"system": system, "code": "page"}]})
            task["identifier"] = [{"system": system, "value": str(n)}]
            await client.create(task, if_none_exist=identifier_query(task))
        found = [r async for r in client.search("Task", {"code": f"{system}|page", "_count": "2"})]
    assert sorted(r["identifier"][0]["value"] for r in found) == ["0", "1", "2", "3", "4"]


@pytest.mark.parametrize("no_transaction", [False, True], ids=["transaction", "batch"])
async def test_concurrent_writes_under_mixed_faults_land_exactly_once(
    faulty_fhir_server: FhirFaults, no_transaction: bool
) -> None:
    faulty_fhir_server.set(
        fail_ratio_503=0.2,
        fail_ratio_429=0.1,
        retry_after=0,
        drop_ratio=0.05,
        drop_after_processing=True,
        no_transaction=no_transaction,
        seed=7,
    )
    bundles = [fresh_bundle(mode=WriteMode.CONDITIONAL_UPDATE) for _ in range(3)]
    retry = RetryPolicy(max_attempts=10, initial_backoff=0.02, max_backoff=0.2)
    async with FhirClient(faulty_fhir_server.base_url, retry=retry) as client:
        written = await asyncio.gather(*(client.write_bundle(b) for b in bundles))
        faults = faulty_fhir_server.requests()["faults"]
        faulty_fhir_server.clear()
        for bundle, results in zip(bundles, written, strict=True):
            assert all(r.ok for r in results)
            await assert_landed(client, bundle)
    assert faults.get("503", 0) + faults.get("429", 0) > 0
