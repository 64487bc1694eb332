"""The cases API through the real app (httpx ASGITransport) on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from api_case_helpers import case_app, case_json, check_resource, client, example
from cm_fhir.domain import Case
from cm_fhir.fhir import ReferenceStyle, case_to_resources, map_case_json
from cm_fhir.mapping.registry import default_registry
from cm_fhir.store.audit import audit_events
from worker_fixtures import cases, fhir_resources, outbox, rows, trace

__all__ = ["case_app"]


async def _create(app: FastAPI, case: Case) -> Any:
    async with client(app) as http:
        response = await http.post("/api/cases", json=case_json(case))
    assert response.status_code == 201, response.text
    return response


async def test_create_writes_case_resources_outbox_trace_and_audit(
    case_app: FastAPI, worker_engine: AsyncEngine
) -> None:
    case = example("stroke-inpatient-rehab")
    response = await _create(case_app, case)
    assert response.headers["etag"] == 'W/"1"'
    assert response.headers["location"] == f"/api/cases/{case.id}"
    assert Case.model_validate_json(response.content) == case

    (row,) = await rows(worker_engine, cases)
    assert (row.case_id, row.status, row.programme) == (case.id, "transition", case.programme)
    assert row.patient_key == f"{case.patient.primary.system}|{case.patient.primary.value}"
    stored = {
        (r.resource_type, r.id): orjson.loads(r.resource)
        for r in await rows(worker_engine, fhir_resources)
    }
    expected = case_to_resources(case, default_registry(), ReferenceStyle.RELATIVE)
    assert stored == {(r["resourceType"], r["id"]): r for r in expected}
    (queued,) = await rows(worker_engine, outbox)
    assert queued.bundle == map_case_json(case, validate=False)
    assert queued.state == "pending"
    assert queued.bundle_sha256 == row.last_bundle_sha256
    traced = await rows(worker_engine, trace)
    assert [(t.rule, t.action, t.case_id) for t in traced] == [("api", "case.create", case.id)]
    audited = await rows(worker_engine, audit_events)
    assert [(a.action, a.entity_type, a.entity_id) for a in audited] == [
        ("create", "case", case.id)
    ]


async def test_create_twice_is_a_conflict_and_bad_documents_are_422(case_app: FastAPI) -> None:
    case = example("hiv-adherence-payer")
    await _create(case_app, case)
    async with client(case_app) as http:
        again = await http.post("/api/cases", json=case_json(case))
        assert again.status_code == 409
        assert case.id in again.json()["error"]["message"]
        broken = case_json(case) | {"status": "sleeping"}
        bad = await http.post("/api/cases", json=broken)
        assert bad.status_code == 422
        assert any(f["field"] == "body.status" for f in bad.json()["error"]["fields"])


async def test_read_and_the_fhir_bundle(case_app: FastAPI) -> None:
    case = example("home-iv-antibiotics-coverage")
    await _create(case_app, case)
    async with client(case_app) as http:
        read = await http.get(f"/api/cases/{case.id}")
        assert read.status_code == 200
        assert read.headers["etag"] == 'W/"1"'
        assert Case.model_validate_json(read.content) == case
        bundle = await http.get(f"/api/cases/{case.id}/fhir")
        assert bundle.headers["content-type"].startswith("application/fhir+json")
        assert bundle.content == map_case_json(case, validate=False)
        check_resource(bundle.json())
        put_mode = await http.get(f"/api/cases/{case.id}/fhir", params={"mode": "update"})
        assert {e["request"]["method"] for e in put_mode.json()["entry"]} == {"PUT"}
        missing = await http.get("/api/cases/NO-SUCH-CASE")
        assert missing.status_code == 404
        assert (await http.get("/api/cases/NO-SUCH-CASE/fhir")).status_code == 404


async def test_list_and_search(case_app: FastAPI) -> None:
    names = [
        "stroke-inpatient-rehab",
        "home-iv-antibiotics-coverage",
        "hiv-adherence-payer",
        "workers-comp-return-to-work",
        "brain-injury-clinical-cm",
    ]
    created = [example(n) for n in names]
    for case in created:
        await _create(case_app, case)

    async def ids(**params: Any) -> list[str]:
        async with client(case_app) as http:
            response = await http.get("/api/cases", params=params)
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["items"]]

    every = sorted(c.id for c in created)
    assert await ids() == every
    stroke = created[0]
    primary = stroke.patient.primary
    assert await ids(patient=f"{primary.system}|{primary.value}") == [stroke.id]
    assert await ids(patient=primary.value) == [stroke.id]
    assert await ids(patient=f"urn:other|{primary.value}") == []
    assert await ids(status="transition") == sorted(
        c.id for c in created if c.status == "transition"
    )
    assert await ids(programme="workers-compensation") == ["WC-2026-0219"]
    assert await ids(team="river-team") == ["TBI-2026-0087"]
    assert stroke.case_manager is not None
    assert await ids(owner=stroke.case_manager.display) == [stroke.id]
    opened_2026 = sorted(c.id for c in created if c.opened >= datetime(2026, 1, 1, tzinfo=UTC))
    assert await ids(opened_from="2026-01-01T00:00:00Z") == opened_2026
    assert await ids(opened_to="2026-01-01T00:00:00Z") == sorted(set(every) - set(opened_2026))

    seen: list[str] = []
    url: str | None = "/api/cases?limit=2"
    async with client(case_app) as http:
        while url is not None:
            page = (await http.get(url)).json()
            assert len(page["items"]) <= 2
            seen += [item["id"] for item in page["items"]]
            url = page["next"]
    assert seen == every
    async with client(case_app) as http:
        bad = await http.get("/api/cases", params={"status": "sleeping"})
    assert bad.status_code == 422


async def test_status_transitions(case_app: FastAPI, worker_engine: AsyncEngine) -> None:
    case = example("hiv-adherence-payer")  # active
    await _create(case_app, case)
    async with client(case_app) as http:
        hold = await http.post(
            f"/api/cases/{case.id}/status",
            json={"status": "on-hold", "at": "2026-05-01T09:00:00+00:00"},
        )
        assert hold.status_code == 200, hold.text
        assert hold.headers["etag"] == 'W/"2"'
        assert hold.json()["status"] == "on-hold"
        closed = await http.post(f"/api/cases/{case.id}/status", json={"status": "closed"})
        assert closed.json()["closed"] is not None
        back = await http.post(f"/api/cases/{case.id}/status", json={"status": "active"})
        assert back.status_code == 409
        message = back.json()["error"]["message"]
        assert "'closed'" in message
        assert "'active'" in message
        early = await http.post("/api/cases/WC-NOPE/status", json={"status": "active"})
        assert early.status_code == 404
    (row,) = await rows(worker_engine, cases)
    assert (row.status, row.version) == ("closed", 3)
    episode = [
        r for r in await rows(worker_engine, fhir_resources) if r.resource_type == "EpisodeOfCare"
    ]
    assert orjson.loads(episode[0].resource)["status"] == "finished"
    assert len(await rows(worker_engine, outbox)) == 3


async def test_if_match(case_app: FastAPI) -> None:
    case = example("stroke-inpatient-rehab")
    await _create(case_app, case)
    url = f"/api/cases/{case.id}/tasks/t-bp-call/status"
    async with client(case_app) as http:
        stale = await http.post(url, json={"status": "accepted"}, headers={"If-Match": 'W/"7"'})
        assert stale.status_code == 412
        assert "version 1" in stale.json()["error"]["message"]
        garbage = await http.post(url, json={"status": "accepted"}, headers={"If-Match": "x"})
        assert garbage.status_code == 412
        ok = await http.post(url, json={"status": "accepted"}, headers={"If-Match": 'W/"1"'})
        assert ok.status_code == 200, ok.text
        assert ok.headers["etag"] == 'W/"2"'
        replay = await http.post(url, json={"status": "in-progress"}, headers={"If-Match": 'W/"1"'})
        assert replay.status_code == 412


async def test_concurrent_changes_with_the_same_etag_one_wins(case_app: FastAPI) -> None:
    case = example("stroke-inpatient-rehab")
    await _create(case_app, case)
    headers = {"If-Match": 'W/"1"'}
    async with client(case_app) as http:
        results = await asyncio.gather(
            *[
                http.post(
                    f"/api/cases/{case.id}/tasks/t-bp-call/status",
                    json={"status": status},
                    headers=headers,
                )
                for status in ("accepted", "received", "cancelled", "in-progress")
            ]
        )
        codes = sorted(r.status_code for r in results)
        assert codes == [200, 412, 412, 412]
        final = (await http.get(f"/api/cases/{case.id}")).json()
    winner = next(r for r in results if r.status_code == 200).json()
    assert final == winner
