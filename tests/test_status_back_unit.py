"""Status back against a mocked endpoint (respx): paging, the watermark, id-only focuses that are
gone or unreadable, Tasks that are not ours or unreadable. SQLite only: the store parts are
covered on both databases by ``test_status_back.py``."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from sqlalchemy.ext.asyncio import AsyncEngine

from cm_fhir.domain import Case, TaskStatus
from cm_fhir.errors import RemoteUnavailable
from cm_fhir.fhir_client import FhirClient, RetryPolicy
from cm_fhir.mapping.registry import default_registry
from cm_fhir.store.case_repo import create_case, read_case
from cm_fhir.store.ehr_status import read_cursors
from cm_fhir.store.engine import make_engine, upgrade_database
from cm_fhir.sync.notifications import read_notification
from cm_fhir.sync.status_back import MAX_READS, StatusBack, StatusBackEndpoint

BASE = "https://ehr.test/fhir"
SYSTEM = default_registry().system("task")
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "stroke-inpatient-rehab.json"
Json = dict[str, Any]


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    active = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'sb.sqlite3'}")
    await upgrade_database(active)
    case = Case.model_validate_json(EXAMPLE.read_text())
    async with active.begin() as connection:
        await connection.run_sync(create_case, case, default_registry(), datetime.now(UTC))
    yield active
    await active.dispose()


@pytest.fixture
async def back(engine: AsyncEngine) -> AsyncIterator[StatusBack]:
    retry = RetryPolicy(max_attempts=2, initial_backoff=0.01, max_backoff=0.01, total_budget=5)
    async with FhirClient(BASE, retry=retry) as client:
        endpoint = StatusBackEndpoint("ehr", BASE, page_size=2)
        yield StatusBack(engine, default_registry(), endpoint, client)


def task(local: str, status: str, stamp: str, rid: str = "1") -> Json:
    return {
        "resourceType": "Task",
        "id": rid,
        "meta": {"versionId": "2", "lastUpdated": stamp},
        "identifier": [{"system": SYSTEM, "value": f"HOSP-2026-0412.{local}"}],
        "status": status,
        "intent": "order",
    }


def page(*resources: Json, following: str | None = None) -> Json:
    out: Json = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r, "search": {"mode": "match"}} for r in resources],
    }
    if following:
        out["link"] = [{"relation": "next", "url": following}]
    return out


async def status_of(engine: AsyncEngine, local: str) -> TaskStatus:
    async with engine.connect() as connection:
        stored = await connection.run_sync(read_case, "HOSP-2026-0412")
    assert stored is not None
    return stored.case.task(local).status


async def test_a_poll_follows_pages_and_moves_the_watermark(
    engine: AsyncEngine, back: StatusBack
) -> None:
    with respx.mock(assert_all_called=True) as router:
        second = f"{BASE}/Task?page=2"
        router.get(second).respond(
            json=page(task("t-bp-call", "completed", "2026-03-21T10:00:05Z", "3"))
        )
        router.get(f"{BASE}/Task").respond(
            json=page(
                task("t-auth", "completed", "2026-03-21T10:00:01Z"),
                {"resourceType": "Task", "id": "2", "status": "draft", "intent": "order"},
                following=second,
            )
        )
        result = await back.poll()
        first_query = router.calls[0].request.url.params
    assert result.counts == {"applied": 2}
    assessments = default_registry().system("assessment")
    assert first_query["identifier"] == f"{SYSTEM}|,{assessments}|"  # case and assessment Tasks
    assert "_lastUpdated" not in first_query
    assert await status_of(engine, "t-auth") is TaskStatus.COMPLETED
    assert await status_of(engine, "t-bp-call") is TaskStatus.COMPLETED
    async with engine.connect() as connection:
        (cursor,) = await connection.run_sync(read_cursors)
    assert cursor.watermark == datetime(2026, 3, 21, 10, 0, 5, tzinfo=UTC)

    with respx.mock() as router:
        route = router.get(f"{BASE}/Task").respond(json=page())
        await back.poll()
    assert route.calls[0].request.url.params["_lastUpdated"] == "gt2026-03-21T10:00:03.000+00:00"


async def test_a_failed_poll_keeps_the_watermark(engine: AsyncEngine, back: StatusBack) -> None:
    with respx.mock() as router:
        router.get(f"{BASE}/Task").respond(
            json=page(task("t-auth", "completed", "2026-03-21T10:00:01Z"), following=f"{BASE}/p2")
        )
        router.get(f"{BASE}/p2").respond(503)
        with pytest.raises(RemoteUnavailable):
            await back.poll()
    async with engine.connect() as connection:
        (cursor,) = await connection.run_sync(read_cursors)
    assert cursor.watermark is None  # the next pass reads the first page again
    assert cursor.counts["applied"] == 0  # Tasks are applied a page at a time


def id_only(number: int, since: int, focus: str) -> Json:
    parameters = [
        {"name": "subscription", "valueReference": {"reference": "Subscription/s"}},
        {"name": "type", "valueCode": "event-notification"},
        {"name": "events-since-subscription-start", "valueString": str(since)},
        {
            "name": "notification-event",
            "part": [
                {"name": "event-number", "valueString": str(number)},
                {"name": "focus", "valueReference": {"reference": focus}},
            ],
        },
    ]
    return {
        "resourceType": "Bundle",
        "type": "history",
        "entry": [{"resource": {"resourceType": "Parameters", "parameter": parameters}}],
    }


async def test_an_id_only_focus_that_is_gone_is_skipped(back: StatusBack) -> None:
    with respx.mock() as router:
        router.get(f"{BASE}/Task/gone").respond(404)
        first = await back.notify(read_notification(id_only(1, 1, f"{BASE}/Task/gone")))
        other = await back.notify(read_notification(id_only(2, 2, f"{BASE}/Patient/p")))
    assert (first.counts, first.gap, other.counts) == ({}, False, {})


async def test_an_unreadable_task_is_counted_and_nothing_else_changes(
    engine: AsyncEngine, back: StatusBack
) -> None:
    bad = {**task("t-auth", "done-ish", "2026-03-21T10:00:01Z"), "id": f"x{uuid.uuid4().hex}"}
    result = await back.apply([bad, task("t-bp-call", "in-progress", "2026-03-21T10:00:01Z")])
    assert result.counts == {"unreadable": 1, "applied": 1}
    assert await status_of(engine, "t-auth") is TaskStatus.IN_PROGRESS


async def test_an_endpoint_that_fails_the_read_raises_for_a_retry(back: StatusBack) -> None:
    with respx.mock() as router:
        router.get(f"{BASE}/Task/t1").mock(side_effect=httpx.ConnectError("refused"))
        with pytest.raises(RemoteUnavailable):
            await back.notify(read_notification(id_only(1, 1, "Task/t1")))


async def test_a_focus_that_is_no_fhir_id_is_never_read(back: StatusBack) -> None:
    with respx.mock() as router:  # any request would fail: nothing is mocked
        result = await back.notify(read_notification(id_only(1, 1, "Task/..%2F..%2Fmetadata")))
        assert router.calls.call_count == 0
    assert result.counts == {}


async def test_many_id_only_events_make_one_poll_instead(back: StatusBack) -> None:
    body = id_only(1, MAX_READS + 1, "Task/t0")
    status = body["entry"][0]["resource"]["parameter"]
    event = status.pop()
    for n in range(1, MAX_READS + 2):
        status.append(
            {
                "name": "notification-event",
                "part": [
                    {"name": "event-number", "valueString": str(n)},
                    event["part"][1],
                ],
            }
        )
    with respx.mock() as router:
        search = router.get(f"{BASE}/Task").respond(json=page())
        result = await back.notify(read_notification(body))
    assert (search.call_count, result.polled) == (1, True)
