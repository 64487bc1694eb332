"""The one write path: the worker and the cases API store a case the same way (SQLite, PostgreSQL).

An admission goes through the listener's intake and the worker; the case it produced is then
removed and posted again through the HTTP API. Both paths must leave byte-identical outbox Bundles
(same hash, case identifier and resource identifiers) and served resources. Outbox rows fan out
to the configured endpoints, each receiving only the programmes it names.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncEngine

from cm_fhir.domain.case import Case
from cm_fhir.mapping.registry import default_registry
from cm_fhir.store.case_repo import create_case
from cm_fhir.store.case_writes import OutboxRoute
from worker_fixtures import (
    cases,
    fhir_resources,
    ingest,
    outbox,
    patient_states,
    rows,
    settle_worker,
)
from workflow_messages import Visit, hours


def _outbox_view(row: Any) -> tuple[Any, ...]:
    return (
        row.case_id,
        row.patient_key,
        row.case_identifier,
        tuple(orjson.loads(row.identifiers)),
        row.bundle_sha256,
        bytes(row.bundle),
    )


def _served(found: list[Any]) -> list[tuple[Any, ...]]:
    return sorted(
        (r.resource_type, r.id, r.identifier, r.patient_identifier, r.status, r.resource)
        for r in found
    )


async def test_worker_and_api_store_identical_bundles_and_resources(
    worker_engine: AsyncEngine, worker_http: httpx.AsyncClient
) -> None:
    visit = Visit(mrn="MRN-WP1", visit="VWP1")
    await ingest(worker_engine, [visit.raw("A01", "WP1", hours(0))])
    await settle_worker(worker_engine)
    (case_row,) = await rows(worker_engine, cases)
    by_worker = [_outbox_view(r) for r in await rows(worker_engine, outbox)]
    served_by_worker = _served(await rows(worker_engine, fhir_resources))
    assert len(by_worker) == 1
    assert len(served_by_worker) >= 4  # an admission: episode, care team, plan, task
    case = Case.model_validate_json(case_row.case_json)

    async with worker_engine.begin() as connection:
        for table in (outbox, fhir_resources, cases, patient_states):
            await connection.execute(delete(table))
    response = await worker_http.post("/api/cases", json=orjson.loads(case.model_dump_json()))
    assert response.status_code == 201, response.text

    by_api = [_outbox_view(r) for r in await rows(worker_engine, outbox)]
    assert by_api == by_worker
    assert _served(await rows(worker_engine, fhir_resources)) == served_by_worker
    (api_row,) = await rows(worker_engine, cases)
    assert api_row.last_bundle_sha256 == case_row.last_bundle_sha256


async def test_outbox_rows_fan_out_to_the_endpoints_that_receive_the_programme(
    worker_engine: AsyncEngine,
) -> None:
    visit = Visit(mrn="MRN-WP2", visit="VWP2")
    await ingest(worker_engine, [visit.raw("A01", "WP2", hours(0))])
    await settle_worker(worker_engine)
    (case_row,) = await rows(worker_engine, cases)
    case = Case.model_validate_json(case_row.case_json)
    other = case.model_copy(update={"id": case.id + "-copy"})
    routes = (
        OutboxRoute("ehr"),
        OutboxRoute("payer", frozenset({case.programme})),
        OutboxRoute("elsewhere", frozenset({"no-such-programme"})),
    )
    async with worker_engine.begin() as connection:
        await connection.run_sync(
            lambda c: create_case(c, other, default_registry(), hours(1), routes=routes)
        )
    written = [r for r in await rows(worker_engine, outbox) if r.case_id == other.id]
    assert sorted(r.endpoint for r in written) == ["ehr", "payer"]
    assert len({r.bundle_sha256 for r in written}) == 1
    assert all(r.state == "pending" for r in written)
