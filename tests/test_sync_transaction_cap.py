"""The transaction cap of an endpoint is learnt once, before the delivery sends more, on SQLite and
PostgreSQL, against the real test FHIR server: the plain server refuses transactions of more
than 8 conditional entries without saying its limit; the capped one says "at most 8". Requests are
observed on the wire (a transport that records each answer's status under the real one).
"""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncEngine

from cm_fhir.fhir_client.status import stated_cap
from cm_fhir.sync.runner import SyncWorker
from sync_fixtures import FAST, FAST_RETRY, Observed, endpoint, expected_identifiers, on_server
from worker_fixtures import ingest, settle_worker
from workflow_messages import Visit, hours


async def _admit(engine: AsyncEngine, patients: int) -> None:
    tag = uuid.uuid4().hex[:6]
    feed = [
        Visit(mrn=f"MRN-CAP-{tag}-{n}", visit=f"VCAP{tag}{n}").raw("A01", f"CAP{tag}{n}", hours(0))
        for n in range(patients)
    ]
    await ingest(engine, feed)
    await settle_worker(engine)


async def _all_there(engine: AsyncEngine, base_url: str) -> None:
    found = await on_server(base_url, sorted(await expected_identifiers(engine)))
    assert all(len(resources) == 1 for resources in found.values())


async def test_the_cap_a_server_does_not_state_is_learnt_with_two_refusals_then_kept(
    worker_engine: AsyncEngine, fhir_server: str
) -> None:
    observed = Observed()
    await _admit(worker_engine, 30)
    async with SyncWorker(
        worker_engine, [endpoint(fhir_server)], FAST, retry=FAST_RETRY, transport=observed
    ) as sync:
        await sync.drain()
        # 10 cases (40 entries) refused, 5 (20) refused, then 2 (8) taken: nothing sent bigger
        assert observed.refused() <= 2
        first = len(observed.transactions)
        await _admit(worker_engine, 30)
        await sync.drain()
        assert observed.refused() <= 2  # learnt once for the endpoint
        assert len(observed.transactions) - first <= 15  # two cases of four entries each
    await _all_there(worker_engine, fhir_server)


async def test_a_cap_the_server_states_is_taken_from_its_first_refusal(
    worker_engine: AsyncEngine, capped_fhir_server: str
) -> None:
    observed = Observed()
    await _admit(worker_engine, 30)
    async with SyncWorker(
        worker_engine, [endpoint(capped_fhir_server)], FAST, retry=FAST_RETRY, transport=observed
    ) as sync:
        await sync.drain()
    assert observed.refused() == 1
    await _all_there(worker_engine, capped_fhir_server)


def test_the_stated_cap_is_read_from_the_outcome_text() -> None:
    def outcome(text: str) -> dict[str, object]:
        issue = {"severity": "error", "code": "too-costly", "details": {"text": text}}
        return {"resourceType": "OperationOutcome", "issue": [issue]}

    assert stated_cap(outcome("Transaction has 40 entries; this server accepts at most 8")) == 8
    assert stated_cap(outcome("Transaction requires strict isolation but has too many")) is None
    assert stated_cap(None) is None
