"""Every resource cm-fhir writes is valid R4: to our profiles and to a strict FHIR server.

Data-driven over every scenario the suite knows (``scenario_feeds``: the worker scenarios through
the real worker on SQLite, and each workflow scenario's case versions) and over every example
case. Each bundle is checked by our profile validator and the R4 JSON rules, split into
transactions of at most ``TRANSACTION_CAP`` entries (``cm_fhir.fhir.split``) and written in order
to the session's capped test FHIR server (``capped_fhir_server``, real HTTP), which validates every
entry against R4 and against our profiles, stored on it first. A rejected part fails the test with
the server's OperationOutcome.
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
from cm_fhir.fhir.shape import shape_problems
from cm_fhir.fhir.split import split_transaction
from cm_fhir.profiles import ConformanceRegistry, bundled_profiles_dir, default_validator
from cm_fhir.profiles import error_issues as our_errors
from fhir_server_fixture import TRANSACTION_CAP
from scenario_feeds import (
    WORKER_SCENARIOS,
    WORKFLOW_SCENARIOS,
    latest,
    worker_writes,
    workflow_cases,
)

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.json"))
FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
B = "http://cm-fhir.org/fhir"
EPISODE_EXTENSION = "http://hl7.org/fhir/StructureDefinition/workflow-episodeOfCare"
Json = dict[str, Any]


@pytest.fixture(scope="module")
def server(capped_fhir_server: str) -> Iterator[httpx.Client]:
    """The capped server, holding our profiles so it validates meta.profile too."""
    with httpx.Client(base_url=capped_fhir_server, headers=FHIR_JSON, timeout=60.0) as http:
        registry = ConformanceRegistry.from_directory(bundled_profiles_dir())
        for index in (registry.code_systems, registry.value_sets, registry.structure_definitions):
            for url, resource in index.items():
                if url.startswith(B) or url == EPISODE_EXTENSION:
                    answer = http.put(f"{resource['resourceType']}/{resource['id']}", json=resource)
                    assert answer.status_code in (200, 201), (resource["id"], answer.text[:500])
        yield http


def check_ours(document: Json) -> None:
    assert shape_problems(document) == []
    errors = our_errors(default_validator().validate(document))
    assert errors == [], errors[:5]


def send(server: httpx.Client, bundle: Json) -> list[Json]:
    """Write ``bundle`` as capped transactions, in order; the responses' entries."""
    answers: list[Json] = []
    for part in split_transaction(bundle, TRANSACTION_CAP):
        assert len(part["entry"]) <= TRANSACTION_CAP
        response = server.post("", content=json.dumps(part))
        assert response.status_code == 200, response.text[:3000]
        answers += response.json()["entry"]
    return answers


def stored(server: httpx.Client, resource: Json) -> list[Json]:
    ident = resource["identifier"][0]
    response = server.get(
        resource["resourceType"], params={"identifier": f"{ident['system']}|{ident['value']}"}
    )
    assert response.status_code == 200, response.text
    return [e["resource"] for e in response.json().get("entry", [])]


@pytest.mark.parametrize("name", WORKER_SCENARIOS)
async def test_every_write_of_a_worker_scenario_is_valid_r4(
    server: httpx.Client, tmp_path: Path, name: str
) -> None:
    """Ours on every queued bundle and served resource; the server gets each case's last write."""
    bundles, served = await worker_writes(name, tmp_path)
    assert bundles or name == "non-qualifying"
    for resource in served:
        check_ours(resource)
    for _, bundle in bundles:
        check_ours(bundle)
    for bundle in latest(bundles):
        send(server, bundle)


@pytest.mark.slow
@pytest.mark.parametrize("name", WORKER_SCENARIOS)
async def test_the_server_takes_every_queued_write_in_order(
    server: httpx.Client, tmp_path: Path, name: str
) -> None:
    bundles, _ = await worker_writes(name, tmp_path)
    for _, bundle in bundles:  # in queue order, as a delivery would send them
        send(server, bundle)


@pytest.mark.parametrize("name", WORKFLOW_SCENARIOS)
def test_every_case_version_of_a_workflow_scenario_is_valid_r4(
    server: httpx.Client, name: str
) -> None:
    """Ours on every case version the scenario's events made; the server gets the last."""
    versions = [(case.id, map_case(case, validate=False)) for case in workflow_cases(name)]
    for _, bundle in versions:
        check_ours(bundle)
    for bundle in latest(versions):
        send(server, bundle)


@pytest.mark.slow
@pytest.mark.parametrize("name", WORKFLOW_SCENARIOS)
def test_the_server_takes_every_case_version_in_order(server: httpx.Client, name: str) -> None:
    for case in workflow_cases(name):
        send(server, map_case(case, validate=False))


def fresh_case(path: Path) -> Case:
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc["id"] = f"{doc['id'][:40]}-{uuid.uuid4().hex[:8]}"
    return Case.model_validate(doc)


# each example in one write mode, the modes taken in turn (every mode is covered)
EXAMPLE_MODES = [(path, list(WriteMode)[i % len(WriteMode)]) for i, path in enumerate(EXAMPLES)]


@pytest.mark.parametrize(
    ("example", "mode"), EXAMPLE_MODES, ids=[f"{p.stem}-{m.value}" for p, m in EXAMPLE_MODES]
)
def test_an_example_lands_whole_through_capped_transactions(
    server: httpx.Client, example: Path, mode: WriteMode
) -> None:
    bundle = map_case(fresh_case(example), mode=mode)
    check_ours(bundle)
    too_big = server.post("", content=json.dumps(bundle))
    assert too_big.status_code == 400, "the server must refuse the unsplit transaction"
    assert len(split_transaction(bundle, TRANSACTION_CAP)) > 1

    send(server, bundle)
    send(server, bundle)  # a resend creates nothing

    ids: dict[str, str] = {}
    for resource in bundle_resources(bundle):
        found = stored(server, resource)
        assert len(found) == 1, f"{resource['resourceType']} stored {len(found)} times"
        ids[f"urn:uuid:{resource['id']}"] = f"{resource['resourceType']}/{found[0]['id']}"
    for resource in bundle_resources(bundle):  # every reference points at the stored target
        (copy,) = stored(server, resource)
        for key in ("team", "referralRequest", "activity", "basedOn", "goal", "careTeam"):
            for item in copy.get(key, []):
                ref = item["reference"] if key != "activity" else item["reference"]["reference"]
                assert server.get(ref).status_code == 200, (key, ref)
        assert len(copy.get("activity", [])) == len(resource.get("activity", []))
        assert len(copy.get("team", [])) == len(resource.get("team", []))
