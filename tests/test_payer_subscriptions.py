"""PAS Subscriptions on the payer side, on SQLite and PostgreSQL: ``/fhir/Subscription`` checked
and stored per owner; a decision notifies the submitter's subscriptions only, through the
outbox, posted over real HTTP to the subscriber's endpoint and retried when it fails."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi import FastAPI, Request, Response
from sqlalchemy.ext.asyncio import AsyncEngine

from api_case_helpers import TOKENS, case_app, client
from cm_fhir.fhir.models import validate_bundle
from cm_fhir.fhir.pas_request import pas_request_bundle
from cm_fhir.fhir.subscription import FILTER_CRITERIA, PAS_TOPIC, PAYLOAD_CONTENT
from cm_fhir.mapping.payer_exchange import default_payer_exchange
from cm_fhir.mapping.registry import default_registry
from cm_fhir.store.case_tables import outbox
from cm_fhir.sync.config import EhrSettings
from cm_fhir.sync.notifications import read_notification
from cm_fhir.sync.subscription_delivery import SubscriptionDelivery
from live_api import serving
from pas_samples import review, stroke_case
from worker_fixtures import rows

__all__ = ["case_app"]

SPEC = default_payer_exchange()
BASE = default_registry().canonical_base
SCOPES = frozenset({"system/Claim.c", "system/Subscription.crd"})
Json = dict[str, Any]


@pytest.fixture(autouse=True)
def _tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(TOKENS, "hospital-a", SCOPES)
    monkeypatch.setitem(TOKENS, "hospital-b", SCOPES)
    monkeypatch.setitem(TOKENS, "claim-only", frozenset({"system/Claim.c"}))


@dataclass
class Receiver:
    """A subscriber's endpoint: records each POST; answers ``statuses`` in turn, then 200."""

    statuses: list[int] = field(default_factory=list)
    got: list[tuple[str, str | None, Json]] = field(default_factory=list)
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    app = FastAPI()

    @app.post("/{path}")
    async def take(path: str, request: Request) -> Response:
        found.got.append((path, request.headers.get("authorization"), await request.json()))
        return Response(status_code=found.statuses.pop(0) if found.statuses else 200)

    async with serving(app) as port:
        found.port = port
        yield found


def subscription(endpoint: str, **changes: Any) -> Json:
    body: Json = {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "results of pended requests",
        "criteria": PAS_TOPIC,
        "channel": {
            "type": "rest-hook",
            "endpoint": endpoint,
            "payload": "application/fhir+json",
            "_payload": {"extension": [{"url": PAYLOAD_CONTENT, "valueCode": "full-resource"}]},
            "header": ["Authorization: Bearer subscriber-secret"],
        },
    }
    body.update(changes)
    return body


async def subscribe(app: FastAPI, token: str, body: Json) -> Json:
    async with client(app, token) as http:
        created = await http.post("/fhir/Subscription", json=body)
    assert created.status_code == 201, created.text
    assert created.headers["location"].endswith(f"/fhir/Subscription/{created.json()['id']}")
    answer: Json = created.json()
    return answer


async def submit_and_decide(app: FastAPI, token: str) -> None:
    body = pas_request_bundle(stroke_case(), review(), SPEC, BASE)
    async with client(app, token) as http:
        assert (await http.post("/fhir/Claim/$submit", json=body)).status_code == 200
    async with client(app, "writer-token") as http:
        queue = (await http.get("/api/utilization-reviews", params={"status": "pended"})).json()
        review_id = queue["items"][0]["review"]["id"]
        decided = await http.post(
            f"/api/utilization-reviews/{review_id}/decision",
            json={"decision": "approved", "authorized_quantity": 3},
        )
    assert decided.status_code == 200, decided.text


async def notifications(engine: AsyncEngine) -> list[Any]:
    """The outbox rows of subscriptions (the payer case's own Bundles wait beside them)."""
    return [r for r in await rows(engine, outbox) if r.endpoint.startswith("subscription/")]


