"""A payer's answer posted by hand to ``.../utilization-reviews/{id}/claim-response`` goes
through the inbox, over real HTTP, on SQLite and PostgreSQL: stored (a ``CLAIMRESPONSE`` FHIR
message) and answered 202 with the message to poll, kept on the review as received, applied by
the worker (traced, naming the message), stored once when posted twice; an answer contradicting
the decision made is flagged ``needs_attention``, never applied; an answer for another request is
refused 422 and nothing is stored."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from api_case_helpers import API_KEY, case_app, case_json, example
from cm_fhir.domain import Case, ReviewDecision
from cm_fhir.fhir.pas_response import claim_response, pas_response_bundle
from cm_fhir.mapping.payer_exchange import default_payer_exchange
from cm_fhir.store.case_tables import trace
from cm_fhir.store.tables import inbox_messages
from live_api import serving
from worker_fixtures import rows, settle_worker

__all__ = ["case_app"]

CASE = "HOSP-2026-0412"
REVIEW = f"/api/cases/{CASE}/utilization-reviews/ur1"
SPEC = default_payer_exchange()
Json = dict[str, Any]


@pytest.fixture
async def http(case_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A real server over the app, with the stroke case made through the API and a review."""
    async with (
        serving(case_app) as port,
        httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {API_KEY}"}
        ) as client,
    ):
        made = await client.post("/api/cases", json=case_json(example("stroke-inpatient-rehab")))
        assert made.status_code == 201, made.text
        asked = await client.post(
            f"/api/cases/{CASE}/utilization-reviews",
            json={"review_type": "concurrent", "level_of_care": "irf", "requested_days": 10},
        )
        assert asked.status_code == 200, asked.text
        yield client


async def answer(client: httpx.AsyncClient, decision: ReviewDecision, name: str) -> Json:
    """The payer's answer to the hospital's review (as a payer builds it), a PAS response
    Bundle; ``name`` is the ClaimResponse's identifier."""
    case = Case.model_validate((await client.get(f"/api/cases/{CASE}")).json())
    review = case.utilization_review("ur1")
    at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    days = 3 if decision == ReviewDecision.APPROVED else None
    number = "AUTH-77" if days else None
    decided = review.decide(decision, at, authorized_quantity=days, authorization_number=number)
    response = claim_response(decided, case.patient, SPEC, "http://payer.example/fhir", at)
    response["identifier"] = [{"system": "http://payer.example/sid/cr", "value": name}]
    return pas_response_bundle(response, SPEC, at)


async def test_a_posted_answer_is_stored_then_applied_by_the_worker(
    http: httpx.AsyncClient, worker_engine: AsyncEngine
) -> None:
    approved = await answer(http, ReviewDecision.APPROVED, "CR-1")
    denied = await answer(http, ReviewDecision.DENIED, "CR-2")  # the payer's later change of mind
    taken = await http.post(f"{REVIEW}/claim-response", json=approved)
    assert taken.status_code == 202, taken.text
    (row,) = await rows(worker_engine, inbox_messages)
    assert (row.format, row.state, row.message_type) == ("fhir", "received", "CLAIMRESPONSE")
    assert taken.headers["location"] == f"/api/messages/{row.id}"
    assert taken.headers["content-location"] == REVIEW
    read = (await http.get(REVIEW)).json()
    assert read["decision"] == "pended"  # not applied in the request
    assert read["claim_response"] == approved["entry"][0]["resource"]  # kept as received
    again = await http.post(f"{REVIEW}/claim-response", json=approved)
    assert (again.status_code, again.headers["location"]) == (202, taken.headers["location"])
    assert len(await rows(worker_engine, inbox_messages)) == 1  # stored once

    await settle_worker(worker_engine)
    read = (await http.get(REVIEW)).json()
    assert (read["decision"], read["authorized_quantity"]) == ("approved", 3)
    assert read["authorization_number"] == "AUTH-77"
    assert (await http.get(taken.headers["location"])).json()["state"] == "processed"
    traced = [t for t in await rows(worker_engine, trace) if t.inbox_message_id == row.id]
    assert [(t.event, t.action) for t in traced] == [("review-decided", "review-approved")]

    # the payer changing its mind by hand is flagged, not applied
    assert (await http.post(f"{REVIEW}/claim-response", json=denied)).status_code == 202
    await settle_worker(worker_engine)
    assert (await http.get(REVIEW)).json()["decision"] == "approved"
    states = [r.state for r in await rows(worker_engine, inbox_messages)]
    assert states == ["processed", "needs_attention"]


async def test_an_answer_to_another_request_is_refused(
    http: httpx.AsyncClient, worker_engine: AsyncEngine
) -> None:
    other = await answer(http, ReviewDecision.APPROVED, "CR-9")
    other["entry"][0]["resource"]["request"]["identifier"]["value"] = "another-claim"
    refused = await http.post(f"{REVIEW}/claim-response", json=other)
    assert refused.status_code == 422
    assert "another request" in refused.text
    assert await rows(worker_engine, inbox_messages) == []
    assert (await http.get(REVIEW)).json()["claim_response"] is None
