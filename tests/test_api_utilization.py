"""The payer side over HTTP, on SQLite and PostgreSQL: ``POST /fhir/Claim/$submit`` records a
pended review (or decides it by a rule) and answers the ClaimResponse first; the reviewer's queue
and decision; bad Bundles get a 400 OperationOutcome naming the element; scopes and audit."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from api_case_helpers import TOKENS, case_app, client
from cm_fhir.domain import LevelOfCare
from cm_fhir.fhir.models import validate_bundle
from cm_fhir.fhir.pas_request import pas_request_bundle
from cm_fhir.fhir.pas_response import claim_response_of, parse_claim_response
from cm_fhir.mapping.payer_exchange import default_payer_exchange
from cm_fhir.mapping.registry import default_registry
from cm_fhir.store.audit import list_audit
from pas_samples import review, stroke_case

__all__ = ["case_app"]

SPEC = default_payer_exchange()
BASE = default_registry().canonical_base
SUBMIT = "/fhir/Claim/$submit"
Json = dict[str, Any]


@pytest.fixture(autouse=True)
def _claim_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(TOKENS, "claim-v2-token", frozenset({"system/Claim.c"}))
    monkeypatch.setitem(TOKENS, "claim-v1-token", frozenset({"system/Claim.write"}))
    monkeypatch.setitem(TOKENS, "claim-read-token", frozenset({"system/Claim.r", "system/*.read"}))


def request(**changes: Any) -> Json:
    return pas_request_bundle(stroke_case(), review(**changes), SPEC, BASE)


async def submit(app: FastAPI, body: Json, token: str = "claim-v2-token") -> Json:
    async with client(app, token) as http:
        answer = await http.post(SUBMIT, json=body)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/fhir+json")
    bundle: Json = answer.json()
    validate_bundle(bundle)
    return bundle


async def queue(app: FastAPI, status: str | None = "pended") -> list[Json]:
    async with client(app, "reader-token") as http:
        params = {"status": status} if status else {}
        answer = await http.get("/api/utilization-reviews", params=params)
    assert answer.status_code == 200, answer.text
    items: list[Json] = answer.json()["items"]
    return items


async def test_a_request_is_pended_queued_decided_and_answered_again(case_app: FastAPI) -> None:
    answer = await submit(case_app, request())
    response = claim_response_of(answer)
    assert response["outcome"] == "queued"
    assert response["request"]["identifier"]["value"] == "HOSP-2026-0412.ur1"
    pended = await queue(case_app)
    assert len(pended) == 1
    item = pended[0]
    assert item["review"]["requested_level_of_care"] == "irf"
    assert item["review"]["requested_quantity"] == 10
    assert item["overdue"] is True  # asked in March 2026, expedited: long past 72 hours
    review_id = item["review"]["id"]
    async with client(case_app, "writer-token") as http:
        decided = await http.post(
            f"/api/utilization-reviews/{review_id}/decision",
            json={"decision": "approved", "authorized_quantity": 3, "next_review": "2026-03-05"},
        )
    assert decided.status_code == 200, decided.text
    assert decided.json()["authorized_quantity"] == 3
    assert await queue(case_app) == []
    assert [i["review"]["decision"] for i in await queue(case_app, None)] == ["approved"]
    again = parse_claim_response(claim_response_of(await submit(case_app, request())), SPEC)
    assert (again.decision.value, again.authorized_quantity) == ("approved", 3)
    assert again.authorization_number == review_id
    assert str(again.next_review) == "2026-03-05"
    assert len(await queue(case_app, None)) == 1  # the resend added nothing


async def test_a_second_request_for_the_member_lands_on_the_same_payer_case(
    case_app: FastAPI,
) -> None:
    await submit(case_app, request())
    second = request(id="ur2")
    await submit(case_app, second)
    items = await queue(case_app)
    assert len(items) == 2
    assert len({i["case_id"] for i in items}) == 1
    async with client(case_app, "reader-token") as http:
        case = await http.get(f"/api/cases/{items[0]['case_id']}")
    assert case.json()["programme"] == "payer-case-management"
    assert case.json()["coverage"][0]["member_id"] == "MBR-55512309"


async def test_a_rule_decides_at_once(case_app: FastAPI) -> None:
    body = request(requested_level_of_care=LevelOfCare.OBSERVATION, requested_quantity=3)
    outcome = parse_claim_response(claim_response_of(await submit(case_app, body)), SPEC)
    assert outcome.decision.value == "partially-approved"
    assert outcome.authorized_quantity == 2  # the rule caps observation at 2 days
    assert await queue(case_app) == []


async def test_bundles_from_other_clients_are_accepted_with_every_entry(case_app: FastAPI) -> None:
    from test_pas_mapping import foreign_bundle

    response = claim_response_of(await submit(case_app, foreign_bundle(), "claim-v1-token"))
    assert response["outcome"] == "queued"
    (item,) = await queue(case_app)
    assert item["review"]["requested_quantity"] == 8


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (b"not json", "Bundle"),
        ({"resourceType": "Patient"}, "Bundle"),
        ({"resourceType": "Bundle", "type": "collection", "entry": []}, "Bundle.entry"),
        ("no-claim", "Bundle.entry[0]"),
        ("no-identifier", "Claim.identifier"),
        ("not-r4", "Claim.priority"),
    ],
)
async def test_a_bundle_without_a_usable_claim_is_a_400_operation_outcome(
    case_app: FastAPI, worker_engine: AsyncEngine, body: Any, where: str
) -> None:
    if body == "no-claim":
        body = request()
        body["entry"] = body["entry"][1:]
    elif body == "not-r4":
        body = request()
        body["entry"][0]["resource"]["priority"] = "stat"
    elif body == "no-identifier":
        body = request()
        del body["entry"][0]["resource"]["identifier"]
    async with client(case_app, "claim-v2-token") as http:
        if isinstance(body, bytes):
            answer = await http.post(SUBMIT, content=body)
        else:
            answer = await http.post(SUBMIT, json=body)
    assert answer.status_code == 400, answer.text
    outcome = answer.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"][0].startswith(where)
    assert "MRN100234" not in answer.text
    assert await queue(case_app, None) == []


async def test_scopes_are_checked_and_every_exchange_is_audited(
    case_app: FastAPI, worker_engine: AsyncEngine
) -> None:
    for token, status in (("claim-read-token", 403), ("reader-token", 403), (None, 401)):
        async with client(case_app, token) as http:
            answer = await http.post(SUBMIT, json=request())
        assert answer.status_code == status, token
    async with client(case_app, "reader-token") as http:
        refused = await http.post(
            "/api/utilization-reviews/ur-x/decision", json={"decision": "denied"}
        )
    assert refused.status_code == 403
    await submit(case_app, request())
    async with client(case_app, "writer-token") as http:
        missing = await http.post(
            "/api/utilization-reviews/ur-x/decision", json={"decision": "denied"}
        )
    assert missing.status_code == 404
    review_id = (await queue(case_app))[0]["review"]["id"]
    async with client(case_app, "writer-token") as http:
        denied = await http.post(
            f"/api/utilization-reviews/{review_id}/decision",
            json={"decision": "denied", "reason": "criteria not met"},
        )
        assert denied.status_code == 200, denied.text
        changed_mind = await http.post(
            f"/api/utilization-reviews/{review_id}/decision", json={"decision": "approved"}
        )
    assert changed_mind.status_code == 409
    async with worker_engine.connect() as connection:
        rows = await list_audit(connection)
    seen = {(r["action"], r["entity_type"], r["outcome"]) for r in rows}
    assert ("submit", "utilization-review", "success") in seen
    assert ("decide", "utilization-review", "success") in seen
    assert ("search", "utilization-review", "success") in seen
    submitted = [
        r for r in rows if (r["action"], r["entity_type"]) == ("submit", "utilization-review")
    ]
    assert submitted[0]["entity_id"] == review_id


async def test_a_bad_decision_body_is_refused_and_changes_nothing(case_app: FastAPI) -> None:
    await submit(case_app, request())
    review_id = (await queue(case_app))[0]["review"]["id"]
    async with client(case_app, "writer-token") as http:
        bad = await http.post(
            f"/api/utilization-reviews/{review_id}/decision",
            json={"decision": "denied", "authorized_quantity": 3},
        )
        unknown = await http.post(
            f"/api/utilization-reviews/{review_id}/decision", json={"decision": "maybe"}
        )
    assert bad.status_code == 409, bad.text
    assert unknown.status_code == 422
    (still,) = await queue(case_app)
    assert still["review"]["decision"] == "pended"
    assert still["review"]["authorized_quantity"] is None


async def test_concurrent_resends_record_one_review(case_app: FastAPI) -> None:
    await submit(case_app, request())
    body = request(id="ur2")
    async with client(case_app, "claim-v2-token") as http:
        answers = await asyncio.gather(*(http.post(SUBMIT, json=body) for _ in range(6)))
    assert [a.status_code for a in answers] == [200] * 6, [a.text[:200] for a in answers]
    items = await queue(case_app)
    assert len(items) == 2
    assert len({i["review"]["id"] for i in items}) == 2
