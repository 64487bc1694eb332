"""The hospital side of the payer exchange on SQLite and PostgreSQL: ADT events of a member with
coverage enqueue Da Vinci Alerts notifications; a review asked for through the API enqueues its PAS
request; the sync worker posts both to the payer, applies the payer's answer and keeps it, asks
again with ``Claim/$inquire`` while the review is pended, retries while the payer is away and
keeps a refusal. The payer here answers with cm-fhir's own PAS code over an in-process transport;
the two-process round trip is in ``test_payer_roundtrip.py``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from api_case_helpers import case_json, example
from api_fixtures import API_KEY
from cm_fhir.api.app import create_app
from cm_fhir.domain import ReviewDecision
from cm_fhir.errors import ConfigError
from cm_fhir.fhir.models import validate_bundle
from cm_fhir.fhir.notification import parse_notification
from cm_fhir.fhir.pas_intake import parse_pas_request
from cm_fhir.fhir.pas_response import claim_response, pas_response_bundle
from cm_fhir.mapping.payer_exchange import default_payer_exchange
from cm_fhir.mapping.registry import default_registry
from cm_fhir.profiles import default_validator, error_issues
from cm_fhir.service import Service
from cm_fhir.settings import Role, load_settings
from cm_fhir.store.case_tables import cases, outbox
from cm_fhir.store.case_writes import PayerRoute
from cm_fhir.store.payer_reviews import payer_reviews
from cm_fhir.store.tables import inbox_messages
from cm_fhir.sync.config import PayerEndpointSettings
from cm_fhir.sync.notifications import read_notification
from cm_fhir.sync.runner import SyncWorker
from worker_fixtures import ingest, rows, settle_worker
from workflow_messages import Visit, hours

SPEC = default_payer_exchange()
BASE = default_registry().canonical_base
PAYER = "http://payer.test/fhir"
ALERTS = "http://hl7.org/fhir/us/davinci-alerts/CodeSystem/notification-event"
Json = dict[str, Any]


@dataclass
class Payer:
    """A payer answering with cm-fhir's own PAS code; ``decide`` is what its reviewer decided."""

    received: list[tuple[str, Json]] = field(default_factory=list)
    decide: dict[str, Any] | None = None
    fail: int | None = None
    reply: str | None = None  # the response code of its answer to a notification

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/fhir/")
        body: Json = json.loads(request.content)
        self.received.append((path, body))
        if self.fail is not None:
            issue = {"severity": "error", "code": "transient" if self.fail >= 500 else "invalid"}
            return httpx.Response(
                self.fail, json={"resourceType": "OperationOutcome", "issue": [issue]}
            )
        if path == "$process-message":
            if self.reply is None:
                return httpx.Response(200, json={"resourceType": "Bundle", "type": "message"})
            header = {"resourceType": "MessageHeader", "response": {"code": self.reply}}
            answer = {"resourceType": "Bundle", "type": "message", "entry": [{"resource": header}]}
            return httpx.Response(200, json=answer)
        now = datetime.now(UTC)
        asked = parse_pas_request(body, SPEC, "p1")
        review = asked.review
        if self.decide is not None:
            review = review.decide(at=now, **self.decide)
        answer = claim_response(review, asked.patient, SPEC, BASE, now)
        return httpx.Response(200, json=pas_response_bundle(answer, SPEC, now))


def visit(tag: str) -> Visit:
    return Visit(mrn=f"MRN-{tag}", visit=f"V-{tag}")


async def admit(engine: AsyncEngine, v: Visit, *events: str) -> str:
    """Ingest the events of ``v`` and run a worker that tells the payer; the case id."""
    messages = [v.raw(e, f"{v.visit}-{e}", hours(n)) for n, e in enumerate(events)]
    await ingest(engine, messages)
    await settle_worker(engine, payers=(PayerRoute("payer", PAYER),))
    async with engine.connect() as connection:
        found = (await connection.execute(select(cases.c.case_id))).scalars().all()
    assert len(found) == 1
    return str(found[0])


def sync(engine: AsyncEngine, payer: Payer, **options: Any) -> SyncWorker:
    options.setdefault("inquire_interval", 0)
    endpoint = PayerEndpointSettings(name="payer", base_url=PAYER, **options)
    return SyncWorker(engine, [], payers=[endpoint], transport=httpx.MockTransport(payer.handle))


@pytest.fixture
async def hospital(worker_engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    settings = load_settings(overrides={"api_keys": API_KEY, "payer_url": PAYER})
    app = create_app(settings, engine=worker_engine)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app),
            base_url="http://cm-fhir.test",
            headers={"Authorization": f"Bearer {API_KEY}"},
        ) as http,
    ):
        yield http


