"""The read-only /fhir facade through the real app, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi import FastAPI
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement

from api_case_helpers import BASE_URL, case_app, case_json, check_resource, client, example
from cm_fhir.domain import Case
from cm_fhir.facade import RESOURCE_TYPES
from cm_fhir.fhir import ReferenceStyle, case_to_resources
from cm_fhir.mapping.registry import default_registry

__all__ = ["case_app"]

NAMES = ("stroke-inpatient-rehab", "hiv-adherence-payer", "brain-injury-clinical-cm")
STORED_TYPES = [t for t in RESOURCE_TYPES if t != "Provenance"]


async def _load(app: FastAPI) -> list[Case]:
    created = [example(n) for n in NAMES]
    async with client(app) as http:
        for case in created:
            assert (await http.post("/api/cases", json=case_json(case))).status_code == 201
    return created


def _mapped(created: list[Case]) -> list[dict[str, Any]]:
    registry = default_registry()
    out = []
    for case in created:
        out += case_to_resources(case, registry, ReferenceStyle.RELATIVE)
    return [r for r in out if r["resourceType"] in RESOURCE_TYPES]


def _without_server_meta(resource: dict[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in resource["meta"].items() if k not in ("versionId", "lastUpdated")}
    return resource | {"meta": meta}


async def _search(app: FastAPI, path: str, **params: Any) -> dict[str, Any]:
    async with client(app) as http:
        response = await http.get(path, params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    body: dict[str, Any] = response.json()
    return body


async def test_metadata_is_open_and_valid(case_app: FastAPI) -> None:
    async with client(case_app, token=None) as http:
        response = await http.get("/fhir/metadata")
    assert response.status_code == 200
    statement = response.json()
    CapabilityStatement.model_validate(statement)
    served = [r["type"] for r in statement["rest"][0]["resource"]]
    # Claim: the payer operations only; Subscription: to the PAS topic
    assert served == [*RESOURCE_TYPES, "Claim", "Subscription"]
    assert statement["implementation"]["url"] == f"{BASE_URL}/fhir"


async def test_every_resource_reads_back_as_the_mapper_emits_it(case_app: FastAPI) -> None:
    created = await _load(case_app)
    expected = _mapped(created)
    assert {r["resourceType"] for r in expected} == set(STORED_TYPES)
    async with client(case_app) as http:
        for resource in expected:
            url = f"/fhir/{resource['resourceType']}/{resource['id']}"
            response = await http.get(url)
            assert response.status_code == 200, url
            served = response.json()
            assert _without_server_meta(served) == resource
            assert served["meta"]["profile"] == resource["meta"]["profile"]
            assert response.headers["etag"] == 'W/"1"'
            check_resource(served)


async def test_search_by_identifier_patient_status_and_id(case_app: FastAPI) -> None:
    created = await _load(case_app)
    expected = _mapped(created)
    tasks = [r for r in expected if r["resourceType"] == "Task"]
    task = tasks[3]
    ident = task["identifier"][0]

    def ids(bundle: dict[str, Any]) -> list[str]:
        return [e["resource"]["id"] for e in bundle.get("entry", [])]

    found = await _search(case_app, "/fhir/Task", identifier=f"{ident['system']}|{ident['value']}")
    assert ids(found) == [task["id"]]
    assert found["total"] == 1
    assert ids(await _search(case_app, "/fhir/Task", identifier=ident["value"])) == [task["id"]]
    assert ids(await _search(case_app, "/fhir/Task", identifier=f"urn:x|{ident['value']}")) == []
    assert ids(await _search(case_app, "/fhir/Task", _id=task["id"])) == [task["id"]]

    stroke = created[0]
    mrn = stroke.patient.primary
    own = sorted(
        r["id"]
        for r in case_to_resources(stroke, default_registry(), ReferenceStyle.RELATIVE)
        if r["resourceType"] == "Task"
    )
    for params in (
        {"patient:identifier": f"{mrn.system}|{mrn.value}"},
        {"patient": f"{mrn.system}|{mrn.value}"},
        {"patient:identifier": mrn.value, "_count": "100"},
    ):
        assert ids(await _search(case_app, "/fhir/Task", **params)) == own

    statuses = {"requested", "in-progress"}
    wanted = sorted(t["id"] for t in tasks if t["status"] in statuses)
    got = await _search(case_app, "/fhir/Task", status="requested,in-progress", _count="100")
    assert ids(got) == wanted
    for entry in got.get("entry", []):
        assert entry["fullUrl"] == f"{BASE_URL}/fhir/Task/{entry['resource']['id']}"
        assert entry["search"] == {"mode": "match"}
    Bundle.model_validate(got)

    goals = [r for r in expected if r["resourceType"] == "Goal"]
    for lifecycle in ("active", "completed", "cancelled"):
        wanted = sorted(g["id"] for g in goals if g["lifecycleStatus"] == lifecycle)
        params = {"lifecycle-status": lifecycle, "_count": "100"}
        assert ids(await _search(case_app, "/fhir/Goal", **params)) == wanted


async def test_last_updated_and_paging(case_app: FastAPI) -> None:
    created = await _load(case_app)
    every = sorted(r["id"] for r in _mapped(created) if r["resourceType"] == "Task")
    first = await _search(case_app, "/fhir/Task", _count="1")
    stamp = first["entry"][0]["resource"]["meta"]["lastUpdated"]
    day = stamp[:10]
    assert first["total"] == len(every)
    assert first["entry"][0]["resource"]["id"] == every[0]
    for params, count in (
        ({"_lastUpdated": day}, len(every)),
        ({"_lastUpdated": f"ge{day}"}, len(every)),
        ({"_lastUpdated": f"lt{day}"}, 0),
        ({"_lastUpdated": f"gt{day}"}, 0),
        ({"_lastUpdated": f"le{day}"}, len(every)),
        ({"_lastUpdated": ["ge2000-01-01", f"lt{day}"]}, 0),
    ):
        assert (await _search(case_app, "/fhir/Task", **params))["total"] == count, params

    seen: list[str] = []
    pages: list[dict[str, Any]] = []
    url: str | None = f"{BASE_URL}/fhir/Task?_count=4"
    async with client(case_app) as http:
        while url is not None:
            page = (await http.get(url)).json()
            pages.append(page)
            seen += [e["resource"]["id"] for e in page.get("entry", [])]
            links = {link["relation"]: link["url"] for link in page["link"]}
            url = links.get("next")
        assert seen == every
        assert len(pages) == -(-len(every) // 4)
        assert "previous" not in {link["relation"] for link in pages[0]["link"]}
        links = {link["relation"]: link["url"] for link in pages[-1]["link"]}
        back = [e["resource"]["id"] for e in pages[-1]["entry"]]
        while "previous" in links:
            assert urlsplit(links["previous"]).path == "/fhir/Task"
            page = (await http.get(links["previous"])).json()
            back = [e["resource"]["id"] for e in page["entry"]] + back
            links = {link["relation"]: link["url"] for link in page["link"]}
        assert back == every


@pytest.mark.parametrize(
    ("path", "where"),
    [
        ("/fhir/Patient", "type"),
        ("/fhir/RiskAssessment", "type"),
        ("/fhir/Task?subject=x", "subject"),
        ("/fhir/Task?status:not=ready", "status:not"),
        ("/fhir/Task?_lastUpdated=ap2026", "_lastUpdated"),
        ("/fhir/Task?_lastUpdated=yesterday", "_lastUpdated"),
        ("/fhir/Goal?status=active", "status"),
        ("/fhir/Task?patient=Patient/123", "patient"),
        ("/fhir/Task?_count=-5", "_count"),
        ("/fhir/Task?_page=12", "_page"),
        ("/fhir/Task/abc?foo=1", "foo"),
        ("/fhir/Patient/abc", "type"),
    ],
)
async def test_bad_requests_are_400_operation_outcomes(
    case_app: FastAPI, path: str, where: str
) -> None:
    async with client(case_app) as http:
        response = await http.get(path, headers={"Prefer": "handling=strict"})
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/fhir+json")
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["severity"] == "error"
    assert outcome["issue"][0]["expression"] == [where]


async def test_unsupported_parameters_are_ignored_unless_strict(case_app: FastAPI) -> None:
    await _load(case_app)
    async with client(case_app) as http:
        plain = (await http.get("/fhir/Task", params={"status": "requested"})).json()
        lenient = await http.get(
            "/fhir/Task",
            params={"status": "requested", "subject": "x", "_totalMethod": "count", "_sort": "-x"},
        )
        strict = await http.get(
            "/fhir/Task?status=requested&subject=x",
            headers={"Prefer": "return=minimal; handling=strict"},
        )
        read = await http.get(f"/fhir/Task/{plain['entry'][0]['resource']['id']}?foo=1")
        count = (
            await http.get("/fhir/Task?status=requested&_summary=count&_total=accurate")
        ).json()
        subset = (await http.get("/fhir/Task?status=requested&_elements=status,owner")).json()
    assert lenient.status_code == 200
    body = lenient.json()
    assert body["total"] == plain["total"] > 0
    self_link = next(link["url"] for link in body["link"] if link["relation"] == "self")
    assert "status=requested" in self_link
    assert "subject" not in self_link
    assert "_totalMethod" not in self_link
    assert "_sort" not in self_link
    assert strict.status_code == 400
    assert strict.json()["issue"][0]["expression"] == ["subject"]
    assert read.status_code == 200
    assert count["total"] == plain["total"]
    assert "entry" not in count
    assert [link["relation"] for link in count["link"]] == ["self"]
    resource = subset["entry"][0]["resource"]
    assert set(resource) == {"resourceType", "id", "meta", "status", "owner"}
    assert {"code": "SUBSETTED"}.items() <= resource["meta"]["tag"][-1].items()
    next_link = next((link["url"] for link in subset["link"] if link["relation"] == "next"), "")
    assert not next_link or "_elements=status%2Cowner" in next_link


async def test_unknown_ids_are_404(case_app: FastAPI) -> None:
    await _load(case_app)
    async with client(case_app) as http:
        for rtype in RESOURCE_TYPES:
            response = await http.get(f"/fhir/{rtype}/does-not-exist")
            assert response.status_code == 404, rtype
            assert response.json()["issue"][0]["code"] == "not-found"


async def test_scopes(case_app: FastAPI) -> None:
    created = await _load(case_app)
    resources = _mapped(created)
    task = next(r for r in resources if r["resourceType"] == "Task")
    goal = next(r for r in resources if r["resourceType"] == "Goal")
    task_url = f"/fhir/Task/{task['id']}"
    goal_url = f"/fhir/Goal/{goal['id']}"
    async with client(case_app, token=None) as http:
        missing = await http.get(task_url)
        assert missing.status_code == 401
        assert missing.json()["resourceType"] == "OperationOutcome"
        assert "Bearer" in missing.headers["www-authenticate"]
    async with client(case_app, token="not-a-known-token") as http:
        assert (await http.get("/fhir/Task")).status_code == 401
    async with client(case_app, token="reader-token") as http:  # /api scope, not SMART
        refused = await http.get(task_url)
        assert refused.status_code == 403
        assert refused.json()["resourceType"] == "OperationOutcome"
    async with client(case_app, token="smart-task-token") as http:
        assert (await http.get(task_url)).status_code == 200
        assert (await http.get("/fhir/Task")).status_code == 200
        assert (await http.get(goal_url)).status_code == 403
        assert (await http.get("/fhir/Goal")).status_code == 403
    async with client(case_app, token="smart-all-token") as http:
        assert (await http.get(goal_url)).status_code == 200
        assert (await http.get("/fhir/Provenance")).status_code == 200
        assert (await http.get("/api/cases")).status_code == 403
