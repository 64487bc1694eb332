"""Bounds on /fhir searches, through the real app on SQLite and PostgreSQL: too many values or
parameters, dates at the edge of the calendar and over-long values are 400 OperationOutcomes
naming the parameter; the largest allowed searches are answered correctly on both databases."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI

from api_case_helpers import case_app, case_json, client, example
from cm_fhir.facade.search import MAX_PARAMETERS, MAX_VALUE_LENGTH, MAX_VALUES

__all__ = ["case_app"]


async def _tasks(app: FastAPI) -> list[dict[str, Any]]:
    async with client(app) as http:
        for name in ("stroke-inpatient-rehab", "hiv-adherence-payer"):
            created = await http.post("/api/cases", json=case_json(example(name)))
            assert created.status_code == 201
        bundle = (await http.get("/fhir/Task", params={"_count": "100"})).json()
    return [e["resource"] for e in bundle["entry"]]


def _token(resource: dict[str, Any]) -> str:
    ident = resource["identifier"][0]
    return f"{ident['system']}|{ident['value']}"


async def _refused(app: FastAPI, path: str, params: Any, where: str) -> None:
    async with client(app) as http:
        response = await http.get(path, params=params)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    issue = response.json()["issue"][0]
    assert issue["severity"] == "error"
    assert issue["expression"] == [where]


@pytest.mark.parametrize("n", [MAX_VALUES + 1, 1000, 2000])
async def test_too_many_values_are_400_naming_the_parameter(case_app: FastAPI, n: int) -> None:
    values = ",".join(f"urn:test|v{i}" for i in range(n))
    await _refused(case_app, "/fhir/Task", {"identifier": values}, "identifier")
    repeated = [("identifier", f"urn:test|v{i}") for i in range(n)]
    await _refused(case_app, "/fhir/Task", repeated, "identifier")
    ids = ",".join(f"trace-{i}" for i in range(1, n + 1))
    await _refused(case_app, "/fhir/Provenance", {"_id": ids}, "_id")


async def test_too_many_parameters_are_400(case_app: FastAPI) -> None:
    items = [("status", "ready")] * MAX_PARAMETERS + [("_id", "x")]
    await _refused(case_app, "/fhir/Task", items, "_id")


async def test_an_over_long_value_is_400(case_app: FastAPI) -> None:
    value = "urn:test|" + "x" * MAX_VALUE_LENGTH
    await _refused(case_app, "/fhir/Goal", {"identifier": value}, "identifier")


@pytest.mark.parametrize(
    "value",
    ["gt9999-12-31", "le9999-12-31", "9999-12-31T23:59:59.9999999Z", "lt0001-01-01T00:00+14:00"],
)
async def test_dates_past_the_calendar_are_400(case_app: FastAPI, value: str) -> None:
    await _refused(case_app, "/fhir/EpisodeOfCare", {"_lastUpdated": value}, "_lastUpdated")
    await _refused(case_app, "/fhir/Provenance", {"_lastUpdated": value}, "_lastUpdated")


async def test_the_largest_allowed_searches_are_answered(case_app: FastAPI) -> None:
    tasks = await _tasks(case_app)
    wanted = tasks[:3]
    decoys = [f"urn:test|none-{i}" for i in range(MAX_VALUES - len(wanted))]
    tokens = [_token(t) for t in wanted]
    values = ",".join([*decoys, *tokens])
    async with client(case_app) as http:
        found = (await http.get("/fhir/Task", params={"identifier": values})).json()
        assert sorted(e["resource"]["id"] for e in found["entry"]) == sorted(
            t["id"] for t in wanted
        )
        # the most parameters and values, ANDed: the same three Tasks
        fewer = ",".join([*decoys[: MAX_VALUES - MAX_PARAMETERS + 1 - len(wanted)], *tokens])
        items = [("identifier", fewer)] + [("_lastUpdated", "ge2000-01-01")] * (MAX_PARAMETERS - 1)
        again = await http.get("/fhir/Task", params=items)
        assert again.status_code == 200, again.text
        assert again.json()["total"] == len(wanted)
        late = (await http.get("/fhir/Task", params={"_lastUpdated": "gt9999-12-30"})).json()
        assert late["total"] == 0
        ids = ",".join([*(f"trace-{i}" for i in range(1, MAX_VALUES)), "trace-1"])
        provenance = await http.get("/fhir/Provenance", params={"_id": ids})
        assert provenance.status_code == 200
        assert provenance.json()["total"] >= 2  # one per case created
        targets = ",".join(f"Task/{t['id']}" for t in tasks[:MAX_VALUES])
        assert (await http.get("/fhir/Provenance", params={"target": targets})).status_code == 200