async def messages(engine: AsyncEngine) -> list[Any]:
    return [r for r in await rows(engine, outbox) if r.operation is not None]


async def test_admission_transfer_and_discharge_of_a_member_are_told_to_the_payer(
    worker_engine: AsyncEngine,
) -> None:
    await admit(worker_engine, visit("a1"), "A01", "A08", "A02", "A03")
    sent = await messages(worker_engine)
    assert [r.operation for r in sent] == ["$process-message"] * 3
    assert {r.endpoint for r in sent} == {"payer"}
    bundles = [json.loads(r.bundle) for r in sent]
    codes = [b["entry"][0]["resource"]["eventCoding"] for b in bundles]
    assert codes == [
        {"system": ALERTS, "code": f"notification-{e}"} for e in ("admit", "transfer", "discharge")
    ]
    for bundle in bundles:
        validate_bundle(bundle)
        assert error_issues(default_validator().validate(bundle)) == []
        kinds = {e["resource"]["resourceType"] for e in bundle["entry"]}
        assert kinds >= {"MessageHeader", "Encounter", "Patient", "Coverage"}
        encounter = bundle["entry"][1]["resource"]
        assert encounter["identifier"][0]["value"] == "V-a1"
        coverage = next(e["resource"] for e in bundle["entry"] if "subscriberId" in e["resource"])
        assert coverage["subscriberId"] == "MEM-778"
        read = parse_notification(bundle, SPEC)  # what the payer side reads of it
        assert read.patient.identifiers[0].value == "MRN-a1"
        assert read.encounter.value == "V-a1"
        assert read.member_id == "MEM-778"
        assert read.payer is not None
        assert read.payer.display == "Example Health Plan"
        assert read.source == BASE
    assert [parse_notification(b, SPEC).kind.value for b in bundles] == [
        "admit",
        "transfer",
        "discharge",
    ]
    payer = Payer()
    async with sync(worker_engine, payer) as worker:
        assert await worker.drain() == 3
    assert [p for p, _ in payer.received] == ["$process-message"] * 3
    assert [b["identifier"] for _, b in payer.received] == [b["identifier"] for b in bundles]
    assert {r.state for r in await messages(worker_engine)} == {"sent"}


async def test_no_coverage_or_no_payer_endpoint_for_its_payer_tells_nobody(
    worker_engine: AsyncEngine,
) -> None:
    await ingest(
        worker_engine, [Visit(mrn="MRN-n1", visit="V-n1", payer=None).raw("A01", "n1", hours(0))]
    )
    await ingest(worker_engine, [visit("n2").raw("A01", "n2", hours(0))])
    elsewhere = PayerRoute("other", PAYER, frozenset({"ANOTHER-PAYER"}))
    await settle_worker(worker_engine, payers=(elsewhere,))
    assert await messages(worker_engine) == []
    assert len(await rows(worker_engine, cases)) == 2


