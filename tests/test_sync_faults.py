"""Delivery through a flaky EHR: the server answers 20% of requests 503 and 10% 429 (with
Retry-After); every expected resource still ends on the server exactly once, with what each case's
newest Bundle says. The default suite sends 60 ADT messages; the slow soak the 500 of the issue.
"""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from fhir_server_fixture import FhirFaults
from sync_fixtures import expected_identifiers, on_server, outbox_states, sync_worker
from test_sync_delivery import _content, _served
from worker_fixtures import ingest, settle_worker
from workflow_messages import Visit, hours


def _feed(patients: int, tag: str) -> list[str]:
    """Five events per patient (admit, transfer, update, discharge, update), interleaved."""
    visits = [Visit(mrn=f"MRN-{tag}-{n}", visit=f"V{tag}{n}") for n in range(patients)]
    steps = [
        lambda v, c: v.raw("A01", c, hours(0)),
        lambda v, c: v.raw("A02", c, hours(4), location="5EAST", prior_location="4WEST"),
        lambda v, c: v.raw("A08", c, hours(6), location="5EAST"),
        lambda v, c: v.raw("A03", c, hours(30), location="5EAST"),
        lambda v, c: v.raw("A08", c, hours(31), location="5EAST"),
    ]
    return [step(v, f"{tag}-{n}-{s}") for s, step in enumerate(steps) for n, v in enumerate(visits)]


async def _flaky_run(engine: AsyncEngine, faults: FhirFaults, patients: int, tag: str) -> None:
    messages = _feed(patients, tag)
    faults.set(fail_ratio_503=0.2, fail_ratio_429=0.1, retry_after=0, seed=7)
    async with sync_worker(engine, faults.base_url) as sync:
        # the worker and the sync role run side by side, in rounds of arriving messages
        for start in range(0, len(messages), patients):
            await ingest(engine, messages[start : start + patients])
            await settle_worker(engine)
            await sync.drain()
        await sync.drain(settle_backoff=True, timeout=240)
        stats = sync.status()[0].stats
    counted = faults.requests()
    faults.clear()
    assert sum(counted["faults"].values()) >= counted["total"] // 5, counted["faults"]
    assert (await outbox_states(engine)).get("pending", 0) == 0
    assert (await outbox_states(engine)).get("failed", 0) == 0
    assert stats.sent >= patients * 2  # each case written again as its patient moved on
    wanted = sorted(await expected_identifiers(engine))
    assert len([i for i in wanted if i.startswith("EpisodeOfCare|")]) == patients
    found = await on_server(faults.base_url, wanted)
    served = await _served(engine)
    for identifier, resources in found.items():
        assert len(resources) == 1, f"{identifier}: {len(resources)} on the server"
        assert _content(resources[0]) == _content(served[identifier]), identifier


async def test_60_messages_through_503s_and_429s_end_on_the_server_once(
    worker_engine: AsyncEngine, faulty_fhir_server: FhirFaults
) -> None:
    await _flaky_run(worker_engine, faulty_fhir_server, 12, "FLK")


@pytest.mark.slow
async def test_500_messages_through_503s_and_429s_end_on_the_server_once(
    worker_engine: AsyncEngine, faulty_fhir_server: FhirFaults
) -> None:
    await _flaky_run(worker_engine, faulty_fhir_server, 100, "SOAK")
