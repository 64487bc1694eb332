"""Two sync workers on one outbox, a lease that runs out, and the endpoint's rate limit, against
the real test FHIR server, on SQLite and PostgreSQL.

Each worker has its own id and leases rows per patient: no case write goes out from both, a
patient's writes go out in order, and rows leased by a worker that died (claimed, never settled)
are taken over once their lease has run out. The rate limit is counted where it matters: on the
server, by arrival time.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from cm_fhir.store.case_tables import outbox
from cm_fhir.store.outbox import claim_patients
from fhir_server_fixture import FhirFaults
from sync_fixtures import FAST, outbox_states, sync_worker
from test_sync_delivery import _assert_delivered_once
from worker_fixtures import ingest, settle_worker
from workflow_messages import Visit, hours

ONE_CASE = FAST.model_copy(update={"cases_per_transaction": 1, "batch_patients": 3})


def _feed(patients: int, tag: str, step: int) -> list[str]:
    """One ADT event per patient: admit, then updates (each a new Bundle of the same case)."""
    out = []
    for n in range(patients):
        visit = Visit(mrn=f"MRN-{tag}-{n}", visit=f"V{tag}{n}")
        if step == 0:
            out.append(visit.raw("A01", f"{tag}-{n}-{step}", hours(0)))
        else:
            out.append(visit.raw("A08", f"{tag}-{n}-{step}", hours(step), location=f"W{step}"))
    return out


async def _sent_rows(engine: AsyncEngine) -> list[tuple[str, int, datetime]]:
    query = select(outbox.c.patient_key, outbox.c.id, outbox.c.sent_at).where(
        outbox.c.state == "sent"
    )
    async with engine.connect() as connection:
        return [(str(k), int(i), s) for k, i, s in (await connection.execute(query)).all()]


async def test_two_sync_workers_share_the_outbox_sending_each_write_once_in_order(
    worker_engine: AsyncEngine, faulty_fhir_server: FhirFaults
) -> None:
    faults = faulty_fhir_server
    faults.set(delay_ms=15)  # writes overlap in time: both workers are busy at once
    patients = 8
    async with (
        sync_worker(worker_engine, faults.base_url, ONE_CASE) as first,
        sync_worker(worker_engine, faults.base_url, ONE_CASE) as second,
    ):
        assert first.worker_id != second.worker_id
        for step in range(3):
            await ingest(worker_engine, _feed(patients, "TWO", step))
            await settle_worker(worker_engine)
            # both drain the same outbox at the same time
            await asyncio.gather(first.drain(), second.drain())
        sent = [first.status()[0].stats.sent, second.status()[0].stats.sent]
    counted = faults.requests()
    assert (await outbox_states(worker_engine)).get("pending", 0) == 0
    assert all(n > 0 for n in sent), f"one worker did all the work: {sent}"
    # one transaction per case write: as many as were sent, so none went out twice
    assert counted["by_request"].get("POST transaction", 0) == sum(sent)
    rows = await _sent_rows(worker_engine)
    assert len(rows) == sum(sent)
    # a patient's writes were settled in the order they were enqueued
    by_patient: dict[str, list[tuple[int, datetime]]] = {}
    for key, row_id, sent_at in rows:
        by_patient.setdefault(key, []).append((row_id, sent_at))
    assert len(by_patient) == patients
    for key, chain in by_patient.items():
        times = [at for _, at in sorted(chain)]
        assert times == sorted(times), key
    await _assert_delivered_once(worker_engine, faults.base_url)


async def test_a_lease_left_by_a_dead_worker_is_taken_over_after_it_runs_out(
    worker_engine: AsyncEngine, faulty_fhir_server: FhirFaults
) -> None:
    faults = faulty_fhir_server
    await ingest(worker_engine, _feed(2, "DEAD", 0))
    await settle_worker(worker_engine)
    # a worker claims the rows and dies before it writes or settles them
    async with worker_engine.begin() as connection:
        claimed = await connection.run_sync(
            lambda c: claim_patients(
                c, "default", "dead-worker", datetime.now(UTC), lease=timedelta(seconds=1.5)
            )
        )
    assert len(claimed) == 2
    async with sync_worker(worker_engine, faults.base_url, ONE_CASE) as survivor:
        assert await survivor.drain() == 0  # leased: not taken while the lease holds
        assert faults.requests()["total"] == 0
        await asyncio.sleep(1.6)
        assert await survivor.drain() == 2  # the lease ran out: taken over
    assert (await outbox_states(worker_engine)).get("pending", 0) == 0
    async with worker_engine.connect() as connection:
        leased = (await connection.execute(select(outbox.c.leased_by))).scalars().all()
    assert set(leased) == {None}
    await _assert_delivered_once(worker_engine, faults.base_url)


async def test_the_endpoint_rate_limit_holds_on_the_server_side(
    worker_engine: AsyncEngine, faulty_fhir_server: FhirFaults
) -> None:
    faults = faulty_fhir_server
    await ingest(worker_engine, _feed(12, "RATE", 0))
    await settle_worker(worker_engine)
    rate = 8.0
    config = FAST.model_copy(update={"cases_per_transaction": 1, "concurrent_requests": 4})
    async with sync_worker(worker_engine, faults.base_url, config, rate_limit=rate) as sync:
        assert await sync.drain() == 12
    arrivals = sorted(faults.requests()["at_ms"])
    assert len(arrivals) >= 13  # a Patient search and one transaction per case
    # in every one-second window at most `rate` requests (+2: both ends, and arrival jitter)
    for i, start in enumerate(arrivals):
        in_window = [t for t in arrivals[i:] if t < start + 1000]
        assert len(in_window) <= rate + 2, (start, len(in_window))
    span = (arrivals[-1] - arrivals[0]) / 1000
    assert span >= (len(arrivals) - 1) / rate * 0.9