async def deliver(engine: AsyncEngine, **config: Any) -> SubscriptionDelivery:
    delivery = SubscriptionDelivery(engine, EhrSettings(**config), "test")
    try:
        await delivery.run_once()
    finally:
        await delivery.aclose()
    return delivery


async def test_a_subscription_is_created_read_by_its_owner_only_and_deleted(
    case_app: FastAPI,
) -> None:
    created = await subscribe(case_app, "hospital-a", subscription("https://a.example.org/n"))
    assert created["status"] == "active"
    assert created["channel"]["header"] == ["Authorization: (withheld)"]
    path = f"/fhir/Subscription/{created['id']}"
    async with client(case_app, "hospital-a") as http:
        read = await http.get(path)
        status = await http.get(f"{path}/$status")
    assert read.json()["criteria"] == PAS_TOPIC
    (parameters,) = [e["resource"] for e in status.json()["entry"]]
    named = {p["name"]: p for p in parameters["parameter"]}
    assert named["events-since-subscription-start"]["valueString"] == "0"
    assert named["type"]["valueCode"] == "query-status"
    async with client(case_app, "hospital-b") as http:
        assert (await http.get(path)).status_code == 404  # another owner: as if not there
        assert (await http.delete(path)).status_code == 404
    async with client(case_app, "claim-only") as http:
        denied = await http.post("/fhir/Subscription", json=subscription("https://x.org/n"))
    assert denied.status_code == 403
    async with client(case_app, "hospital-a") as http:
        assert (await http.delete(path)).status_code == 204
        assert (await http.get(path)).status_code == 404


def _filter(value: str) -> Json:
    return {"extension": [{"url": FILTER_CRITERIA, "valueString": value}]}


@pytest.mark.parametrize(
    ("changes", "element"),
    [
        ({"criteria": "ClaimResponse?status=active"}, "Subscription.criteria"),
        ({"status": "off"}, "Subscription.status"),
        ({"_criteria": _filter("ClaimResponse?patient=123")}, "Subscription.criteria.extension"),
        ({"_criteria": _filter("Claim?orgIdentifier=a|b")}, "Subscription.criteria.extension"),
        ({"end": "2026-13-01"}, "Subscription.end"),
        ({"channel": {"type": "websocket"}}, "Subscription.channel.type"),
        (
            {"channel": {"type": "rest-hook", "endpoint": "ftp://x"}},
            "Subscription.channel.endpoint",
        ),
        (
            {
                "channel": {
                    "type": "rest-hook",
                    "endpoint": "https://x.org/n",
                    "_payload": {"extension": [{"url": PAYLOAD_CONTENT, "valueCode": "empty"}]},
                }
            },
            "Subscription.channel.payload",
        ),
        (
            {"channel": {"type": "rest-hook", "endpoint": "https://x.org/n", "header": ["x"]}},
            "Subscription.channel.header",
        ),
    ],
)
async def test_an_unusable_subscription_is_refused_naming_the_element(
    case_app: FastAPI, changes: Json, element: str
) -> None:
    async with client(case_app, "hospital-a") as http:
        refused = await http.post(
            "/fhir/Subscription", json=subscription("https://a.example.org/n", **changes)
        )
    assert refused.status_code == 400, refused.text
    outcome = refused.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"] == [element]


