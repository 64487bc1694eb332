"""Bundle adaptation without a server: waves for batches, results per entry, hostile answers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx

from cm_fhir.errors import RemoteInvalid, RemoteTooCostly
from cm_fhir.fhir.bundle import transaction_bundle
from cm_fhir.fhir.split import server_reference
from cm_fhir.fhir_client import FhirClient, RetryPolicy
from cm_fhir.fhir_client.bundles import batch_waves, single_writes

BASE = "http://ehr.test/fhir"
ONCE = RetryPolicy(max_attempts=1)
Json = dict[str, Any]
METADATA = {
    "resourceType": "CapabilityStatement",
    "fhirVersion": "4.0.1",
    "rest": [{"mode": "server", "interaction": [{"code": "batch"}]}],
}


def ident(value: str) -> list[Json]:
    return [{"system": "urn:t", "value": value}]


def linked_bundle() -> Json:
    """An episode pointing forward at its team (a back link), a team, a task for the episode."""
    episode = {
        "resourceType": "EpisodeOfCare",
        "id": "e1",
        "identifier": ident("e1"),
        "team": [{"reference": "urn:uuid:c1"}],
    }
    team = {"resourceType": "CareTeam", "id": "c1", "identifier": ident("c1")}
    task = {
        "resourceType": "Task",
        "id": "t1",
        "identifier": ident("t1"),
        "basedOn": [{"reference": "urn:uuid:e1"}],
    }
    return transaction_bundle([episode, team, task])


def test_waves_put_every_entry_after_what_it_references() -> None:
    waves = batch_waves(single_writes(linked_bundle()))
    written: set[str] = set()
    seen_twice = False
    for wave in waves:
        in_wave = {server_reference(e) for e in wave}
        assert len(in_wave) == len(wave), "one resource twice in a batch"
        for entry in wave:
            text = json.dumps(entry["resource"])
            assert "urn:uuid:" not in text
            for ref in json.loads(text).get("team", []) + json.loads(text).get("basedOn", []):
                assert ref["reference"] in written
            seen_twice |= server_reference(entry) in written
        written |= in_wave
    assert seen_twice  # the episode again, with its team, after the team
    assert len(waves) == 2


def batch_answer(statuses: list[str]) -> Json:
    entries = [{"response": {"status": s, "location": f"X/{n}"}} for n, s in enumerate(statuses)]
    return {"resourceType": "Bundle", "type": "batch-response", "entry": entries}


@respx.mock
async def test_a_failed_batch_entry_raises_with_its_outcome() -> None:
    respx.get(f"{BASE}/metadata").mock(return_value=httpx.Response(200, json=METADATA))
    outcome = {"resourceType": "OperationOutcome", "issue": [{"code": "required"}]}
    answer = batch_answer(["201 Created", "422 Unprocessable"])
    answer["entry"][1]["response"]["outcome"] = outcome
    respx.post(BASE).mock(return_value=httpx.Response(200, json=answer))
    async with FhirClient(BASE, retry=ONCE) as client:
        with pytest.raises(RemoteInvalid) as caught:
            await client.write_bundle(linked_bundle())
    assert caught.value.status == 422
    assert caught.value.outcome == outcome


@respx.mock
async def test_an_answer_with_missing_entries_is_refused() -> None:
    respx.post(BASE).mock(return_value=httpx.Response(200, json=batch_answer(["200 OK"])))
    async with FhirClient(BASE, retry=ONCE, mode="transaction") as client:
        with pytest.raises(RemoteInvalid, match="1 entries answered for 3 sent"):
            await client.write_bundle(linked_bundle())


@respx.mock
async def test_a_single_entry_too_costly_is_raised_not_split_forever() -> None:
    refused = {"resourceType": "OperationOutcome", "issue": [{"code": "too-costly"}]}
    route = respx.post(BASE).mock(return_value=httpx.Response(400, json=refused))
    async with FhirClient(BASE, retry=ONCE, mode="transaction") as client:
        with pytest.raises(RemoteTooCostly):
            await client.write_bundle(linked_bundle())
        assert client.max_transaction_entries == 1
    assert route.call_count == 2  # 3 entries, then the first part of one


async def collect(resources: AsyncIterator[Json], into: list[Json]) -> None:
    async for resource in resources:
        into.append(resource)


@respx.mock
async def test_a_next_page_on_another_origin_is_not_followed() -> None:
    page = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": {"resourceType": "Task", "id": "1"}}],
        "link": [{"relation": "next", "url": "http://elsewhere.test/fhir/Task?page=2"}],
    }
    respx.get(f"{BASE}/Task").mock(return_value=httpx.Response(200, json=page))
    elsewhere = respx.get("http://elsewhere.test/fhir/Task")
    async with FhirClient(BASE, retry=ONCE) as client:
        found: list[Json] = []
        with pytest.raises(RemoteInvalid, match="another origin"):
            await collect(client.search("Task", {}), found)
    assert [r["id"] for r in found] == ["1"]
    assert not elsewhere.called


@respx.mock
async def test_pages_that_loop_are_refused() -> None:
    page = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": {"resourceType": "Task", "id": "1"}}],
        "link": [{"relation": "next", "url": f"{BASE}/Task?page=2"}],
    }
    route = respx.get(f"{BASE}/Task").mock(return_value=httpx.Response(200, json=page))
    async with FhirClient(BASE, retry=ONCE) as client:
        found: list[Json] = []
        with pytest.raises(RemoteInvalid, match="loop"):
            await collect(client.search("Task", {}), found)
    assert route.call_count == 2
    assert len(found) == 2


@respx.mock
async def test_included_resources_are_not_yielded_as_matches() -> None:
    page = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [
            {"resource": {"resourceType": "Task", "id": "1"}, "search": {"mode": "match"}},
            {"resource": {"resourceType": "Patient", "id": "p"}, "search": {"mode": "include"}},
        ],
    }
    respx.get(f"{BASE}/Task").mock(return_value=httpx.Response(200, json=page))
    async with FhirClient(BASE, retry=ONCE) as client:
        found = [r async for r in client.search("Task", {"_include": "Task:patient"})]
    assert [r["resourceType"] for r in found] == ["Task"]


async def test_write_bundle_takes_transactions_only() -> None:
    async with FhirClient(BASE, retry=ONCE) as client:
        with pytest.raises(ValueError, match="transaction Bundle"):
            await client.write_bundle({"resourceType": "Bundle", "type": "batch"})
        assert await client.write_bundle({"resourceType": "Bundle", "type": "transaction"}) == []
    with pytest.raises(ValueError, match="at least 1"):
        FhirClient(BASE, max_transaction_entries=0)
