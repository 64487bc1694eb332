"""Task status back from a real FHIR server into the store, on SQLite and PostgreSQL.

A case is stored (the cases write path) and its Bundle written to the test FHIR server, as the
sync worker would. Then the Task is changed on the server, as a case manager in the EHR would, and
status back brings it home: by polling, by id-only and full-resource notifications through the
real HTTP route, and by the poll a gap in ``eventsSinceSubscriptionStart`` sets off. An illegal
transition and our own write echoed back change nothing.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from api_fixtures import API_KEY
from cm_fhir.api.app import create_app
from cm_fhir.api.routes.ehr_notifications import NotificationReceiver
from cm_fhir.domain import Case, TaskStatus
from cm_fhir.fhir import map_case
from cm_fhir.fhir_client import FhirClient
from cm_fhir.mapping.registry import default_registry
from cm_fhir.settings import Settings
from cm_fhir.store.audit import audit_events
from cm_fhir.store.case_repo import create_case, read_case
from cm_fhir.store.case_tables import trace
from cm_fhir.store.ehr_status import read_cursors
from cm_fhir.store.sync_state import SyncKey, SyncRecord, record_sync
from cm_fhir.sync.config import EhrSettings, EndpointSettings
from cm_fhir.sync.runner import SyncWorker
from cm_fhir.sync.status_back import StatusBack, StatusBackEndpoint
from cm_fhir.worker import Worker, WorkerConfig
from worker_fixtures import cases, ingest, rows, settle_worker
from workflow_messages import Visit

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "stroke-inpatient-rehab.json"
SECRET = "notification-secret-" + uuid.uuid4().hex
Json = dict[str, Any]


def discharged(visit: Visit, at: datetime, disposition: str) -> list[str]:
    """An admission three days before ``at`` and its discharge at ``at``."""
    return [
        visit.raw("A01", f"{visit.visit}-1", at - timedelta(days=3)),
        visit.raw("A03", f"{visit.visit}-2", at, disposition=disposition, discharge=at),
    ]


def fresh_case() -> Case:
    """The stroke example with a fresh id, cut to a few resources (the test server refuses large
    conditional transactions): the case, its plans, goals and three tasks."""
    doc = json.loads(EXAMPLE.read_text())
    doc["id"] = f"SB-{uuid.uuid4().hex[:12]}"
    case = Case.model_validate(doc)
    small = {
        "referral_source": None,
        "care_team": None,
        "assessments": (),
        "referrals": (),
        "risk": None,
    }
    return Case.model_validate({**dict(case), **small})


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
    assert [r.status for r in written] == [201] * len(written)
    return case


def status_back(engine: AsyncEngine, fhir: FhirClient, name: str, **kw: Any) -> StatusBack:
    endpoint = StatusBackEndpoint(name, fhir.base_url, overlap=0.5)
    return StatusBack(engine, default_registry(), endpoint, fhir, **kw)


async def server_task(fhir: FhirClient, case: Case, local: str) -> Json:
    value = f"{case.id}.{local}"
    found = [r async for r in fhir.search("Task", {"identifier": f"{TASK_SYSTEM}|{value}"})]
    assert len(found) == 1
    return found[0]


async def ehr_changes(fhir: FhirClient, task: Json, **fields: Any) -> Json:
    """The EHR updates the Task (a case manager at work)."""
    changed = {**task, **fields}
    response = await fhir.update(changed)
    assert response.resource is not None
    return response.resource


async def current(engine: AsyncEngine, case: Case) -> Case:
    async with engine.connect() as connection:
        found = await connection.run_sync(read_case, case.id)
    assert found is not None
    return found.case


TASK_SYSTEM = default_registry().system("task")


async def test_a_task_completed_on_the_server_updates_the_case_by_poll(
    worker_engine: AsyncEngine, fhir: FhirClient, stored: Case
) -> None:
    name = f"ehr-{uuid.uuid4().hex[:8]}"
    back = status_back(worker_engine, fhir, name)
    first = await back.poll()  # everything of ours so far: nothing differs from the case
    assert first.counts.get("applied", 0) == 0
    task = await server_task(fhir, stored, "t-auth")
    nurse = await fhir.create({"resourceType": "Practitioner", "active": True})
    assert nurse.resource is not None
    owner = {"reference": f"Practitioner/{nurse.resource['id']}", "display": "Nurse Seven"}
    await ehr_changes(
        fhir,
        task,
        status="completed",
        owner=owner,
        statusReason={"text": "authorised by phone"},
        executionPeriod={"end": "2026-03-20T15:30:00+00:00"},
    )

    result = await back.poll()

    assert result.counts.get("applied") == 1, result.counts
    after = (await current(worker_engine, stored)).task("t-auth")
    assert after.status is TaskStatus.COMPLETED
    assert after.status_reason == "authorised by phone"
    assert after.completed_at == datetime(2026, 3, 20, 15, 30, tzinfo=UTC)
    assert after.owner.display == "Nurse Seven"
    assert after.owner.identifier is not None
    assert after.owner.identifier.value == nurse.resource["id"]
    assert after.owner.identifier.system == f"{fhir.base_url}/Practitioner"
    async with worker_engine.connect() as connection:
        rows = (await connection.execute(select(trace).where(trace.c.case_id == stored.id))).all()
        audits = (
            await connection.execute(
                select(audit_events).where(audit_events.c.entity_id == stored.id)
            )
        ).all()
        cursors = {c.endpoint: c for c in await connection.run_sync(read_cursors)}
    ehr_rows = [r for r in rows if r.rule == "ehr.status_back"]
    assert len(ehr_rows) == 1
    assert ehr_rows[0].target == "t-auth"
    assert ehr_rows[0].message_key.startswith(f"fhir|{name}|{fhir.base_url}/Task/")
    assert [a.subject for a in audits if a.auth_method == "ehr"] == [f"ehr:{name}"]
    assert cursors[name].watermark is not None
    assert cursors[name].counts["applied"] == 1
    again = await back.poll()  # the watermark moved on: the same version applies no more
    assert again.counts.get("applied", 0) == 0


async def test_an_illegal_transition_is_ignored_and_counted(
    worker_engine: AsyncEngine, fhir: FhirClient, stored: Case
) -> None:
    back = status_back(worker_engine, fhir, f"ehr-{uuid.uuid4().hex[:8]}")
    task = await server_task(fhir, stored, "t-rehab-options")  # completed with us
    await ehr_changes(fhir, task, status="in-progress")

    result = await back.apply([await server_task(fhir, stored, "t-rehab-options")])

    assert result.counts == {"illegal": 1}
    assert (await current(worker_engine, stored)).task("t-rehab-options").status is (
        TaskStatus.COMPLETED
    )


async def test_our_own_write_echoed_back_changes_nothing(
    worker_engine: AsyncEngine, fhir: FhirClient, stored: Case
) -> None:
    name = f"ehr-{uuid.uuid4().hex[:8]}"
    task = await server_task(fhir, stored, "t-bp-call")
    # The API reassigned the task meanwhile; the server still holds what the sync worker last
    # wrote, whose version it recorded (as an ETag) in the sync state.
    key = SyncKey(name, "Task", f"{TASK_SYSTEM}|{stored.id}.t-bp-call")
    version = f'W/"{task["meta"]["versionId"]}"'
    async with worker_engine.begin() as connection:
        record = SyncRecord(key, task["id"], version)
        await connection.run_sync(record_sync, [record], datetime.now(UTC))
    back = status_back(worker_engine, fhir, name)
    ours_then = {**task, "owner": {"reference": "Practitioner/someone-else"}}
    assert (await back.apply([ours_then])).counts == {"echo": 1}
    assert (await current(worker_engine, stored)).task("t-bp-call").owner == stored.task(
        "t-bp-call"
    ).owner

    # A later version (the EHR's own change) is no echo.
    moved = await ehr_changes(fhir, task, status="in-progress")
    assert (await back.apply([moved])).counts == {"applied": 1}


@pytest.fixture
async def app(
    worker_engine: AsyncEngine, api_settings: Settings, fhir: FhirClient
) -> AsyncIterator[tuple[FastAPI, StatusBack]]:
    application = create_app(api_settings, engine=worker_engine)
    back = status_back(worker_engine, fhir, f"ehr-{uuid.uuid4().hex[:8]}")
    async with application.router.lifespan_context(application):
        application.state.context.notifications = {"ehr": NotificationReceiver(back, SECRET)}
        yield application, back


def notification(number: int, since: int, focus: str | None, resource: Json | None = None) -> Json:
    parameters: list[Json] = [
        {"name": "subscription", "valueReference": {"reference": "Subscription/tasks"}},
        {"name": "status", "valueCode": "active"},
        {"name": "type", "valueCode": "event-notification"},
        {"name": "events-since-subscription-start", "valueString": str(since)},
    ]
    event: list[Json] = [{"name": "event-number", "valueString": str(number)}]
    if focus is not None:
        event.append({"name": "focus", "valueReference": {"reference": focus}})
    parameters.append({"name": "notification-event", "part": event})
    entries: list[Json] = [
        {
            "fullUrl": "urn:uuid:" + str(uuid.uuid4()),
            "resource": {"resourceType": "Parameters", "parameter": parameters},
        }
    ]
    if resource is not None:
        entries.append({"fullUrl": focus, "resource": resource})
    return {"resourceType": "Bundle", "type": "history", "entry": entries}


def api(app: FastAPI) -> httpx.AsyncClient:
    """A client of the cases API and FHIR facade with the test API key."""
    transport = httpx.ASGITransport(app)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    return httpx.AsyncClient(transport=transport, base_url="http://cm-fhir.test", headers=headers)


async def post(app: FastAPI, body: Any, secret: str | None = SECRET) -> httpx.Response:
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://cm-fhir.test") as client:
        return await client.post("/fhir/subscription-notification/ehr", json=body, headers=headers)


async def test_id_only_and_full_resource_notifications_update_the_case(
    worker_engine: AsyncEngine,
    fhir: FhirClient,
    stored: Case,
    app: tuple[FastAPI, StatusBack],
) -> None:
    application, _back = app
    handshake = notification(1, 0, None)
    handshake["entry"][0]["resource"]["parameter"][2]["valueCode"] = "handshake"
    handshake["entry"][0]["resource"]["parameter"].pop()
    assert (await post(application, handshake)).status_code == 200

    task = await server_task(fhir, stored, "t-bp-call")
    moved = await ehr_changes(fhir, task, status="in-progress")
    answer = await post(application, notification(1, 1, f"{fhir.base_url}/Task/{moved['id']}"))
    assert answer.status_code == 200, answer.text
    assert "applied 1" in answer.json()["issue"][0]["details"]["text"]
    assert (await current(worker_engine, stored)).task("t-bp-call").status is (
        TaskStatus.IN_PROGRESS
    )

    done = await ehr_changes(fhir, moved, status="completed")
    full = notification(2, 2, f"{fhir.base_url}/Task/{done['id']}", done)
    answer = await post(application, full)
    assert answer.status_code == 200, answer.text
    assert (await current(worker_engine, stored)).task("t-bp-call").status is (TaskStatus.COMPLETED)


async def test_a_gap_in_events_makes_a_poll_fill_it(
    worker_engine: AsyncEngine,
    fhir: FhirClient,
    stored: Case,
    app: tuple[FastAPI, StatusBack],
) -> None:
    application, back = app
    await back.poll()  # the watermark is now
    first = await server_task(fhir, stored, "t-bp-call")
    await ehr_changes(fhir, first, status="cancelled", statusReason={"text": "duplicate"})
    # Event 1 (the cancellation) never arrives; event 2 is a Task that is not ours.
    other = {"resourceType": "Task", "id": "x", "status": "requested", "intent": "order"}
    answer = await post(application, notification(2, 2, "Task/x", other))
    assert answer.status_code == 200, answer.text
    assert "missed events" in answer.json()["issue"][0]["details"]["text"]
    after = (await current(worker_engine, stored)).task("t-bp-call")
    assert after.status is TaskStatus.CANCELLED
    assert after.status_reason == "duplicate"
    async with api(application) as client:
        metrics = (await client.get("/metrics")).text
        patient = stored.patient.primary
        found = await client.get(
            "/fhir/Provenance", params={"patient": f"{patient.system}|{patient.value}"}
        )
    assert (
        f'cm_fhir_status_back_tasks_total{{endpoint="{back.endpoint.name}",outcome="applied"}} 1.0'
        in metrics
    )
    provenances = [e["resource"] for e in found.json()["entry"]]
    (ehr,) = [p for p in provenances if len(p["agent"]) == 2]
    assert ehr["agent"][1]["who"]["display"] == f"EHR endpoint '{back.endpoint.name}'"
    assert ehr["entity"][0]["what"]["reference"].startswith(f"{fhir.base_url}/Task/")
    assert ehr["activity"]["text"] == "ehr.status_back: status:cancelled;reason"


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"resourceType": "Patient"}, "Bundle"),
        ({"resourceType": "Bundle", "type": "transaction", "entry": []}, "Bundle.type"),
        ({"resourceType": "Bundle", "type": "history", "entry": []}, "Bundle.entry"),
        (
            {"resourceType": "Bundle", "type": "history", "entry": [{"resource": {}}]},
            "Bundle.entry[0].resource",
        ),
    ],
)
async def test_bad_bodies_are_400_operation_outcomes(
    app: tuple[FastAPI, StatusBack], body: Json, where: str
) -> None:
    answer = await post(app[0], body)
    assert answer.status_code == 400
    outcome = answer.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"] == [where]


async def test_a_wrong_secret_and_an_unknown_endpoint_are_401(
    app: tuple[FastAPI, StatusBack],
) -> None:
    assert (await post(app[0], notification(1, 1, None), secret="wrong")).status_code == 401
    assert (await post(app[0], notification(1, 1, None), secret=None)).status_code == 401
    transport = httpx.ASGITransport(app[0])
    async with httpx.AsyncClient(transport=transport, base_url="http://cm-fhir.test") as client:
        answer = await client.post(
            "/fhir/subscription-notification/nobody",
            json=notification(1, 1, None),
            headers={"Authorization": f"Bearer {SECRET}"},
        )
    assert answer.status_code == 401


async def test_follow_up_completed_on_the_ehr_lets_the_case_close(
    worker_engine: AsyncEngine, fhir: FhirClient
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    visit = Visit(mrn=f"MRN-{uuid.uuid4().hex[:8]}", visit=f"V{uuid.uuid4().hex[:8]}")
    await ingest(worker_engine, discharged(visit, at=now - timedelta(hours=2), disposition="01"))
    await settle_worker(worker_engine)
    (case_id,) = [r.case_id for r in await rows(worker_engine, cases)]
    case = await current_by_id(worker_engine, case_id)
    assert case.status.value == "transition"
    for part in split_for_server(map_case(case)):
        await fhir.write_bundle(part)
    worker = Worker(worker_engine, WorkerConfig())
    assert (await worker.close_due()).closed == 0
    back = status_back(worker_engine, fhir, f"ehr-{uuid.uuid4().hex[:8]}")
    await back.poll()
    for task in case.tasks:
        if task.is_open:  # the case manager finishes the work in the EHR
            await ehr_changes(fhir, await server_task(fhir, case, task.id), status="completed")

    result = await back.poll()

    assert result.counts.get("applied") == sum(t.is_open for t in case.tasks)
    closing = await worker.close_due()
    assert (closing.checked, closing.closed) == (1, 1)
    assert (await current_by_id(worker_engine, case_id)).status.value == "closed"
    closed_by = [r.rule for r in await rows(worker_engine, trace) if r.action == "case-closed"]
    assert closed_by == ["discharge.close_when_follow_up_done"]


async def current_by_id(engine: AsyncEngine, case_id: str) -> Case:
    async with engine.connect() as connection:
        found = await connection.run_sync(read_case, case_id)
    assert found is not None
    return found.case


def split_for_server(bundle: Json, size: int = 8) -> list[Json]:
    """The Bundle as transactions the test server takes: the EpisodeOfCare with each group of
    other entries (our conditional writes make repeating it harmless)."""
    head, rest = bundle["entry"][0], bundle["entry"][1:]
    return [
        {**bundle, "entry": [head, *rest[i : i + size - 1]]} for i in range(0, len(rest), size - 1)
    ]


async def test_the_sync_role_polls_each_endpoint_until_stopped(
    worker_engine: AsyncEngine, fhir: FhirClient, stored: Case
) -> None:
    name = f"ehr-{uuid.uuid4().hex[:8]}"
    endpoint = EndpointSettings(name=name, base_url=fhir.base_url, task_poll_interval=0.2)
    task = await server_task(fhir, stored, "t-bp-call")
    await ehr_changes(fhir, task, status="on-hold", statusReason={"text": "patient away"})
    worker = SyncWorker(worker_engine, [endpoint], EhrSettings())
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        for _ in range(100):
            if (await current(worker_engine, stored)).task(
                "t-bp-call"
            ).status is TaskStatus.ON_HOLD:
                break
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.wait_for(running, 30)
    assert (await current(worker_engine, stored)).task("t-bp-call").status is TaskStatus.ON_HOLD