async def test_a_decision_is_notified_to_the_submitters_subscriptions_only(
    case_app: FastAPI, worker_engine: AsyncEngine, receiver: Receiver
) -> None:
    mine = await subscribe(case_app, "hospital-a", subscription(receiver.url("a")))
    filtered_out = subscription(
        receiver.url("a-other-org"), _criteria=_filter("ClaimResponse?orgIdentifier=x|y")
    )
    await subscribe(case_app, "hospital-a", filtered_out)
    await subscribe(case_app, "hospital-b", subscription(receiver.url("b")))
    await submit_and_decide(case_app, "hospital-a")
    # in the outbox with the decision, before anything is sent
    (waiting,) = await notifications(worker_engine)
    assert (waiting.endpoint, waiting.state) == (f"subscription/{mine['id']}", "pending")
    await deliver(worker_engine)
    (got,) = receiver.got
    path, authorization, bundle = got
    assert (path, authorization) == ("a", "Bearer subscriber-secret")
    validate_bundle(bundle)  # R4: a history Bundle, the status as Parameters
    notification = read_notification(bundle)
    assert notification.subscription == f"Subscription/{mine['id']}"
    assert notification.events_since_start == 1
    (event,) = notification.events
    assert event.number == 1
    assert event.resource is not None  # full-resource: the ClaimResponse itself
    assert event.resource["outcome"] == "complete"
    assert event.resource["request"]["identifier"]["value"] == "HOSP-2026-0412.ur1"
    (sent,) = await notifications(worker_engine)
    assert sent.state == "sent"


async def test_a_notification_the_subscriber_failed_is_sent_again(
    case_app: FastAPI, worker_engine: AsyncEngine, receiver: Receiver
) -> None:
    receiver.statuses = [503]
    body = subscription(receiver.url("a"))
    body["channel"]["_payload"]["extension"][0]["valueCode"] = "id-only"
    await subscribe(case_app, "hospital-a", body)
    await submit_and_decide(case_app, "hospital-a")
    await deliver(worker_engine, retry_base=0.01, retry_max=0.01)
    (waiting,) = await notifications(worker_engine)
    assert (waiting.state, waiting.attempts, waiting.last_error) == (
        "pending",
        1,
        "HTTP 503 RemoteUnavailable",
    )
    while (await notifications(worker_engine))[0].state == "pending":
        await deliver(worker_engine, retry_base=0.01, retry_max=0.01)
    assert len(receiver.got) == 2
    first, again = (read_notification(b) for _, _, b in receiver.got)
    assert [e.number for e in first.events] == [e.number for e in again.events] == [1]
    assert again.events[0].resource is None  # id-only: the focus reference alone
    assert again.events[0].focus is not None
    assert again.events[0].focus.startswith("ClaimResponse/")
    assert json.dumps(receiver.got[1][2]).count("MBR-55512309") == 0  # no member data


async def test_a_notification_of_a_deleted_subscription_is_not_sent(
    case_app: FastAPI, worker_engine: AsyncEngine, receiver: Receiver
) -> None:
    created = await subscribe(case_app, "hospital-a", subscription(receiver.url("a")))
    await submit_and_decide(case_app, "hospital-a")
    async with client(case_app, "hospital-a") as http:
        assert (await http.delete(f"/fhir/Subscription/{created['id']}")).status_code == 204
    await deliver(worker_engine)
    assert receiver.got == []
    (row,) = await notifications(worker_engine)
    assert (row.state, row.last_error) == ("failed", "the subscription is gone")


async def test_the_capability_statement_offers_subscriptions_to_the_pas_topic(
    case_app: FastAPI,
) -> None:
    async with client(case_app, None) as http:
        statement = (await http.get("/fhir/metadata")).json()
    (resource,) = [r for r in statement["rest"][0]["resource"] if r["type"] == "Subscription"]
    assert resource["extension"][0]["valueCanonical"] == PAS_TOPIC
    assert {i["code"] for i in resource["interaction"]} == {"create", "read", "delete"}


async def test_a_refused_notification_ends_the_subscription_in_error(
    case_app: FastAPI, worker_engine: AsyncEngine, receiver: Receiver
) -> None:
    receiver.statuses = [401]  # the subscriber no longer knows this secret
    created = await subscribe(case_app, "hospital-a", subscription(receiver.url("a")))
    await submit_and_decide(case_app, "hospital-a")
    await deliver(worker_engine)
    (row,) = await notifications(worker_engine)
    assert (row.state, row.last_error) == ("failed", "HTTP 401 RemoteAuthError")
    async with client(case_app, "hospital-a") as http:
        read = await http.get(f"/fhir/Subscription/{created['id']}")
    assert read.json()["status"] == "error"  # what the subscriber reads to subscribe again
