"""The hospital side over HTTP, and a round trip through the payer side, on SQLite and
PostgreSQL: the hospital asks for a review on its case, sends the PAS request it gets from the API
to ``Claim/$submit``, the payer's reviewer approves 3 days, and the payer's answer applied to the
hospital case shows the decision, the 3 authorized days, the authorization number and the next
review date once the worker has applied it (posted by hand: stored in the inbox, answered 202).
(One app plays both sides here; no payer endpoint is configured.)"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from api_case_helpers import TOKENS, case_app, case_json, client, example
from cm_fhir.fhir.models import validate_bundle
from worker_fixtures import settle_worker

__all__ = ["case_app"]

CASE = "HOSP-2026-0412"
Json = dict[str, Any]


@pytest.fixture(autouse=True)
def _claim_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(TOKENS, "payer-client-token", frozenset({"system/Claim.c"}))


async def _ask(app: FastAPI, **body: Any) -> Json:
    async with client(app, "writer-token") as http:
        created = await http.post("/api/cases", json=case_json(example("stroke-inpatient-rehab")))
        assert created.status_code == 201, created.text
        asked = await http.post(f"/api/cases/{CASE}/utilization-reviews", json=body)
    assert asked.status_code == 200, asked.text
    case: Json = asked.json()
    return case


async def test_a_review_goes_to_the_payer_and_its_decision_comes_back(
    case_app: FastAPI, worker_engine: AsyncEngine
) -> None:
    case = await _ask(
        case_app,
        review_type="concurrent",
        level_of_care="irf",
        requested_days=10,
        urgency="expedited",
        clinical_summary="FIM motor 38; tolerates 3 h of therapy a day.",
        admitted="2026-03-01",
    )
    (review,) = case["utilization_reviews"]
    assert (review["id"], review["decision"], review["payer"]["display"]) == (
        "ur1",
        "pended",
        "Lakeside Health Plan",
    )
    base = f"/api/cases/{CASE}/utilization-reviews/ur1"
    async with client(case_app, "reader-token") as http:
        pas = await http.get(f"{base}/pas-request")
    assert pas.status_code == 200, pas.text
    bundle = pas.json()
    validate_bundle(bundle)
    async with client(case_app, "payer-client-token") as http:
        pended = await http.post("/fhir/Claim/$submit", json=bundle)
    assert pended.json()["entry"][0]["resource"]["outcome"] == "queued"
    async with client(case_app, "reader-token") as http:
        queue = (await http.get("/api/utilization-reviews?status=pended")).json()["items"]
    payer_review = queue[0]["review"]["id"]
    async with client(case_app, "writer-token") as http:
        decided = await http.post(
            f"/api/utilization-reviews/{payer_review}/decision",
            json={"decision": "approved", "authorized_quantity": 3, "next_review": "2026-03-05"},
        )
        assert decided.status_code == 200, decided.text
    async with client(case_app, "payer-client-token") as http:
        answer = (await http.post("/fhir/Claim/$submit", json=bundle)).json()
    async with client(case_app, "writer-token") as http:
        taken = await http.post(f"{base}/claim-response", json=answer)
        assert taken.status_code == 202, taken.text
        again = await http.post(f"{base}/claim-response", json=answer)  # the same answer twice
        assert again.status_code == 202, again.text
        assert again.headers["location"] == taken.headers["location"]  # stored once
    await settle_worker(worker_engine)  # the worker applies it
    async with client(case_app, "writer-token") as http:
        read = (await http.get(base)).json()
    assert read["decision"] == "approved"
    assert read["authorized_quantity"] == 3
    assert read["authorization_number"] == payer_review
    assert read["next_review"] == "2026-03-05"
    assert read["claim_response"] == answer["entry"][0]["resource"]  # kept as received
    assert read["payer_exchange"]["state"] == "decided"
    assert read["payer_exchange"]["endpoint"] == ""  # posted to the API, not sent by cm-fhir


async def test_the_hospital_side_refuses_what_it_cannot_use(case_app: FastAPI) -> None:
    await _ask(case_app, review_type="admission", level_of_care="inpatient", requested_days=3)
    base = f"/api/cases/{CASE}/utilization-reviews"
    async with client(case_app, "writer-token") as http:
        assert (await http.get(f"{base}/ur9")).status_code == 404
        assert (await http.get("/api/cases/NOPE/utilization-reviews/ur1")).status_code == 404
        bad = await http.post(f"{base}/ur1/claim-response", content=b"{")
        assert bad.status_code == 400
        not_a_response = await http.post(
            f"{base}/ur1/claim-response", json={"resourceType": "Bundle", "entry": []}
        )
        assert not_a_response.status_code == 422
        unknown = await http.post(
            base, json={"review_type": "admission", "level_of_care": "hospice", "requested_days": 1}
        )
        assert unknown.status_code == 422
    async with client(case_app, "reader-token") as http:
        refused = await http.post(
            base, json={"review_type": "admission", "level_of_care": "snf", "requested_days": 1}
        )
        assert refused.status_code == 403
        assert (await http.get(f"{base}/ur1")).json()["decision"] == "pended"
