"""The FHIR facade's Task search for worklists: by owner and due date, sorted by due date or last
update (paging stays exact under a sort), with the focus and based-on resources included; over
SQLite and PostgreSQL, checked against the mapper's own resources."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI

from api_case_helpers import case_app, case_json, client, example, example_names
from cm_fhir.fhir import ReferenceStyle, case_to_resources
from cm_fhir.mapping.registry import default_registry

__all__ = ["case_app"]


async def _load(app: FastAPI) -> list[dict[str, Any]]:
    tasks = []
    async with client(app) as http:
        for name in example_names():
            case = example(name)
            assert (await http.post("/api/cases", json=case_json(case))).status_code == 201
            resources = case_to_resources(case, default_registry(), ReferenceStyle.RELATIVE)
            tasks += [r for r in resources if r["resourceType"] == "Task"]
    return tasks


def _due(task: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(task["restriction"]["period"]["end"])


async def _all(app: FastAPI, url: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    async with client(app) as http:
        next_url: str | None = url
        while next_url:
            page = (await http.get(next_url)).json()
            found += [
                e["resource"] for e in page.get("entry", []) if e["search"]["mode"] == "match"
            ]
            links = {link["relation"]: link["url"] for link in page["link"]}
            next_url = links.get("next")
    return found


async def test_due_date_search_and_sort_page_exactly(case_app: FastAPI) -> None:
    tasks = await _load(case_app)
    every = sorted(tasks, key=lambda t: (_due(t), t["id"]))
    by_due = await _all(case_app, "/fhir/Task?_sort=due&_count=4")
    assert [t["id"] for t in by_due] == [t["id"] for t in every]
    newest_due = await _all(case_app, "/fhir/Task?_sort=-due&_count=5")
    assert [_due(t) for t in newest_due] == sorted((_due(t) for t in every), reverse=True)
    assert sorted(t["id"] for t in newest_due) == sorted(t["id"] for t in every)
    march = await _all(case_app, "/fhir/Task?due=ge2026-03-01&due=lt2026-04-01&_sort=due")
    start, end = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC)
    expected = [t["id"] for t in every if start <= _due(t) < end]  # no offset in a bound: UTC
    assert [t["id"] for t in march] == expected
    assert expected
    updated = await _all(case_app, "/fhir/Task?_sort=-_lastUpdated&_count=7")
    stamps = [t["meta"]["lastUpdated"] for t in updated]
    assert stamps == sorted(stamps, reverse=True)
    assert len(updated) == len(every)
    # Walking back from the last page with the previous links gives the same order.
    async with client(case_app) as http:
        page = (await http.get("/fhir/Task?_sort=due&_count=6")).json()
        links = {link["relation"]: link["url"] for link in page["link"]}
        forward = [e["resource"]["id"] for e in page["entry"]]
        while "next" in links:
            page = (await http.get(links["next"])).json()
            links = {link["relation"]: link["url"] for link in page["link"]}
            forward += [e["resource"]["id"] for e in page["entry"]]
        back = [e["resource"]["id"] for e in page["entry"]]
        while "previous" in links:
            page = (await http.get(links["previous"])).json()
            links = {link["relation"]: link["url"] for link in page["link"]}
            back = [e["resource"]["id"] for e in page["entry"]] + back
    assert back == forward == [t["id"] for t in every]


async def test_owner_search(case_app: FastAPI) -> None:
    tasks = await _load(case_app)
    with_identifier = [t for t in tasks if "identifier" in t.get("owner", {})]
    async with client(case_app) as http:
        for task in with_identifier[:3]:
            ident = task["owner"]["identifier"]
            token = f"{ident.get('system', '')}|{ident['value']}"
            found = (
                await http.get("/fhir/Task", params={"owner:identifier": token, "_count": 100})
            ).json()
            ids = {e["resource"]["id"] for e in found.get("entry", [])}
            assert task["id"] in ids
            assert all(
                e["resource"]["owner"].get("identifier", {}).get("value") == ident["value"]
                for e in found.get("entry", [])
            )
        none = (await http.get("/fhir/Task", params={"owner": "Practitioner/nobody"})).json()
        assert none["total"] == 0
        strict = await http.get(
            "/fhir/Task", params={"owner:missing": "true"}, headers={"Prefer": "handling=strict"}
        )
        assert strict.status_code == 400


async def test_include_focus_and_based_on(case_app: FastAPI) -> None:
    tasks = await _load(case_app)
    focused = [t for t in tasks if "focus" in t]
    based = [t for t in tasks if "basedOn" in t]
    assert focused or based
    async with client(case_app) as http:
        for task, param in [
            *((t, "Task:focus") for t in focused[:2]),
            *((t, "Task:based-on") for t in based[:2]),
        ]:
            bundle = (
                await http.get("/fhir/Task", params={"_id": task["id"], "_include": param})
            ).json()
            modes = [
                (e["search"]["mode"], e["resource"]["resourceType"] + "/" + e["resource"]["id"])
                for e in bundle["entry"]
            ]
            targets = [task["focus"]] if param == "Task:focus" else task["basedOn"]
            expected = {r["reference"] for r in targets}
            assert ("match", f"Task/{task['id']}") in modes
            assert {ref for mode, ref in modes if mode == "include"} == expected
            self_link = next(link["url"] for link in bundle["link"] if link["relation"] == "self")
            assert "_include=Task%3A" in self_link
        plain = (await http.get("/fhir/Task", params={"_id": tasks[0]["id"]})).json()
    assert all(e["search"]["mode"] == "match" for e in plain["entry"])


async def test_capability_statement_names_what_task_search_supports(case_app: FastAPI) -> None:
    async with client(case_app, None) as http:
        statement = (await http.get("/fhir/metadata")).json()
    task = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Task")
    assert {"owner", "due"} <= {p["name"] for p in task["searchParam"]}
    assert task["searchInclude"] == ["Task:focus", "Task:based-on"]
    goal = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Goal")
    assert "searchInclude" not in goal
