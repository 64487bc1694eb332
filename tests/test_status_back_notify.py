"""Subscription notifications are not trusted blindly, against the real test FHIR server, on
SQLite and PostgreSQL: the route authenticates the endpoint's bearer secret (see
test_status_back), takes only notifications of a Subscription of that endpoint, and reads each
notified Task from the server before applying it, so a payload that says more than the server
holds changes nothing (``reread_notified_tasks``, on by default; off, the payload is applied).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from cm_fhir.api.app import create_app
from cm_fhir.api.routes.ehr_notifications import NotificationReceiver
from cm_fhir.domain import Case, TaskStatus
from cm_fhir.fhir import map_case
from cm_fhir.fhir_client import FhirClient
from cm_fhir.mapping.registry import default_registry
from cm_fhir.settings import Settings
from cm_fhir.store.audit import audit_events
from cm_fhir.store.case_repo import create_case
from cm_fhir.sync.status_back import StatusBack, StatusBackEndpoint
from test_status_back import SECRET, current, ehr_changes, fresh_case, notification, server_task


@pytest.fixture
async def fhir(fhir_server: str) -> AsyncIterator[FhirClient]:
    async with FhirClient(fhir_server) as client:
        yield client


@pytest.fixture
async def stored(worker_engine: AsyncEngine, fhir: FhirClient) -> Case:
    """A case in our store whose Bundle the server holds."""
    case = fresh_case()
    async with worker_engine.begin() as connection:
        await connection.run_sync(create_case, case, default_registry(), datetime.now(UTC))
    written = await fhir.write_bundle(map_case(case))
    assert {r.status for r in written} == {201}
    return case


async def _app(
    engine: AsyncEngine, settings: Settings, fhir: FhirClient, **endpoint: object
) -> AsyncIterator[FastAPI]:
    application = create_app(settings, engine=engine)
    name = f"ehr-{uuid.uuid4().hex[:8]}"
    back = StatusBack(
        engine,
        default_registry(),
        StatusBackEndpoint(name, fhir.base_url, overlap=0.5, **endpoint),  # type: ignore[arg-type]
        fhir,
    )
    async with application.router.lifespan_context(application):
        application.state.context.notifications = {"ehr": NotificationReceiver(back, SECRET)}
        yield application


@pytest.fixture
async def app(
    worker_engine: AsyncEngine, api_settings: Settings, fhir: FhirClient
) -> AsyncIterator[FastAPI]:
    async for application in _app(worker_engine, api_settings, fhir, subscriptions=("tasks",)):
        yield application


@pytest.fixture
async def trusting_app(
    worker_engine: AsyncEngine, api_settings: Settings, fhir: FhirClient
) -> AsyncIterator[FastAPI]:
    async for application in _app(worker_engine, api_settings, fhir, reread=False):
        yield application


async def post(app: FastAPI, body: object) -> httpx.Response:
    transport = httpx.ASGITransport(app)
    headers = {"Authorization": f"Bearer {SECRET}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://cm-fhir.test") as client:
        return await client.post("/fhir/subscription-notification/ehr", json=body, headers=headers)


async def test_a_forged_full_resource_payload_is_read_again_and_changes_nothing(
    worker_engine: AsyncEngine, fhir: FhirClient, stored: Case, app: FastAPI
) -> None:
    task = await server_task(fhir, stored, "t-bp-call")
    moved = await ehr_changes(fhir, task, status="in-progress")
    forged = {**moved, "status": "completed"}  # the server holds in-progress
    body = notification(1, 1, f"{fhir.base_url}/Task/{moved['id']}", forged)
    answer = await post(app, body)
    assert answer.status_code == 200, answer.text
    after = (await current(worker_engine, stored)).task("t-bp-call")
    assert after.status is TaskStatus.IN_PROGRESS  # what the server holds, not the payload


async def test_with_reread_off_the_payload_is_applied_as_sent(
    worker_engine: AsyncEngine, fhir: FhirClient, stored: Case, trusting_app: FastAPI
) -> None:
    task = await server_task(fhir, stored, "t-bp-call")
    moved = await ehr_changes(fhir, task, status="in-progress")
    sent = {**moved, "status": "completed"}
    answer = await post(trusting_app, notification(1, 1, f"Task/{moved['id']}", sent))
    assert answer.status_code == 200, answer.text
    assert (await current(worker_engine, stored)).task("t-bp-call").status is (TaskStatus.COMPLETED)


@pytest.mark.parametrize(
    "subscription",
    ["Subscription/someone-elses", "https://elsewhere.example/fhir/Subscription/tasks"],
)
async def test_a_notification_of_an_unknown_subscription_is_403_and_audited(
    worker_engine: AsyncEngine,
    fhir: FhirClient,
    stored: Case,
    app: FastAPI,
    subscription: str,
) -> None:
    task = await server_task(fhir, stored, "t-bp-call")
    moved = await ehr_changes(fhir, task, status="in-progress")
    body = notification(1, 1, f"Task/{moved['id']}")
    body["entry"][0]["resource"]["parameter"][0]["valueReference"]["reference"] = subscription
    answer = await post(app, body)
    assert answer.status_code == 403
    assert answer.json()["resourceType"] == "OperationOutcome"
    assert (await current(worker_engine, stored)).task("t-bp-call").status is (
        stored.task("t-bp-call").status
    )
    query = select(audit_events.c.subject, audit_events.c.action, audit_events.c.outcome)
    async with worker_engine.connect() as connection:
        events = (await connection.execute(query)).all()
    assert ("ehr:ehr", "authorise") in {(e.subject, e.action) for e in events}


async def test_a_focus_on_another_server_is_not_read(
    worker_engine: AsyncEngine, fhir: FhirClient, stored: Case, app: FastAPI
) -> None:
    task = await server_task(fhir, stored, "t-bp-call")
    moved = await ehr_changes(fhir, task, status="in-progress")
    focus = f"https://elsewhere.example/fhir/Task/{moved['id']}"
    answer = await post(app, notification(1, 1, focus, {**moved, "status": "completed"}))
    assert answer.status_code == 200, answer.text
    assert (await current(worker_engine, stored)).task("t-bp-call").status is (
        stored.task("t-bp-call").status
    )
