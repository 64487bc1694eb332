"""Outbox commits wake the sync role at once, with its poll interval set to 30 s so that a
delivery within seconds shows the wake-up: a case written through the API wakes the sync role of
the same process (SQLite and PostgreSQL); on PostgreSQL, a case committed by another process wakes
``cm-fhir serve --role sync`` (LISTEN/NOTIFY). Real parts: the app through httpx's ASGI transport,
the store, the test FHIR server, the ``serve`` process.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from api_case_helpers import case_app, case_json, client, example
from cm_fhir.domain import Case
from cm_fhir.mapping.registry import default_registry
from cm_fhir.store.case_repo import create_case
from cm_fhir.store.case_writes import OutboxRoute
from cm_fhir.sync.runner import SyncWorker
from inbox_fixtures import PG_URL, Database
from live_api import start_serve
from sync_fixtures import FAST, FAST_RETRY, endpoint, outbox_states

__all__ = ["case_app"]

SLOW_POLL = FAST.model_copy(update={"poll_interval": 30.0})
PROMPTLY = 8.0  # seconds: far below the poll interval, with room for a loaded machine


def _fresh(name: str) -> Case:
    case = example(name)
    return case.model_copy(update={"id": f"{case.id}-{uuid.uuid4().hex[:8]}"})


async def _sent(engine: AsyncEngine, count: int, within: float) -> float:
    """Seconds until ``count`` outbox rows are sent; fails after ``within``."""
    start = time.monotonic()
    while (await outbox_states(engine)).get("sent", 0) < count:
        assert time.monotonic() - start < within, "not delivered: the sync role was not woken"
        await asyncio.sleep(0.05)
    return time.monotonic() - start


async def test_an_api_case_write_wakes_the_sync_role_of_its_process(
    case_app: FastAPI, worker_engine: AsyncEngine, fhir_server: str
) -> None:
    stop = asyncio.Event()
    sync = SyncWorker(worker_engine, [endpoint(fhir_server)], SLOW_POLL, retry=FAST_RETRY)
    running = asyncio.create_task(sync.run(stop))
    try:
        async with client(case_app) as http:
            first = await http.post("/api/cases", json=case_json(_fresh("stroke-inpatient-rehab")))
            assert first.status_code == 201, first.text
            await _sent(worker_engine, 1, 30)  # the first pass; then the loop waits
            await asyncio.sleep(0.3)
            second = _fresh("home-health-plan-of-care")
            assert (await http.post("/api/cases", json=case_json(second))).status_code == 201
            await _sent(worker_engine, 2, PROMPTLY)
    finally:
        stop.set()
        await running


async def test_a_case_committed_by_another_process_wakes_serve_role_sync(
    worker_engine: AsyncEngine, database: Database, fhir_server: str, tmp_path: Path
) -> None:
    if database.search_path is None:
        pytest.skip("across processes only PostgreSQL notifies; SQLite polls")
    serve = await start_serve(
        tmp_path / "data",
        "--role",
        "sync",
        "--ehr-url",
        fhir_server,
        "--database-url",
        PG_URL,
        "--database-schema",
        database.search_path,
        env={"CM_FHIR_EHR__POLL_INTERVAL": "30"},
    )
    try:
        await asyncio.sleep(1.0)  # its first pass found nothing; its loop now waits
        route = OutboxRoute("default", None)
        case = _fresh("stroke-inpatient-rehab")
        async with worker_engine.begin() as connection:
            await connection.run_sync(
                lambda c: create_case(
                    c, case, default_registry(), datetime.now(UTC), routes=(route,)
                )
            )
        await _sent(worker_engine, 1, PROMPTLY)
    finally:
        serve.process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(serve.process.wait(), 30)
