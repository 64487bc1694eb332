"""Our transaction Bundles against a real FHIR R4 server on loopback.

Each example case (with a fresh case id, so tests share the server safely) is sent as a
transaction; the server must accept it, resolve the ``urn:uuid`` references, and a second send must
create nothing new. The test server (like production Medplum) runs transactions that hold
conditional writes with serialisable isolation and caps them at 8 entries, so the whole examples
go in ``update`` mode (PUT by our deterministic id) and the conditional modes are proven on a
small case.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cm_fhir.domain import Case
from cm_fhir.fhir import WriteMode, map_case
from cm_fhir.fhir.bundle import bundle_resources

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.json"))
FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
Json = dict[str, Any]


@pytest.fixture
def client(fhir_server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fhir_server, headers=FHIR_JSON, timeout=30.0) as http:
        yield http


def fresh_case(path: Path) -> Case:
    doc = json.loads(path.read_text())
    doc["id"] = f"{doc['id'][:40]}-{uuid.uuid4().hex[:8]}"
    return Case.model_validate(doc)


def post(client: httpx.Client, bundle: Json) -> Json:
    response = client.post("", content=json.dumps(bundle))
    assert response.status_code == 200, response.text[:2000]
    answer: Json = response.json()
    assert answer["type"] == "transaction-response"
    return answer


def find(client: httpx.Client, resource: Json) -> list[Json]:
    ident = resource["identifier"][0]
    response = client.get(
        resource["resourceType"], params={"identifier": f"{ident['system']}|{ident['value']}"}
    )
    assert response.status_code == 200, response.text
    return [e["resource"] for e in response.json().get("entry", [])]


def small_case(path: Path) -> Case:
    """The example reduced to at most 8 resources: case, plan, goals and two tasks."""
    case = fresh_case(path)
    plan_ids = {p.id for p in (case.care_plan,) if p is not None}
    tasks = tuple(t for t in case.tasks if t.care_plan in plan_ids | {None})[:2]
    return case.model_copy(
        update={
            "referral_source": None,
            "care_team": None,
            "assessments": (),
            "referrals": (),
            "risk": None,
            "discharge_plan": None,
            "tasks": tasks,
        }
    )


def check_idempotent_write(client: httpx.Client, case: Case, mode: WriteMode) -> None:
    bundle = map_case(case, mode=mode)
    first = post(client, bundle)
    assert len(first["entry"]) == len(bundle["entry"])
    assert all(e["response"]["status"].startswith("201") for e in first["entry"])

    second = post(client, bundle)
    assert all(e["response"]["status"].startswith("200") for e in second["entry"])
    for resource in bundle_resources(bundle):
        stored = find(client, resource)
        assert len(stored) == 1, f"{resource['resourceType']} written {len(stored)} times"
        if mode is WriteMode.UPDATE:
            assert stored[0]["id"] == resource["id"]


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_server_accepts_each_example_and_a_resend_creates_nothing(
    client: httpx.Client, example: Path
) -> None:
    check_idempotent_write(client, fresh_case(example), WriteMode.UPDATE)


@pytest.mark.parametrize("mode", [WriteMode.CONDITIONAL_UPDATE, WriteMode.CONDITIONAL_CREATE])
def test_conditional_writes_are_idempotent_on_the_server(
    client: httpx.Client, mode: WriteMode
) -> None:
    case = small_case(EXAMPLES[0])
    assert len(map_case(case)["entry"]) <= 8
    check_idempotent_write(client, case, mode)


def test_references_between_entries_resolve_to_server_ids(client: httpx.Client) -> None:
    case = fresh_case(EXAMPLES[0])
    bundle = map_case(case, mode=WriteMode.UPDATE)
    post(client, bundle)
    resources = bundle_resources(bundle)
    plan = next(r for r in resources if r["resourceType"] == "CarePlan")
    episode = next(r for r in resources if r["resourceType"] == "EpisodeOfCare")
    stored_plan = find(client, plan)[0]
    stored_episode = find(client, episode)[0]
    ext = stored_plan["extension"][0]
    assert ext["url"].endswith("workflow-episodeOfCare")
    assert ext["valueReference"]["reference"] == f"EpisodeOfCare/{stored_episode['id']}"
    for activity in stored_plan.get("activity", []):
        target = activity["reference"]["reference"]
        assert client.get(target).status_code == 200, target


def test_server_rejects_a_broken_bundle_and_stores_nothing(client: httpx.Client) -> None:
    case = fresh_case(EXAMPLES[0])
    bundle = map_case(case, mode=WriteMode.UPDATE)
    bundle["entry"][-1]["resource"]["status"] = "not-a-status"
    response = client.post("", content=json.dumps(bundle))
    assert response.status_code >= 400
    assert response.json()["resourceType"] == "OperationOutcome"
    assert find(client, bundle_resources(bundle)[0]) == []
