"""``GET /api/tasks``: tasks across cases by owner, team, status, due date, overdue, patient;
paged with the cases API's cursor; every case listed audited; a task worked through its case."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from api_case_helpers import case_app, case_json, client, example
from cm_fhir.store.audit import list_audit

__all__ = ["case_app"]

CASES = ("stroke-inpatient-rehab", "hiv-adherence-payer", "brain-injury-clinical-cm")


async def _load(app: FastAPI) -> None:
    async with client(app) as http:
        for name in CASES:
            created = await http.post("/api/cases", json=case_json(example(name)))
            assert created.status_code == 201, created.text


async def _ids(app: FastAPI, **params: Any) -> list[tuple[str, str]]:
    async with client(app, "reader-token") as http:
        answer = await http.get("/api/tasks", params=params)
    assert answer.status_code == 200, answer.text
    return [(item["case_id"], item["id"]) for item in answer.json()["items"]]


async def test_filters(case_app: FastAPI) -> None:
    await _load(case_app)
    everything = await _ids(case_app, limit=200)
    expected = sum(len(example(name).tasks) for name in CASES)
    assert len(everything) == expected
    dana = await _ids(case_app, owner="dana whitfield, rn ccm")
    assert dana == [("HOSP-2026-0412", "t-auth"), ("HOSP-2026-0412", "t-bp-call")]
    assert await _ids(case_app, team="hiv-team", status="draft") == [
        ("PCM-HIV-25-0316", "t-labs-apr")
    ]
    open_hiv = await _ids(case_app, team="hiv-team", status=["draft", "requested"])
    assert open_hiv == [("PCM-HIV-25-0316", "t-refill-2603"), ("PCM-HIV-25-0316", "t-labs-apr")]
    window = await _ids(
        case_app, due_after="2026-03-06T00:00:00+00:00", due_before="2026-03-07T00:00:00+00:00"
    )
    assert sorted(window) == [("HOSP-2026-0412", "t-auth"), ("PCM-HIV-25-0316", "t-refill-2603")]
    # Every example task is in the past: the open ones are overdue, the finished ones are not.
    overdue = await _ids(case_app, overdue="true", team="stroke-team")
    assert overdue == [("HOSP-2026-0412", "t-auth"), ("HOSP-2026-0412", "t-bp-call")]
    assert await _ids(case_app, overdue="false", team="stroke-team") == [
        ("HOSP-2026-0412", "t-rehab-options")
    ]
    assert {c for c, _ in await _ids(case_app, patient="MRN100234")} == {"HOSP-2026-0412"}
    assert await _ids(case_app, patient="other-system|MRN100234") == []


async def test_paging_walks_every_task_once_in_due_order(case_app: FastAPI) -> None:
    await _load(case_app)
    seen: list[str] = []
    dues: list[str] = []
    async with client(case_app, "reader-token") as http:
        url: str | None = "/api/tasks?limit=4"
        while url is not None:
            page = (await http.get(url)).json()
            assert len(page["items"]) <= 4
            seen += [f"{i['case_id']}/{i['id']}" for i in page["items"]]
            dues += [i["due"] for i in page["items"]]
            url = page["next"]
        bad = await http.get("/api/tasks", params={"cursor": "!!not-a-cursor"})
    assert len(seen) == len(set(seen)) == sum(len(example(n).tasks) for n in CASES)
    assert dues == sorted(dues)
    assert bad.status_code == 422


async def test_scope_and_audit(case_app: FastAPI, worker_engine: AsyncEngine) -> None:
    await _load(case_app)
    async with client(case_app, "no-scope-token") as http:
        assert (await http.get("/api/tasks")).status_code == 403
    async with client(case_app, None) as http:
        assert (await http.get("/api/tasks")).status_code == 401
    assert await _ids(case_app, owner="Dana Whitfield, RN CCM")
    async with worker_engine.connect() as connection:
        rows = await list_audit(connection, entity_type="case", subject="test:reader-token")
    assert [(r["action"], r["entity_id"], r["route"]) for r in rows] == [
        ("search", "HOSP-2026-0412", "/api/tasks")
    ]


async def test_a_task_worked_through_its_case_shows_its_new_status(case_app: FastAPI) -> None:
    await _load(case_app)
    async with client(case_app, "writer-token") as http:
        item = (await http.get("/api/tasks", params={"owner": "Dana Whitfield, RN CCM"})).json()[
            "items"
        ][1]
        assert item["id"] == "t-bp-call"
        path = f"/api/cases/{item['case_id']}/tasks/t-bp-call/status"
        stale = await http.post(
            path, json={"status": "in-progress"}, headers={"If-Match": 'W/"999"'}
        )
        assert stale.status_code == 412
        moved = await http.post(
            path,
            json={"status": "in-progress"},
            headers={"If-Match": f'W/"{item["case_version"]}"'},
        )
        assert moved.status_code == 200, moved.text
        again = await http.get("/api/tasks", params={"owner": "Dana Whitfield, RN CCM"})
    after = again.json()["items"][1]
    assert (after["status"], after["case_version"]) == ("in-progress", item["case_version"] + 1)