async def test_a_review_is_sent_answered_pended_then_approved_by_inquiry(
    worker_engine: AsyncEngine, hospital: httpx.AsyncClient
) -> None:
    case_id = await admit(worker_engine, visit("r1"), "A01")
    asked = await hospital.post(
        f"/api/cases/{case_id}/utilization-reviews",
        json={"review_type": "concurrent", "level_of_care": "inpatient", "requested_days": 5},
    )
    assert asked.status_code == 200, asked.text
    url = f"/api/cases/{case_id}/utilization-reviews/ur1"
    queued = (await hospital.get(url)).json()
    assert queued["payer_exchange"]["state"] == "queued"
    assert queued["claim_response"] is None
    submit = [r for r in await messages(worker_engine) if r.operation == "Claim/$submit"]
    assert len(submit) == 1
    request = json.loads(submit[0].bundle)
    assert request["entry"][0]["resource"]["use"] == "preauthorization"
    claim_id = request["entry"][0]["resource"]["identifier"][0]
    ours = queued["request_identifier"]
    assert (ours["system"], ours["value"]) == (claim_id["system"], claim_id["value"])
    assert error_issues(default_validator().validate(request)) == []

    payer = Payer()
    async with sync(worker_engine, payer, inquire_interval=0.01) as worker:
        await worker.drain()
        pended = (await hospital.get(url)).json()
        assert pended["decision"] == "pended"
        assert pended["payer_exchange"]["state"] == "pended"
        assert pended["payer_exchange"]["next_inquiry"] is not None
        assert pended["claim_response"]["resourceType"] == "ClaimResponse"
        assert pended["claim_response"]["outcome"] == "queued"

        payer.decide = {
            "decision": ReviewDecision.APPROVED,
            "authorized_quantity": 3,
            "authorization_number": "AUTH-778-1",
            "next_review": date(2026, 3, 5),
        }
        # the answer to $submit was pended: the review is asked about again when due (on a fast
        # machine the 10 ms interval may not have passed yet: wait for the time it names)
        due = datetime.fromisoformat(pended["payer_exchange"]["next_inquiry"])
        await asyncio.sleep(max(0.0, (due - datetime.now(UTC)).total_seconds()) + 0.005)
        assert await worker.payers[0].inquire_due() == 1
    assert [p for p, _ in payer.received] == [
        "$process-message",
        "Claim/$submit",
        "Claim/$inquire",
    ]
    inquiry = payer.received[-1][1]
    assert (
        inquiry["entry"][0]["resource"]["identifier"]
        == request["entry"][0]["resource"]["identifier"]
    )
    answer = (await hospital.get(url)).json()
    assert answer["decision"] == "pended"  # kept at once; the worker applies it
    assert answer["payer_exchange"]["state"] == "decided"
    applied = await settle_worker(worker_engine)
    assert applied.processed == 1
    decided = (await hospital.get(url)).json()
    assert decided["decision"] == "approved"
    assert decided["authorized_quantity"] == 3
    assert decided["authorization_number"] == "AUTH-778-1"
    assert decided["next_review"] == "2026-03-05"
    assert decided["payer_exchange"]["state"] == "decided"
    assert decided["payer_exchange"]["next_inquiry"] is None
    kept = decided["claim_response"]
    assert kept["preAuthRef"] == "AUTH-778-1"
    assert kept["outcome"] == "complete"
    async with worker_engine.connect() as connection:
        row = (await connection.execute(select(payer_reviews))).one()
    assert json.loads(row.claim_response) == kept


async def test_a_payer_away_is_retried_and_a_refusal_is_kept(
    worker_engine: AsyncEngine, hospital: httpx.AsyncClient
) -> None:
    case_id = await admit(worker_engine, visit("f1"), "A01")
    asked = await hospital.post(
        f"/api/cases/{case_id}/utilization-reviews",
        json={"review_type": "admission", "level_of_care": "inpatient", "requested_days": 2},
    )
    assert asked.status_code == 200, asked.text
    payer = Payer(fail=503)
    async with sync(worker_engine, payer) as worker:
        await worker.drain()
        waiting = await messages(worker_engine)
        assert {r.state for r in waiting} == {"pending"}
        assert all(r.next_attempt_at is not None for r in waiting)
        assert len(payer.received) == 1  # the patient's later message waits behind the first
        payer.fail = 400
        async with worker_engine.begin() as connection:
            await connection.execute(update(outbox).values(next_attempt_at=None))
        await worker.drain()
    states = {r.operation: r.state for r in await messages(worker_engine)}
    assert states == {"$process-message": "failed", "Claim/$submit": "failed"}
    failed = await hospital.get(f"/api/cases/{case_id}/utilization-reviews/ur1")
    exchange = failed.json()["payer_exchange"]
    assert exchange["state"] == "failed"
    assert "400" in exchange["last_error"]
    assert failed.json()["decision"] == "pended"


async def test_without_a_payer_endpoint_a_review_is_recorded_and_nothing_is_sent(
    worker_engine: AsyncEngine, worker_http: httpx.AsyncClient
) -> None:
    case_id = await admit(worker_engine, visit("w1"), "A01")
    asked = await worker_http.post(
        f"/api/cases/{case_id}/utilization-reviews",
        json={"review_type": "concurrent", "level_of_care": "inpatient", "requested_days": 1},
    )
    assert asked.status_code == 200, asked.text
    assert [r.operation for r in await messages(worker_engine)] == ["$process-message"]
    read = (await worker_http.get(f"/api/cases/{case_id}/utilization-reviews/ur1")).json()
    assert read["payer_exchange"] is None
    assert read["decision"] == "pended"


def test_payer_url_is_one_endpoint_with_its_token_and_the_sync_role_runs_for_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CM_FHIR_PAYER__TOKEN", "payer-secret-0123456789")
    monkeypatch.setenv("CM_FHIR_PAYER__INQUIRE_INTERVAL", "12.5")
    settings = load_settings(overrides={"api_keys": API_KEY, "payer_url": PAYER})
    (payer,) = settings.payer_endpoints
    assert (payer.name, payer.base_url, payer.inquire_interval) == ("payer", PAYER, 12.5)
    assert payer.auth.kind == "bearer"
    assert payer.auth.token is not None
    assert payer.auth.token.get_secret_value() == "payer-secret-0123456789"
    assert settings.endpoints == ()
    assert Role.SYNC in Service(settings).roles
    assert Role.SYNC not in Service(load_settings(overrides={"api_keys": API_KEY})).roles


