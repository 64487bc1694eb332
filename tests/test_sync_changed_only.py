"""Only what changed is written again, on SQLite and PostgreSQL, against the real test FHIR
server: after a case's first delivery, a later version sends only the resources whose content
differs from what the endpoint acknowledged (references to the others become literal), and the
server ends holding the newest version of every resource; ``outbox resend --every-state`` sends
every resource again. Requests are observed on the wire under the real transport.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from cm_fhir.store.case_tables import outbox
from cm_fhir.store.outbox import mark_for_resend
from cm_fhir.sync.runner import SyncWorker
from sync_fixtures import FAST, FAST_RETRY, Observed, endpoint, on_server
from worker_fixtures import ingest, settle_worker
from workflow_messages import Visit, hours

Json = dict[str, Any]


def _content(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _content(v) for k, v in value.items() if k not in ("id", "meta", "reference")}
    if isinstance(value, list):
        return [_content(v) for v in value]
    return value


async def _newest(engine: AsyncEngine) -> Json:
    query = select(outbox.c.bundle).where(
        outbox.c.id == select(func.max(outbox.c.id)).scalar_subquery()
    )
    async with engine.connect() as connection:
        return dict(orjson.loads((await connection.execute(query)).scalar_one()))


def _key(resource: Json) -> str:
    ident = resource["identifier"][0]
    return f"{resource['resourceType']}|{ident['system']}|{ident['value']}"


async def test_a_new_version_sends_only_the_resources_that_changed(
    worker_engine: AsyncEngine, fhir_server: str
) -> None:
    tag = uuid.uuid4().hex[:6]
    visit = Visit(mrn=f"MRN-CHG-{tag}", visit=f"VCHG{tag}")
    observed = Observed()
    async with SyncWorker(
        worker_engine, [endpoint(fhir_server)], FAST, retry=FAST_RETRY, transport=observed
    ) as sync:
        await ingest(worker_engine, [visit.raw("A01", f"CHG{tag}1", hours(0))])
        await settle_worker(worker_engine)
        first = await _newest(worker_engine)
        await sync.drain()
        transfer = visit.raw(
            "A02", f"CHG{tag}2", hours(5), location="5EAST", prior_location="4WEST"
        )
        await ingest(worker_engine, [transfer])
        await settle_worker(worker_engine)
        second = await _newest(worker_engine)
        before = {e["fullUrl"]: e["resource"] for e in first["entry"]}
        changed = {
            e["fullUrl"] for e in second["entry"] if before.get(e["fullUrl"]) != e["resource"]
        }
        assert 0 < len(changed) < len(second["entry"])  # the transfer changes part of the case
        sent_before = len(observed.transactions)
        await sync.drain()
        sent = [e for status, entries in observed.transactions[sent_before:] for e in entries]
        assert {e["fullUrl"] for e in sent} == changed
        # the server holds the newest version of every resource, once
        wanted = {_key(e["resource"]): e["resource"] for e in second["entry"]}
        found = await on_server(fhir_server, sorted(wanted))
        for key, resources in found.items():
            assert len(resources) == 1, key
            assert _content(resources[0]) == _content(wanted[key]), key
        # a resend of every state sends everything again
        async with worker_engine.begin() as connection:
            await connection.run_sync(
                lambda c: mark_for_resend(c, datetime.now(UTC), every_state=True)
            )
        sent_before = len(observed.transactions)
        await sync.drain()
        again = [e for status, entries in observed.transactions[sent_before:] for e in entries]
        assert len(again) == len(second["entry"])
