"""Strengths recorded in assessments and used as a goal's basis (strengths-based case management):
the domain checks the goal names a strength the case has; FHIR carries the strength as an output
of the assessment Task (its element id is the strength's id) and as a note on the Goal; the
cases API stores and serves them on SQLite and PostgreSQL."""

from __future__ import annotations

import pydantic
import pytest
from fastapi import FastAPI

from api_case_helpers import case_app, case_json, check_resource, client, example
from cm_fhir.domain import Case
from cm_fhir.fhir import case_from_bundle, map_case

__all__ = ["case_app"]

CASE = "hiv-adherence-payer"


def resources(case: Case) -> list[dict]:
    return [entry["resource"] for entry in map_case(case)["entry"]]


def test_strengths_map_to_the_assessment_task_and_the_goal_notes() -> None:
    case = example(CASE)
    found = {s.id: s.description for a in case.assessments for s in a.strengths}
    assert found  # the example records strengths
    built = {g.id: g.builds_on for g in case.goals if g.builds_on}
    assert built
    out = resources(case)
    outputs = [
        o
        for r in out
        if r["resourceType"] == "Task"
        for o in r.get("output", [])
        if o["type"]["text"] == "strength"
    ]
    assert {o["id"]: o["valueString"] for o in outputs} == found
    goals = {
        r["identifier"][0]["value"].removeprefix(f"{case.id}."): r
        for r in out
        if r["resourceType"] == "Goal"
    }
    for goal_id, strength_ids in built.items():
        notes = goals[goal_id]["note"]
        assert [n["id"] for n in notes] == [f"strength-{s}" for s in strength_ids]
        assert all(found[s] in n["text"] for n, s in zip(notes, strength_ids, strict=True))
    for resource in out:
        check_resource(resource)
    assert case_from_bundle(map_case(case)) == case


def test_a_goal_cannot_build_on_a_strength_the_case_lacks() -> None:
    case = example(CASE)
    goal = case.goals[0].model_copy(update={"builds_on": ("s-unheard-of",)})
    data = case.model_dump(mode="json")
    data["goals"][0] = goal.model_dump(mode="json")
    with pytest.raises(pydantic.ValidationError, match="builds on absent strengths"):
        Case.model_validate(data)


def test_a_strength_id_is_unique_across_assessments() -> None:
    data = example(CASE).model_dump(mode="json")
    strengths = next(a["strengths"] for a in data["assessments"] if a["strengths"])
    data["assessments"][0]["strengths"] = [strengths[0]]
    with pytest.raises(pydantic.ValidationError, match="strength id"):
        Case.model_validate(data)


async def test_the_api_stores_and_serves_strengths(case_app: FastAPI) -> None:
    case = example(CASE)
    async with client(case_app) as http:
        created = await http.post("/api/cases", json=case_json(case))
        assert created.status_code == 201, created.text
        served = (await http.get(f"/api/cases/{case.id}")).json()
        bundle = (await http.get(f"/api/cases/{case.id}/fhir")).json()
    assert Case.model_validate(served) == case
    notes = [
        n
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "Goal"
        for n in e["resource"].get("note", [])
    ]
    assert sorted(n["id"] for n in notes) == sorted(
        f"strength-{s}" for g in case.goals for s in g.builds_on
    )
