"""The hospital side subscribes at its payer (PAS topic), on SQLite and PostgreSQL: over real
HTTP against cm-fhir's own payer side, once, again when the payer has lost it, not where the
payer's CapabilityStatement offers none; notifications are taken with that Subscription's own
secret and for that Subscription only, and missed events make pended reviews due for an
inquiry."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI, Request
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from api_fixtures import API_KEY
from cm_fhir.api.app import create_app
from cm_fhir.settings import load_settings
from cm_fhir.store.payer_subscribed import Subscribed, save_subscribed, secret_digest
from cm_fhir.store.subscriptions import payer_subscriptions
from cm_fhir.sync.config import EhrSettings, EndpointAuth, PayerEndpointSettings
from cm_fhir.sync.endpoints import RequestCount, open_client
from cm_fhir.sync.payer_subscribe import CHECK_EVERY, PayerSubscriber
from live_api import serving

PUBLIC = "https://hospital.example.org"
Json = dict[str, Any]


@asynccontextmanager
async def subscriber(
    engine: AsyncEngine, base_url: str, **options: Any
) -> AsyncIterator[PayerSubscriber]:
    endpoint = PayerEndpointSettings(
        name="payer", base_url=base_url, auth=EndpointAuth(kind="bearer", token=API_KEY), **options
    )
    client = open_client(endpoint, RequestCount(), EhrSettings())
    try:
        yield PayerSubscriber(engine, endpoint, client, PUBLIC)
    finally:
        await client.aclose()


async def held_at_payer(engine: AsyncEngine) -> list[Any]:
    async with engine.connect() as connection:
        return list((await connection.execute(select(payer_subscriptions))).all())


async def test_the_hospital_subscribes_once_and_again_when_the_payer_lost_it(
    worker_engine: AsyncEngine,
) -> None:
    payer = create_app(load_settings(overrides={"api_keys": API_KEY}), engine=worker_engine)
    async with (
        serving(payer) as port,
        subscriber(worker_engine, f"http://127.0.0.1:{port}/fhir") as side,
    ):
        held = await side.ensure()
        assert held is not None
        assert held.subscription_id is not None
        (row,) = await held_at_payer(worker_engine)
        assert row.id == held.subscription_id
        assert row.endpoint_url == f"{PUBLIC}/fhir/subscription-notification/payer"
        assert row.payload == "id-only"
        (header,) = orjson.loads(row.headers)
        scheme, _, secret = header.removeprefix("Authorization:").strip().partition(" ")
        assert scheme == "Bearer"
        assert held.carries_secret(secret)
        assert await side.ensure() is None  # not due: no request
        later = datetime.now(UTC) + timedelta(seconds=CHECK_EVERY + 1)
        again = await side.ensure(later)
        assert again is not None
        assert again.subscription_id == held.subscription_id
        assert len(await held_at_payer(worker_engine)) == 1  # still there: kept
        async with worker_engine.begin() as connection:  # the payer loses it
            await connection.execute(delete(payer_subscriptions))
        renewed = await side.ensure(later + timedelta(seconds=CHECK_EVERY + 1))
        assert renewed is not None
        assert renewed.subscription_id not in (None, row.id)
        (new_row,) = await held_at_payer(worker_engine)
        assert new_row.id == renewed.subscription_id
        assert not renewed.carries_secret(secret)  # a new secret with it


async def test_a_payer_without_subscriptions_is_polled_only_unless_told_otherwise(
    worker_engine: AsyncEngine,
) -> None:
    posted: list[Json] = []
    plain = FastAPI()

    @plain.get("/fhir/metadata")
    async def metadata() -> Json:
        return {"resourceType": "CapabilityStatement", "rest": [{"resource": [{"type": "Claim"}]}]}

    @plain.post("/fhir/Subscription", status_code=201)
    async def create(request: Request) -> Json:
        posted.append(await request.json())
        return {**posted[-1], "id": f"s{len(posted)}", "status": "active"}

    async with serving(plain) as port:
        base = f"http://127.0.0.1:{port}/fhir"
        async with subscriber(worker_engine, base) as auto:
            assert await auto.ensure() is None
        assert posted == []
        async with subscriber(worker_engine, base, subscribe="never") as never:
            assert await never.ensure() is None
        assert posted == []
        async with subscriber(worker_engine, base, subscribe="always") as always:
            held = await always.ensure()
        assert held is not None
        assert held.subscription_id == "s1"
        assert posted[0]["channel"]["endpoint"].startswith(PUBLIC)


@pytest.fixture
async def hospital(worker_engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    settings = load_settings(
        overrides={
            "api_keys": API_KEY,
            "payer_url": "http://payer.test/fhir",
            "payer": {"public_url": PUBLIC},
        }
    )
    app = create_app(settings, engine=worker_engine)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=PUBLIC) as http,
    ):
        yield http


def heartbeat(subscription: str, events: int) -> Json:
    parameters = [
        {"name": "subscription", "valueReference": {"reference": subscription}},
        {"name": "type", "valueCode": "heartbeat"},
        {"name": "events-since-subscription-start", "valueString": str(events)},
    ]
    entry = {"resource": {"resourceType": "Parameters", "parameter": parameters}}
    return {"resourceType": "Bundle", "type": "history", "entry": [entry]}


async def test_notifications_carry_our_subscriptions_secret_and_name_it(
    worker_engine: AsyncEngine, hospital: httpx.AsyncClient
) -> None:
    path = "/fhir/subscription-notification/payer"
    secret = "generated-secret-0123456789"
    auth = {"Authorization": f"Bearer {secret}"}
    assert (
        await hospital.post(path, json=heartbeat("Subscription/s7", 0), headers=auth)
    ).status_code == 401
    now = datetime.now(UTC)
    async with worker_engine.begin() as connection:
        held = Subscribed("payer", "s7", secret_digest(secret), now, now, None)
        await connection.run_sync(save_subscribed, held)
    taken = await hospital.post(path, json=heartbeat("Subscription/s7", 0), headers=auth)
    assert taken.status_code == 200, taken.text
    other = await hospital.post(path, json=heartbeat("Subscription/s8", 0), headers=auth)
    assert other.status_code == 403  # the secret is s7's
    wrong = {"Authorization": "Bearer not-the-secret-0123456789"}
    assert (
        await hospital.post(path, json=heartbeat("Subscription/s7", 0), headers=wrong)
    ).status_code == 401
    assert (
        await hospital.post(
            path, json=heartbeat("Subscription/s7", 0), headers={"Authorization": "Bearer "}
        )
    ).status_code == 401
    missed = await hospital.post(path, json=heartbeat("Subscription/s7", 2), headers=auth)
    assert missed.status_code == 200
    assert "missed events: polled" in missed.json()["issue"][0]["details"]["text"]
    caught_up = await hospital.post(path, json=heartbeat("Subscription/s7", 2), headers=auth)
    assert "missed events" not in caught_up.json()["issue"][0]["details"]["text"]
