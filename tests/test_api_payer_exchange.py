"""The payer side's other exchanges over HTTP, on SQLite and PostgreSQL: ``Claim/$submit``
recorded in the inbox with its trace, ``Claim/$inquire`` answering the current ClaimResponse,
overdue reviews in the queue and in ``/metrics``, the CapabilityStatement naming the operations."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi import FastAPI
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from sqlalchemy.ext.asyncio import AsyncEngine

from api_case_helpers import TOKENS, case_app, client
from cm_fhir.fhir.models import validate_bundle, validate_resource
from cm_fhir.fhir.pas_request import pas_inquiry_bundle, pas_request_bundle
from cm_fhir.fhir.pas_response import claim_response_of, parse_claim_response
from cm_fhir.mapping.payer_exchange import default_payer_exchange
from cm_fhir.mapping.registry import default_registry
from cm_fhir.store.audit import list_audit
from cm_fhir.store.case_tables import trace
from cm_fhir.store.queue import replay
from cm_fhir.store.tables import inbox_messages
from pas_samples import review, stroke_case
from worker_fixtures import rows, settle_worker

__all__ = ["case_app"]

SPEC = default_payer_exchange()
BASE = default_registry().canonical_base
Json = dict[str, Any]


@pytest.fixture(autouse=True)
def _tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(TOKENS, "claim-token", frozenset({"system/Claim.c"}))
    monkeypatch.setitem(TOKENS, "inquire-token", frozenset({"system/ClaimResponse.r"}))


def request(**changes: Any) -> Json:
    return pas_request_bundle(stroke_case(), review(**changes), SPEC, BASE)


def inquiry(submitted: Json) -> Json:
    return pas_inquiry_bundle(submitted)


async def post(app: FastAPI, path: str, body: Json, token: str) -> Any:
    async with client(app, token) as http:
        return await http.post(path, json=body)


async def test_a_submitted_request_is_kept_in_the_inbox_with_its_trace(
    case_app: FastAPI, worker_engine: AsyncEngine
) -> None:
    body = request()
    first = await post(case_app, "/fhir/Claim/$submit", body, "claim-token")
    assert first.status_code == 200
    again = await post(case_app, "/fhir/Claim/$submit", body, "claim-token")
    assert again.status_code == 200
    (row,) = await rows(worker_engine, inbox_messages)
    assert (row.format, row.state, row.message_type, row.trigger_event) == (
        "fhir",
        "processed",
        "CLAIM",
        "SUBMIT",
    )
    assert row.sending_facility == "test:claim-token"
    assert json.loads(row.raw) == body
    assert json.loads(row.ack_bytes) == first.json()  # the first answer, kept
    traced = [t for t in await rows(worker_engine, trace) if t.inbox_message_id == row.id]
    assert [t.action for t in traced] == ["case.create"]
    assert traced[0].rule == "pas.submit"
    assert traced[0].message_key.startswith(f"{row.sending_application}|test:claim-token|")


async def test_inquire_answers_the_current_claim_response(
    case_app: FastAPI, worker_engine: AsyncEngine
) -> None:
    body = request()
    assert (await post(case_app, "/fhir/Claim/$submit", body, "claim-token")).status_code == 200
    asked = await post(case_app, "/fhir/Claim/$inquire", inquiry(body), "inquire-token")
    assert asked.status_code == 200, asked.text
    answer = asked.json()
    validate_bundle(answer)
    response = claim_response_of(answer)
    validate_resource(response)
    assert response["outcome"] == "queued"
    assert response["request"]["identifier"] == body["entry"][0]["resource"]["identifier"][0]
    async with client(case_app, "reader-token") as http:
        (item,) = (await http.get("/api/utilization-reviews")).json()["items"]
    async with client(case_app, "writer-token") as http:
        decided = await http.post(
            f"/api/utilization-reviews/{item['review']['id']}/decision",
            json={"decision": "approved", "authorized_quantity": 5, "next_review": "2026-03-06"},
        )
    assert decided.status_code == 200
    later = await post(case_app, "/fhir/Claim/$inquire", inquiry(body), "inquire-token")
    read = parse_claim_response(claim_response_of(later.json()), SPEC)
    assert read.decision.value == "approved"
    assert read.authorized_quantity == 5
    assert str(read.next_review) == "2026-03-06"
    again = await post(case_app, "/fhir/Claim/$inquire", inquiry(body), "inquire-token")
    assert claim_response_of(again.json()) == claim_response_of(later.json())  # stable answer


async def test_inquire_refusals(case_app: FastAPI, worker_engine: AsyncEngine) -> None:
    body = request()
    assert (await post(case_app, "/fhir/Claim/$submit", body, "claim-token")).status_code == 200
    ask = inquiry(body)
    assert (await post(case_app, "/fhir/Claim/$inquire", ask, "claim-token")).status_code == 403
    other = json.loads(json.dumps(ask))
    other["entry"][0]["resource"]["identifier"][0]["value"] = "not-asked"
    missing = await post(case_app, "/fhir/Claim/$inquire", other, "inquire-token")
    assert missing.status_code == 404
    assert missing.json()["resourceType"] == "OperationOutcome"
    stranger = json.loads(json.dumps(ask))
    for entry in stranger["entry"][1:]:
        entry["resource"]["identifier"] = [{"system": "urn:oid:1.2.3", "value": "someone-else"}]
    assert (
        await post(case_app, "/fhir/Claim/$inquire", stranger, "inquire-token")
    ).status_code == 404
    bare = json.loads(json.dumps(ask))
    del bare["entry"][0]["resource"]["identifier"]
    bad = await post(case_app, "/fhir/Claim/$inquire", bare, "inquire-token")
    assert bad.status_code == 400
    assert bad.json()["issue"][0]["expression"] == ["Claim.identifier"]
    async with worker_engine.connect() as connection:
        events = await list_audit(connection)
    inquiries = [(e["action"], e["outcome"]) for e in events if e["action"] == "inquire"]
    assert ("inquire", "failure") in inquiries


async def test_overdue_reviews_in_the_queue_and_in_metrics(case_app: FastAPI) -> None:
    # Expedited and asked in March 2026: long overdue. A second, decided at once by the
    # observation rule, is neither pended nor overdue.
    assert (
        await post(case_app, "/fhir/Claim/$submit", request(), "claim-token")
    ).status_code == 200
    observation = request(id="ur2", requested_level_of_care="observation", requested_quantity=1)
    observation["entry"][0]["resource"]["identifier"][0]["value"] = "HOSP-2026-0412.ur2"
    assert (
        await post(case_app, "/fhir/Claim/$submit", observation, "claim-token")
    ).status_code == 200
    async with client(case_app, "reader-token") as http:
        overdue = (await http.get("/api/utilization-reviews", params={"overdue": "true"})).json()
        on_time = (await http.get("/api/utilization-reviews", params={"overdue": "false"})).json()
        metrics = (await http.get("/metrics")).text
    assert [i["overdue"] for i in overdue["items"]] == [True]
    assert [i["review"]["decision"] for i in on_time["items"]] == ["approved"]
    assert "cm_fhir_utilization_reviews_pended 1.0" in metrics
    assert "cm_fhir_utilization_reviews_overdue 1.0" in metrics


async def test_the_capability_statement_names_the_payer_operations(case_app: FastAPI) -> None:
    async with client(case_app, None) as http:
        statement = (await http.get("/fhir/metadata")).json()
    CapabilityStatement.model_validate(statement)
    rest = statement["rest"][0]
    claim = next(r for r in rest["resource"] if r["type"] == "Claim")
    assert sorted(o["name"] for o in claim["operation"]) == ["inquire", "submit"]
    assert [o["name"] for o in rest["operation"]] == ["process-message"]


async def test_the_messages_api_lists_fhir_messages_by_format_and_type(
    case_app: FastAPI,
) -> None:
    assert (
        await post(case_app, "/fhir/Claim/$submit", request(), "claim-token")
    ).status_code == 200
    async with client(case_app, "reader-token") as http:
        listed = (await http.get("/api/messages", params={"format": "fhir"})).json()
        by_type = (
            await http.get("/api/messages", params={"message_type": "claim", "event": "submit"})
        ).json()
        hl7 = (await http.get("/api/messages", params={"format": "hl7v2"})).json()
    assert [(m["format"], m["message_type"]) for m in listed["items"]] == [("fhir", "CLAIM")]
    assert [m["id"] for m in by_type["items"]] == [m["id"] for m in listed["items"]]
    assert hl7["items"] == []


async def test_a_replayed_request_is_ignored_not_failed(
    case_app: FastAPI, worker_engine: AsyncEngine
) -> None:
    assert (
        await post(case_app, "/fhir/Claim/$submit", request(), "claim-token")
    ).status_code == 200
    assert await replay(worker_engine) == 1
    await settle_worker(worker_engine)
    (row,) = await rows(worker_engine, inbox_messages)
    assert row.state == "ignored"
    assert row.reason.startswith("not applied: a CLAIM message")
