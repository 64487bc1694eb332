"""Outbox delivery to the real test FHIR server, on SQLite and PostgreSQL.

ADT messages go in through the listener's intake, the worker turns them into cases and outbox
rows, and the ``sync`` role (:class:`~cm_fhir.sync.runner.SyncWorker`) writes them to the server.
The tests read the server back by business identifier: every resource of every case is there
exactly once, with what the newest Bundle says, after resends, outages and EHR edits (412).
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import orjson
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from cm_fhir.store.case_tables import fhir_resources, outbox, sync_state
from cm_fhir.store.outbox import mark_for_resend
from fhir_server_fixture import FhirFaults
from sync_fixtures import (
    expected_identifiers,
    on_server,
    outbox_states,
    search_url,
    sync_worker,
)
from worker_fixtures import ingest, rows, settle_worker
from workflow_messages import Visit, hours


def _sequence(visit: Visit, tag: str) -> list[str]:
    return [
        visit.raw("A01", f"{tag}1", hours(0)),
        visit.raw("A02", f"{tag}2", hours(5), location="5EAST", prior_location="4WEST"),
        visit.raw("A08", f"{tag}3", hours(8), location="5EAST"),
    ]


async def _served(engine: AsyncEngine) -> dict[str, Any]:
    """The served resource by ``Type|system|value``: the case as it is now."""
    query = select(
        fhir_resources.c.resource_type, fhir_resources.c.identifier, fhir_resources.c.resource
    )
    async with engine.connect() as connection:
        found = (await connection.execute(query)).all()
    return {f"{t}|{i}": orjson.loads(r) for t, i, r in found}


def _content(value: Any) -> Any:
    """A resource without what the server assigns (id, meta) or resolves (references)."""
    if isinstance(value, dict):
        return {k: _content(v) for k, v in value.items() if k not in ("id", "meta", "reference")}
    if isinstance(value, list):
        return [_content(v) for v in value]
    return value


async def _assert_delivered_once(engine: AsyncEngine, base_url: str) -> None:
    """Every resource of each case's newest Bundle is on the server once, as that Bundle says
    (so an older Bundle sent after a newer one would show)."""
    wanted = await expected_identifiers(engine)
    assert wanted
    found = await on_server(base_url, sorted(wanted))
    served = await _served(engine)
    for identifier, resources in found.items():
        assert len(resources) == 1, f"{identifier}: {len(resources)} on the server"
        assert _content(resources[0]) == _content(served[identifier]), identifier


async def test_an_adt_sequence_ends_on_the_server_once_each(
    worker_engine: AsyncEngine, fhir_server: str
) -> None:
    visit = Visit(mrn="MRN-SY1", visit="VSY1")
    await ingest(worker_engine, _sequence(visit, "SY1-"))
    await settle_worker(worker_engine)
    async with sync_worker(worker_engine, fhir_server) as sync:
        settled = await sync.drain()
        (status,) = sync.status()
    assert settled >= 1
    assert (await outbox_states(worker_engine)).get("pending", 0) == 0
    assert status.stats.sent >= 1
    assert status.breaker == "closed"
    await _assert_delivered_once(worker_engine, fhir_server)
    # server ids and versions are kept per resource
    kept = await rows(worker_engine, sync_state)
    episodes = [r for r in kept if r.resource_type == "EpisodeOfCare"]
    assert episodes
    assert all(r.server_id and r.version_id for r in episodes)


async def test_inbox_replay_and_outbox_resend_create_no_duplicates(
    worker_engine: AsyncEngine, fhir_server: str
) -> None:
    visit = Visit(mrn="MRN-SY2", visit="VSY2")
    messages = _sequence(visit, "SY2-")
    await ingest(worker_engine, messages)
    await settle_worker(worker_engine)
    async with sync_worker(worker_engine, fhir_server) as sync:
        await sync.drain()
        # the same messages again (a sender's replay), then every row sent again
        await ingest(worker_engine, messages)
        await settle_worker(worker_engine)
        async with worker_engine.begin() as connection:
            marked = await connection.run_sync(
                lambda c: mark_for_resend(c, hours(100), every_state=True)
            )
        assert marked >= 1
        await sync.drain()
    assert (await outbox_states(worker_engine)).get("pending", 0) == 0
    await _assert_delivered_once(worker_engine, fhir_server)


async def test_an_outage_mid_run_delivers_everything_after_recovery_in_order(
    worker_engine: AsyncEngine, faulty_fhir_server: FhirFaults
) -> None:
    base = faulty_fhir_server.base_url
    visits = [Visit(mrn=f"MRN-SY3-{n}", visit=f"VSY3{n}") for n in range(3)]
    await ingest(worker_engine, [v.raw("A01", f"SY3-{n}", hours(0)) for n, v in enumerate(visits)])
    await settle_worker(worker_engine)
    async with sync_worker(worker_engine, base) as sync:
        await sync.drain()  # the admissions are on the server
        faulty_fhir_server.set(fail_ratio_503=1.0)  # the EHR goes down
        await ingest(
            worker_engine,
            [
                v.raw("A02", f"SY3-{n}b", hours(5), location="5EAST", prior_location="4WEST")
                for n, v in enumerate(visits)
            ],
        )
        await ingest(
            worker_engine, [v.raw("A03", f"SY3-{n}c", hours(30)) for n, v in enumerate(visits)]
        )
        await settle_worker(worker_engine)
        await sync.drain()
        assert (await outbox_states(worker_engine)).get("pending", 0) >= len(visits)
        assert sync.status()[0].stats.retried >= 1
        faulty_fhir_server.clear()
        await sync.drain(settle_backoff=True, timeout=60)
    assert (await outbox_states(worker_engine)).get("pending", 0) == 0
    await _assert_delivered_once(worker_engine, base)


async def test_a_refused_write_is_failed_with_its_outcome_and_blocks_no_one(
    worker_engine: AsyncEngine, fhir_server: str, worker_http: httpx.AsyncClient
) -> None:
    good = Visit(mrn="MRN-SY4-A", visit="VSY4A")
    bad = Visit(mrn="MRN-SY4-B", visit="VSY4B")
    await ingest(
        worker_engine, [bad.raw("A01", "SY4-B", hours(0)), good.raw("A01", "SY4-A", hours(0))]
    )
    await settle_worker(worker_engine)
    # break the bad patient's Bundle the way a server refuses it: an invalid resource
    async with worker_engine.begin() as connection:
        (row,) = (
            await connection.execute(
                select(outbox.c.id, outbox.c.bundle).where(outbox.c.patient_key.like("%SY4-B%"))
            )
        ).all()
        bundle = orjson.loads(row.bundle)
        bundle["entry"][0]["resource"]["status"] = "no-such-status"
        await connection.execute(
            update(outbox).where(outbox.c.id == row.id).values(bundle=orjson.dumps(bundle))
        )
    async with sync_worker(worker_engine, fhir_server) as sync:
        await sync.drain()
    states = await outbox_states(worker_engine)
    assert states == {"failed": 1, "sent": 1}
    listed = await worker_http.get("/api/outbox/items", params={"state": "failed"})
    (item,) = listed.json()["items"]
    assert item["last_outcome"]["resourceType"] == "OperationOutcome"
    assert item["last_error"].startswith("HTTP 4")


async def test_a_412_rereads_reapplies_our_fields_and_keeps_the_ehrs(
    worker_engine: AsyncEngine, fhir_server: str
) -> None:
    visit = Visit(mrn="MRN-SY5", visit="VSY5")
    await ingest(worker_engine, [visit.raw("A01", "SY5-1", hours(0))])
    await settle_worker(worker_engine)
    async with sync_worker(worker_engine, fhir_server) as sync:
        await sync.drain()
        tasks = [i for i in await expected_identifiers(worker_engine) if i.startswith("Task|")]
        assert tasks
        # A nurse starts the first Task in the EHR: a new version we have not seen.
        async with httpx.AsyncClient() as ehr:
            found = (await ehr.get(search_url(fhir_server, tasks[0]))).json()
            task = found["entry"][0]["resource"]
            task["status"] = "in-progress"
            task["note"] = [{"text": "started on the ward"}]
            edited = await ehr.put(f"{fhir_server}/Task/{task['id']}", json=task)
            assert edited.status_code == 200, edited.text
        # The patient moves: our next Bundle writes the Task again, with If-Match of our version.
        await ingest(
            worker_engine,
            [visit.raw("A02", "SY5-2", hours(5), location="5EAST", prior_location="4WEST")],
        )
        await settle_worker(worker_engine)
        await sync.drain()
        assert sync.status()[0].stats.conflicts >= 1
    assert (await outbox_states(worker_engine)).get("pending", 0) == 0
    found_now = await on_server(fhir_server, tasks)
    ours = await _served(worker_engine)
    first = found_now[tasks[0]]
    assert len(first) == 1
    assert first[0]["status"] == "in-progress"  # the EHR's
    assert first[0]["note"] == [{"text": "started on the ward"}]
    mine = {k: v for k, v in ours[tasks[0]].items() if k not in ("status", "note", "owner")}
    theirs = {k: v for k, v in first[0].items() if k not in ("status", "note", "owner")}
    assert _content(theirs) == _content(mine)  # ours, re-applied onto their version
    for other in tasks[1:]:
        assert len(found_now[other]) == 1


async def test_a_patient_the_ehr_knows_is_referenced_literally(
    worker_engine: AsyncEngine, fhir_server: str
) -> None:
    run = uuid.uuid4().hex[:6]  # the server outlives one run: a patient of its own each time
    known = Visit(mrn=f"MRN-SY6-K{run}", visit="VSY6K")
    unknown = Visit(mrn=f"MRN-SY6-U{run}", visit="VSY6U")
    await ingest(
        worker_engine, [known.raw("A01", "SY6-K", hours(0)), unknown.raw("A01", "SY6-U", hours(0))]
    )
    await settle_worker(worker_engine)
    (episode,) = [
        orjson.loads(r.resource)
        for r in await rows(worker_engine, fhir_resources)
        if r.resource_type == "EpisodeOfCare" and "SY6-K" in r.patient_identifier
    ]
    identifier = episode["patient"]["identifier"]
    async with httpx.AsyncClient() as ehr:
        created = await ehr.post(
            f"{fhir_server}/Patient",
            json={"resourceType": "Patient", "identifier": [identifier], "active": True},
        )
        assert created.status_code == 201, created.text
    patient_id = created.json()["id"]
    async with sync_worker(worker_engine, fhir_server) as sync:
        await sync.drain()
    wanted = sorted(await expected_identifiers(worker_engine))
    found = await on_server(fhir_server, [i for i in wanted if i.startswith("EpisodeOfCare|")])
    patients = {
        r[0]["patient"]["identifier"]["value"]: r[0]["patient"] for r in found.values() if r
    }
    linked = patients[identifier["value"]]
    assert linked["reference"] == f"Patient/{patient_id}"
    assert linked["identifier"] == identifier
    (other,) = [p for value, p in patients.items() if value != identifier["value"]]
    assert "reference" not in other  # not in the EHR: a logical reference
    # the answers are cached per endpoint: found and not found alike
    kept = {r.identifier: r.server_id for r in await rows(worker_engine, sync_state)}
    assert kept[f"{identifier['system']}|{identifier['value']}"] == patient_id
    assert None in kept.values()