def test_a_payer_endpoint_may_not_share_an_ehr_endpoints_name() -> None:
    settings = load_settings(
        overrides={
            "api_keys": API_KEY,
            "payer_url": PAYER,
            "ehr": {"endpoints": [{"name": "payer", "base_url": "http://ehr.test/fhir"}]},
        }
    )
    with pytest.raises(ConfigError, match="share the name payer"):
        Service(settings)


def backport(number: int, focus: str, resource: Json | None = None) -> Json:
    """An R4 Subscription notification (R5 Backport) of one event, full-resource or id-only."""
    parameters = [
        {"name": "subscription", "valueReference": {"reference": f"{PAYER}/Subscription/s1"}},
        {"name": "type", "valueCode": "event-notification"},
        {"name": "events-since-subscription-start", "valueString": str(number)},
        {
            "name": "notification-event",
            "part": [
                {"name": "event-number", "valueString": str(number)},
                {"name": "focus", "valueReference": {"reference": focus}},
            ],
        },
    ]
    entries: list[Json] = [{"resource": {"resourceType": "Parameters", "parameter": parameters}}]
    if resource is not None:
        entries.append({"fullUrl": focus, "resource": resource})
    return {"resourceType": "Bundle", "type": "history", "entry": entries}


async def test_a_payer_that_notifies_brings_the_decision_without_polling(
    worker_engine: AsyncEngine,
) -> None:
    secret = "payer-notification-secret-0123"
    settings = load_settings(
        overrides={
            "api_keys": API_KEY,
            "payer": {
                "endpoints": [{"name": "payer", "base_url": PAYER, "notification_secret": secret}]
            },
        }
    )
    app = create_app(settings, engine=worker_engine)
    case_id = await admit(worker_engine, visit("s1"), "A01")
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app), base_url="http://cm-fhir.test"
        ) as http,
    ):
        auth = {"Authorization": f"Bearer {API_KEY}"}
        asked = await http.post(
            f"/api/cases/{case_id}/utilization-reviews",
            json={
                "review_type": "concurrent",
                "level_of_care": "inpatient",
                "requested_days": 4,
            },
            headers=auth,
        )
        assert asked.status_code == 200, asked.text
        payer = Payer()
        async with sync(worker_engine, payer) as worker:  # no polling: interval 0
            await worker.drain()
        url = f"/api/cases/{case_id}/utilization-reviews/ur1"
        assert (await http.get(url, headers=auth)).json()["payer_exchange"]["state"] == "pended"
        request = payer.received[-1][1]
        asked_review = parse_pas_request(request, SPEC, "p1")
        now = datetime.now(UTC)
        approved = asked_review.review.decide(
            ReviewDecision.APPROVED, now, authorized_quantity=2, authorization_number="N-77"
        )
        answer = claim_response(approved, asked_review.patient, SPEC, BASE, now)
        path = "/fhir/subscription-notification/payer"
        refused = await http.post(path, json=backport(1, f"{PAYER}/ClaimResponse/c1", answer))
        assert refused.status_code == 401
        notified = await http.post(
            path,
            json=backport(1, f"{PAYER}/ClaimResponse/c1", answer),
            headers={"Authorization": f"Bearer {secret}"},
        )
        assert notified.status_code == 200, notified.text
        assert "received 1" in notified.json()["issue"][0]["details"]["text"]
        await settle_worker(worker_engine)
        read = (await http.get(url, headers=auth)).json()
        assert read["decision"] == "approved"
        assert read["authorized_quantity"] == 2
        assert read["authorization_number"] == "N-77"
        assert read["claim_response"] == answer
        assert read["payer_exchange"]["state"] == "decided"
        # a change of mind is refused: kept as received, flagged, the decision stands
        later = datetime.now(UTC)
        denied = asked_review.review.decide(ReviewDecision.DENIED, later, reason="No.")
        other = claim_response(denied, asked_review.patient, SPEC, BASE, later)
        again = await http.post(
            path,
            json=backport(2, f"{PAYER}/ClaimResponse/c1", other),
            headers={"Authorization": f"Bearer {secret}"},
        )
        assert again.status_code == 200, again.text
        await settle_worker(worker_engine)
        read = (await http.get(url, headers=auth)).json()
        assert read["decision"] == "approved"
        assert read["claim_response"] == other
    fhir_rows = [r for r in await rows(worker_engine, inbox_messages) if r.format == "fhir"]
    assert [(r.message_type, r.state) for r in fhir_rows] == [
        ("CLAIMRESPONSE", "processed"),
        ("CLAIMRESPONSE", "needs_attention"),
    ]


