"""``POST /api/outbox/resend`` on SQLite and PostgreSQL, delivered to the real test FHIR server.

The rules are those of ``cm-fhir outbox resend`` (the same store function): what failed is sent
again, ``all`` sends every case again, only the newest Bundle of a case is ever marked; the
``write`` scope is needed, an unknown endpoint or field is refused and changes nothing, and every
resend is audited."""

from __future__ import annotations

import orjson
from fastapi import FastAPI
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from api_case_helpers import case_app, client
from cm_fhir.store.audit import list_audit
from cm_fhir.store.case_tables import outbox
from sync_fixtures import expected_identifiers, on_server, outbox_states, sync_worker
from worker_fixtures import ingest, settle_worker
from workflow_messages import Visit, hours

__all__ = ["case_app"]

RESEND = "/api/outbox/resend"


async def _refused_bundle(engine: AsyncEngine) -> tuple[int, str, bytes]:
    """Break one patient's Bundle (an invalid status) so the server refuses it."""
    async with engine.begin() as connection:
        row = (
            await connection.execute(
                select(outbox.c.id, outbox.c.case_id, outbox.c.bundle).where(
                    outbox.c.patient_key.like("%AR-0%")
                )
            )
        ).one()
        broken = orjson.loads(row.bundle)
        broken["entry"][0]["resource"]["status"] = "no-such-status"
        await connection.execute(
            update(outbox).where(outbox.c.id == row.id).values(bundle=orjson.dumps(broken))
        )
    return int(row.id), str(row.case_id), bytes(row.bundle)


async def test_resend_over_the_api_delivers_what_failed_then_every_case(
    case_app: FastAPI, worker_engine: AsyncEngine, fhir_server: str
) -> None:
    visits = [Visit(mrn=f"MRN-AR-{n}", visit=f"VAR{n}") for n in range(2)]
    await ingest(worker_engine, [v.raw("A01", f"AR-{n}", hours(0)) for n, v in enumerate(visits)])
    await settle_worker(worker_engine)
    row_id, case_id, good = await _refused_bundle(worker_engine)
    async with sync_worker(worker_engine, fhir_server) as sync:
        await sync.drain()
    assert await outbox_states(worker_engine) == {"failed": 1, "sent": 1}

    async with client(case_app, "reader-token") as http:
        refused = await http.post(RESEND, json={})
    assert refused.status_code == 403
    async with client(case_app, "writer-token") as http:
        assert (await http.post(RESEND, json={"endpoint": "nowhere"})).status_code == 422
        assert (await http.post(RESEND, json={"everything": True})).status_code == 422
    assert await outbox_states(worker_engine) == {"failed": 1, "sent": 1}

    async with worker_engine.begin() as connection:  # the cause is fixed
        await connection.execute(update(outbox).where(outbox.c.id == row_id).values(bundle=good))
    async with client(case_app, "writer-token") as http:
        answer = await http.post(RESEND, json={"endpoint": "default"})
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"marked": 1}
        again = await http.post(RESEND, json={})  # nothing failed is left to mark
        assert again.json() == {"marked": 0}
    assert await outbox_states(worker_engine) == {"pending": 1, "sent": 1}
    async with sync_worker(worker_engine, fhir_server) as sync:
        await sync.drain()
    assert await outbox_states(worker_engine) == {"sent": 2}

    async with client(case_app, "writer-token") as http:
        one = await http.post(RESEND, json={"all": True, "case_id": case_id})
        assert one.json() == {"marked": 1}
        every = await http.post(RESEND, json={"all": True, "since": "2000-01-01"})
        assert every.json() == {"marked": 2}
    async with sync_worker(worker_engine, fhir_server) as sync:
        await sync.drain()
    assert await outbox_states(worker_engine) == {"sent": 2}
    wanted = sorted(await expected_identifiers(worker_engine))
    found = await on_server(fhir_server, wanted)
    assert all(len(resources) == 1 for resources in found.values()), found.keys()

    async with worker_engine.connect() as connection:
        audit = await list_audit(connection, entity_type="outbox")
    resends = [a for a in audit if a["action"] == "resend"]
    assert len(resends) == 4
    assert {a["subject"] for a in resends} == {"test:writer-token"}
    assert case_id in {a["entity_id"] for a in resends}


async def test_only_the_newest_bundle_of_a_case_is_marked(
    case_app: FastAPI, worker_engine: AsyncEngine
) -> None:
    visit = Visit(mrn="MRN-NEW-1", visit="VNEW1")
    await ingest(worker_engine, [visit.raw("A01", "NEW-1", hours(0))])
    await settle_worker(worker_engine)
    await ingest(worker_engine, [visit.raw("A02", "NEW-2", hours(1), location="5EAST")])
    await settle_worker(worker_engine)
    async with worker_engine.begin() as connection:
        await connection.execute(update(outbox).values(state="failed"))
        ids = (await connection.execute(select(outbox.c.id).order_by(outbox.c.id))).scalars()
        ids = list(ids)
    assert len(ids) >= 2
    async with client(case_app, "writer-token") as http:
        answer = await http.post(RESEND, json={})
    assert answer.json() == {"marked": 1}
    async with worker_engine.connect() as connection:
        states = dict((await connection.execute(select(outbox.c.id, outbox.c.state))).all())
    assert states[ids[-1]] == "pending"
    assert all(states[i] == "failed" for i in ids[:-1])
