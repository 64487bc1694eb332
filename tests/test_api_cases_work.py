"""Cases API work items (goals, plans, tasks, referrals, discharge plan), scopes, and the worker.

A case the worker opened from ADT messages is changed through the API; the next ADT message
builds on that change; the facade serves Provenance for both, from the trace.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from api_case_helpers import case_app, case_json, check_resource, client, example
from cm_fhir.domain import Case
from cm_fhir.workflow import PatientState
from worker_fixtures import ingest, patient_states, rows, settle_worker
from workflow_messages import Visit, hours

__all__ = ["case_app"]

GOAL = {
    "id": "g-new",
    "description": "Walks 50 m with a cane within four weeks",
    "category": "functional",
    "target": {
        "measure": {"system": "http://loinc.org", "code": "41950-7"},
        "value": {"value": "50", "unit": "m", "code": "m"},
    },
    "due": "2026-05-01",
}


def _task(task_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": task_id,
        "kind": "follow-up-call",
        "description": "Call the patient about the plan",
        "owner": {"kind": "Practitioner", "display": "A. Case Manager"},
        "authored_on": "2026-03-10T09:00:00+00:00",
        "due": "2026-03-12T09:00:00+00:00",
        **extra,
    }


async def test_work_items(case_app: FastAPI) -> None:
    case = example("stroke-inpatient-rehab")
    base = f"/api/cases/{case.id}"
    async with client(case_app) as http:
        assert (await http.post("/api/cases", json=case_json(case))).status_code == 201
        goal = await http.put(f"{base}/goals/g-new", json=GOAL)
        assert goal.status_code == 200, goal.text
        assert [g["id"] for g in goal.json()["goals"]][-1] == "g-new"
        changed = GOAL | {"lifecycle": "completed", "achievement": "achieved"}
        replaced = await http.put(f"{base}/goals/g-new", json=changed)
        assert replaced.json()["goals"][-1]["achievement"] == "achieved"
        mismatch = await http.put(f"{base}/goals/other", json=GOAL)
        assert mismatch.status_code == 422

        activity = await http.post(f"{base}/care-plan/activities", json=_task("t-new"))
        assert activity.status_code == 200, activity.text
        added = Case.model_validate(activity.json()).task("t-new")
        assert case.care_plan is not None
        assert added.care_plan == case.care_plan.id
        twice = await http.post(f"{base}/care-plan/activities", json=_task("t-new"))
        assert twice.status_code == 409

        absent_plan = await http.put(f"{base}/tasks/t-x", json=_task("t-x", care_plan="nope"))
        assert absent_plan.status_code == 422
        assert "care plan" in absent_plan.json()["error"]["message"]
        done = await http.put(
            f"{base}/tasks/t-bp-call", json=_task("t-bp-call", status="completed")
        )
        assert done.status_code == 409  # requested -> completed skips the Task state machine
        moved = await http.post(
            f"{base}/tasks/t-bp-call/status",
            json={"status": "in-progress", "business_status": "left voicemail"},
        )
        assert moved.status_code == 200
        assert Case.model_validate(moved.json()).task("t-bp-call").business_status == (
            "left voicemail"
        )
        unknown = await http.post(f"{base}/tasks/t-none/status", json={"status": "ready"})
        assert unknown.status_code == 409

        referral = case_json(case)["referrals"][0]
        accepted = await http.put(
            f"{base}/referrals/{referral['id']}",
            json=referral | {"fulfilment_status": "in-progress"},
        )
        assert accepted.status_code == 200, accepted.text
        backwards = await http.put(
            f"{base}/referrals/{referral['id']}", json=referral | {"fulfilment_status": "draft"}
        )
        assert backwards.status_code == 409

        plan = case_json(case)["discharge_plan"] | {"barriers": ["Stairs at home"]}
        discharge = await http.put(f"{base}/discharge-plan", json=plan)
        assert discharge.json()["discharge_plan"]["barriers"] == ["Stairs at home"]
        care_plan = case_json(case)["care_plan"] | {"title": "Revised plan"}
        assert (await http.put(f"{base}/care-plan", json=care_plan)).status_code == 200

        final = Case.model_validate((await http.get(base)).json())
        bundle = (await http.get(f"{base}/fhir")).json()
        check_resource(bundle)
        goal_resources = (
            await http.get("/fhir/Goal", params={"identifier": f"{case.id}.g-new"})
        ).json()
    assert final.care_plan is not None
    assert final.care_plan.title == "Revised plan"
    (entry,) = goal_resources["entry"]
    assert entry["resource"]["lifecycleStatus"] == "completed"


async def test_closed_case_takes_no_new_work(case_app: FastAPI) -> None:
    case = example("workers-comp-return-to-work")  # closed
    async with client(case_app) as http:
        await http.post("/api/cases", json=case_json(case))
        refused = await http.put(f"/api/cases/{case.id}/goals/g-new", json=GOAL)
        assert refused.status_code == 409
        assert "closed" in refused.json()["error"]["message"]


async def test_scopes(case_app: FastAPI) -> None:
    case = example("hiv-adherence-payer")
    async with client(case_app, token=None) as http:
        assert (await http.get("/api/cases")).status_code == 401
    async with client(case_app, token="reader-token") as http:
        refused = await http.post("/api/cases", json=case_json(case))
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "forbidden"
        assert (await http.get("/api/cases")).status_code == 200
    async with client(case_app, token="smart-all-token") as http:
        assert (await http.get("/api/cases")).status_code == 403
    async with client(case_app, token="writer-token") as http:
        assert (await http.post("/api/cases", json=case_json(case))).status_code == 201
        changed = await http.post(f"/api/cases/{case.id}/status", json={"status": "on-hold"})
        assert changed.status_code == 200


async def test_worker_case_changed_through_the_api_survives_the_next_message(
    case_app: FastAPI, worker_engine: AsyncEngine
) -> None:
    visit = Visit(mrn="MRN-API-1", visit="V-API-1")
    await ingest(worker_engine, [visit.raw("A01", "CTRL-1", hours(0))])
    await settle_worker(worker_engine)
    async with client(case_app) as http:
        (summary,) = (await http.get("/api/cases", params={"patient": "MRN-API-1"})).json()["items"]
        case_id = summary["id"]
        added = await http.put(f"/api/cases/{case_id}/goals/g-new", json=GOAL)
        assert added.status_code == 200, added.text
    await ingest(
        worker_engine,
        [visit.raw("A03", "CTRL-2", hours(48), disposition="01", discharge=hours(48))],
    )
    await settle_worker(worker_engine)

    (state_row,) = [r for r in await rows(worker_engine, patient_states) if r.document]
    state = PatientState.model_validate_json(state_row.document)
    (kept,) = state.cases
    assert [g.id for g in kept.goals] == ["g-new"]
    assert kept.status == "transition"  # the A03 was applied on top of the API change
    async with client(case_app) as http:
        stored = Case.model_validate((await http.get(f"/api/cases/{case_id}")).json())
        assert stored == kept
        provenance = (
            await http.get("/fhir/Provenance", params={"patient:identifier": "MRN-API-1"})
        ).json()
    entries = [e["resource"] for e in provenance["entry"]]
    assert provenance["total"] == 3  # A01, the API change, A03
    sources = [[x["what"]["identifier"]["value"] for x in p.get("entity", [])] for p in entries]
    # the inbox message: sender|control id|received at
    assert [[s.split("|")[:3] for s in p] for p in sources] == [
        [["ADTSYS", "NORTHSIDE", "CTRL-1"]],
        [],
        [["ADTSYS", "NORTHSIDE", "CTRL-2"]],
    ]
    assert "api: goal.put" in entries[1]["activity"]["text"]
    async with client(case_app) as http:
        for resource in entries:
            check_resource(resource)
            for target in resource["target"]:
                assert (await http.get(f"/fhir/{target['reference']}")).status_code == 200
            read = await http.get(f"/fhir/Provenance/{resource['id']}")
            assert read.json() == resource
        goal_id = next(
            t["reference"] for t in entries[1]["target"] if t["reference"].startswith("Goal/")
        )
        touched = (await http.get("/fhir/Provenance", params={"target": goal_id})).json()
        assert [e["resource"]["id"] for e in touched["entry"]] == [entries[1]["id"]]
        paged = (await http.get("/fhir/Provenance", params={"_count": "2"})).json()
        links = {link["relation"]: link["url"] for link in paged["link"]}
        rest = (await http.get(links["next"])).json()
    assert [e["resource"]["id"] for e in paged["entry"] + rest["entry"]] == [
        p["id"] for p in entries
    ]