async def test_an_id_only_notification_makes_pended_reviews_due_for_an_inquiry(
    worker_engine: AsyncEngine, hospital: httpx.AsyncClient
) -> None:
    case_id = await admit(worker_engine, visit("s2"), "A01")
    asked = await hospital.post(
        f"/api/cases/{case_id}/utilization-reviews",
        json={"review_type": "concurrent", "level_of_care": "inpatient", "requested_days": 4},
    )
    assert asked.status_code == 200, asked.text
    payer = Payer()
    async with sync(worker_engine, payer) as worker:
        await worker.drain()
        delivery = worker.payers[0]
        assert await delivery.inquire_due() == 0  # no polling configured
        result = await delivery.notify(read_notification(backport(1, f"{PAYER}/ClaimResponse/c9")))
        assert result.counts == {"inquire": 1}
        payer.decide = {"decision": ReviewDecision.DENIED, "reason": "Not medically necessary."}
        assert await delivery.inquire_due() == 1
    await settle_worker(worker_engine)
    read = (await hospital.get(f"/api/cases/{case_id}/utilization-reviews/ur1")).json()
    assert read["decision"] == "denied"
    assert read["decision_reason"] == "Not medically necessary."


async def test_a_taken_message_whose_answer_is_not_json_is_sent_not_resent(
    worker_engine: AsyncEngine,
) -> None:
    await admit(worker_engine, visit("j1"), "A01")

    def plain(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="accepted")

    endpoint = PayerEndpointSettings(name="payer", base_url=PAYER, inquire_interval=0)
    async with SyncWorker(
        worker_engine, [], payers=[endpoint], transport=httpx.MockTransport(plain)
    ) as worker:
        assert await worker.drain() == 1
    assert [r.state for r in await messages(worker_engine)] == ["sent"]


async def test_a_decision_on_a_case_made_through_the_api_is_applied_by_the_worker(
    worker_engine: AsyncEngine, hospital: httpx.AsyncClient
) -> None:
    # a case made through the cases API is in no patient state until a decision is stored for it
    made = await hospital.post("/api/cases", json=case_json(example("stroke-inpatient-rehab")))
    assert made.status_code == 201, made.text
    url = "/api/cases/HOSP-2026-0412/utilization-reviews"
    asked = await hospital.post(
        url, json={"review_type": "concurrent", "level_of_care": "irf", "requested_days": 10}
    )
    assert asked.status_code == 200, asked.text
    payer = Payer(decide={"decision": ReviewDecision.APPROVED, "authorized_quantity": 4})
    async with sync(worker_engine, payer) as worker:
        await worker.drain()
    assert [p for p, _ in payer.received] == ["Claim/$submit"]
    applied = await settle_worker(worker_engine)
    assert (applied.processed, applied.needs_attention) == (1, 0)
    decided = (await hospital.get(f"{url}/ur1")).json()
    assert (decided["decision"], decided["authorized_quantity"]) == ("approved", 4)


async def test_a_notification_the_payer_answers_with_an_error_is_not_counted_sent(
    worker_engine: AsyncEngine,
) -> None:
    """200 with a response message is the payer's answer, not its acceptance: ``transient-error``
    is sent again later, ``fatal-error`` ends ``failed`` with the reply kept; ``ok`` is sent."""
    await admit(worker_engine, visit("r1"), "A01")
    payer = Payer(reply="transient-error")
    async with sync(worker_engine, payer) as worker:
        await worker.drain()
        [row] = await messages(worker_engine)
        assert row.state == "pending"
        assert row.next_attempt_at is not None
        assert "transient-error" in row.last_error
        payer.reply = "fatal-error"
        async with worker_engine.begin() as connection:
            await connection.execute(update(outbox).values(next_attempt_at=None))
        await worker.drain()
        [row] = await messages(worker_engine)
        assert row.state == "failed"
        assert "fatal-error" in row.last_outcome
    ok = Payer(reply="ok")
    await ingest(worker_engine, [visit("r1").raw("A03", "V-r1-A03", hours(5))])
    await settle_worker(worker_engine, payers=(PayerRoute("payer", PAYER),))
    async with sync(worker_engine, ok) as worker:
        await worker.drain()
    states = [r.state for r in await messages(worker_engine)]
    assert states == ["failed", "sent"]
