"""``/metrics`` from write-time counters, on SQLite and PostgreSQL: the counters agree with an
aggregate over the rows after every kind of write (ingest, processing, replay, purge, outbox
changes), folding changes no figure, writers never wait on a counter row, the migration seeds the
counters from rows already stored, and TRUNCATE resets them. The outbox is counted once, from its
rows by endpoint and state: its writes add no counter row, and revision 0011 drops (and its
downgrade restores) the per-state outbox counters."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from cm_fhir.api.metrics import snapshot
from cm_fhir.retention_policy import RetentionSettings
from cm_fhir.store.case_tables import outbox, trace
from cm_fhir.store.counters import LATENCY_BOUNDS, fold, metric_delta, read_counters
from cm_fhir.store.engine import make_engine, upgrade_database
from cm_fhir.store.queue import replay
from cm_fhir.store.retention import purge
from cm_fhir.store.tables import inbox_messages
from inbox_fixtures import Database, _pg_admin
from worker_fixtures import ingest, settle_worker
from workflow_messages import Visit, hours

_SETTLED = ("processed", "failed", "dead_lettered", "needs_attention")


async def _from_rows(engine: AsyncEngine) -> dict[str, Any]:
    """What the counters must say, aggregated over the rows themselves."""
    t = inbox_messages
    async with engine.connect() as connection:
        grouped = select(
            func.coalesce(t.c.message_type, ""),
            func.coalesce(t.c.trigger_event, ""),
            func.coalesce(t.c.ack_code, ""),
            t.c.state,
            func.count(),
        ).group_by(t.c.message_type, t.c.trigger_event, t.c.ack_code, t.c.state)
        inbox = {tuple(r[:4]): int(r[4]) for r in (await connection.execute(grouped)).all()}
        boxes = select(outbox.c.endpoint, outbox.c.state, func.count())
        boxes = boxes.group_by(outbox.c.endpoint, outbox.c.state)
        out = {(str(e), str(s)): int(n) for e, s, n in (await connection.execute(boxes)).all()}
        flagged = select(trace.c.flags).where(trace.c.flags.is_not(None))
        flags: Counter[str] = Counter()
        for (value,) in (await connection.execute(flagged)).all():
            flags.update(str(value).split(","))
        settled = select(func.count()).where(t.c.state.in_(_SETTLED))
        latency = int((await connection.execute(settled)).scalar_one())
    return {"inbox": inbox, "outbox": out, "flags": dict(flags), "latency": latency}


async def _from_counters(engine: AsyncEngine) -> dict[str, Any]:
    async with engine.connect() as connection:
        counters = await read_counters(connection)
        snap = await snapshot(connection)
    return {
        "inbox": counters.inbox,
        "outbox": snap.outbox_states,
        "flags": {k: v for k, v in counters.flags.items() if v},
        "latency": sum(counters.latency.values()),
    }


async def _fold(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.run_sync(fold)


def _feed() -> list[str]:
    one, two = Visit(mrn="MRN-M1", visit="VM1"), Visit(mrn="MRN-M2", visit="VM2", payer=None)
    return [
        one.raw("A01", "M-1", hours(0)),
        two.raw("A01", "M-2", hours(1)),
        one.raw("A08", "M-3", hours(2)),
        two.raw("A03", "M-4", hours(3), disposition="01", discharge=hours(3)),
        "MSH|^~\\&|ADTSYS|NORTHSIDE|CMFHIR|CM|20240301||ORU^R01|M-5|P|2.5.1\rOBX|1",
        "this is not HL7 at all",
    ]


async def test_counters_agree_with_the_rows_after_every_kind_of_write(
    worker_engine: AsyncEngine, worker_http: httpx.AsyncClient
) -> None:
    engine = worker_engine
    await ingest(engine, _feed())
    assert await _from_counters(engine) == await _from_rows(engine)
    await settle_worker(engine)
    expected = await _from_rows(engine)
    assert expected["inbox"]  # the feed settled into several states
    assert expected["outbox"]
    assert await _from_counters(engine) == expected
    # a replay puts rows back (-1 settled, +1 received), a second pass settles them again
    replayed = await replay(engine)
    assert replayed > 0
    assert await _from_counters(engine) == {
        **await _from_rows(engine),
        "latency": expected["latency"],
    }
    await settle_worker(engine)
    after = await _from_rows(engine)
    counted = await _from_counters(engine)
    assert counted["inbox"] == after["inbox"]
    # one observation per settlement: each replayed row that settled again adds one
    waiting = sum(n for (_, _, _, state), n in after["inbox"].items() if state == "received")
    assert counted["latency"] == expected["latency"] + replayed - waiting
    # an outbox row changing state and rows deleted
    async with engine.begin() as connection:
        await connection.execute(update(outbox).values(state="sent", updated_at=hours(4)))
    policy = RetentionSettings(raw_messages="1d", trace="off", audit="off", sent_outbox="1d")
    purged = await purge(engine, policy, datetime.now(UTC) + timedelta(days=400))
    assert purged.counts["raw_messages"]
    assert (await _from_counters(engine))["outbox"] == (await _from_rows(engine))["outbox"]
    assert (await _from_counters(engine))["inbox"] == (await _from_rows(engine))["inbox"]
    # and /metrics says the same as the rows
    body = (await worker_http.get("/metrics")).text
    states = Counter[str]()
    for (_, _, _, state), count in (await _from_rows(engine))["inbox"].items():
        states[state] += count
    for state, count in states.items():
        assert f'cm_fhir_inbox_depth{{state="{state}"}} {float(count)}' in body
    settled_count = re.search(r"cm_fhir_message_processing_seconds_count ([0-9.]+)", body)
    assert settled_count is not None
    assert float(settled_count.group(1)) == counted["latency"]


async def test_folding_moves_deltas_and_changes_no_figure(worker_engine: AsyncEngine) -> None:
    await ingest(worker_engine, _feed())
    await settle_worker(worker_engine)
    before = await _from_counters(worker_engine)
    async with worker_engine.connect() as connection:
        deltas = (await connection.execute(select(func.count()).select_from(metric_delta))).scalar()
    assert deltas
    await _fold(worker_engine)
    await _fold(worker_engine)  # nothing left: a no-op
    async with worker_engine.connect() as connection:
        left = (await connection.execute(select(func.count()).select_from(metric_delta))).scalar()
        snap = await snapshot(connection)
    assert left == 0
    assert await _from_counters(worker_engine) == before
    assert sum(snap.states.values()) == len(_feed())
    assert snap.oldest_received_age == 0.0  # nothing queued


async def test_the_queue_gauges_read_the_queued_rows(worker_engine: AsyncEngine) -> None:
    long_ago = datetime.now(UTC) - timedelta(hours=2)
    row = {
        "received_at": long_ago,
        "updated_at": long_ago,
        "state": "received",
        "content_sha256": "0" * 64,
        "raw": b"MSH|",
        "reason": "waits behind dead letter #1",
    }
    async with worker_engine.begin() as connection:
        await connection.execute(insert(inbox_messages), [row, {**row, "content_sha256": "1"}])
    async with worker_engine.connect() as connection:
        snap = await snapshot(connection)
    assert 7100 < snap.oldest_received_age < 7300
    assert snap.waiting == 2
    assert snap.states == {"received": 2}


async def test_writers_never_wait_on_a_counter_row(worker_engine: AsyncEngine) -> None:
    """Two open transactions both add inbox rows of the same labels; neither blocks."""
    if worker_engine.dialect.name != "postgresql":
        return  # SQLite has one writer by design
    rows = [
        {
            "received_at": datetime.now(UTC),
            "updated_at": datetime.now(UTC),
            "state": "received",
            "content_sha256": f"{n}",
            "raw": b"MSH|",
            "message_type": "ADT",
            "trigger_event": "A01",
            "ack_code": "AA",
        }
        for n in range(2)
    ]
    async with worker_engine.connect() as first, worker_engine.connect() as second:
        await first.begin()
        await second.begin()
        await first.execute(insert(inbox_messages), [rows[0]])
        async with asyncio.timeout(5):  # a shared counter row would block here until `first` ends
            await second.execute(insert(inbox_messages), [rows[1]])
            await second.commit()
        await first.commit()
    counted = await _from_counters(worker_engine)
    assert counted["inbox"] == {("ADT", "A01", "AA", "received"): 2}


async def test_the_migration_seeds_counters_from_stored_rows(
    database: Database, tmp_path: Path
) -> None:
    """Rows stored before the upgrade (written with the columns revision 0004 has) are counted."""
    schema = None
    if database.search_path is None:
        engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'old.sqlite3'}")
    else:
        schema = f"cmfhir_seed_{uuid.uuid4().hex[:12]}"
        await _pg_admin(f'CREATE SCHEMA "{schema}"')
        engine = make_engine(database.url, search_path=schema)
    try:
        await upgrade_database(engine, "0004_worker_fidelity")
        earlier = datetime.now(UTC) - timedelta(seconds=3)
        rows = [
            {
                "received_at": earlier,
                "updated_at": datetime.now(UTC),
                "state": state,
                "content_sha256": f"{n}",
                "raw": b"MSH|",
                "message_type": "ADT",
                "trigger_event": event,
                "ack_code": "AA",
            }
            for n, (state, event) in enumerate(
                [("processed", "A01"), ("processed", "A01"), ("received", "A08"), ("failed", "")]
            )
        ]
        async with engine.begin() as connection:
            await connection.execute(insert(inbox_messages), rows)
            await connection.execute(
                insert(trace),
                [
                    {"created_at": earlier, "rule": "r", "action": "a", "flags": flags}
                    for flags in ("no-visit-number", "no-visit-number,unmapped-disposition", None)
                ],
            )
            await connection.execute(
                insert(outbox),
                [
                    {
                        "created_at": earlier,
                        "updated_at": earlier,
                        "state": state,
                        "case_id": "c",
                        "patient_key": "p",
                        "case_identifier": "i",
                        "identifiers": "[]",
                        "bundle_sha256": "0",
                        "bundle": b"{}",
                    }
                    for state in ("sent", "pending", "pending")
                ],
            )
        await upgrade_database(engine)
        counted = await _from_counters(engine)
        assert counted == await _from_rows(engine)
        assert counted["flags"] == {"no-visit-number": 2, "unmapped-disposition": 1}
        async with engine.connect() as connection:
            snap = await snapshot(connection)
        assert snap.latency_count == 3
        assert snap.latency_buckets[LATENCY_BOUNDS.index(2.5)] == 0  # about 3 seconds each
        assert snap.latency_buckets[LATENCY_BOUNDS.index(5.0)] == 3  # cumulative
        assert 5.5 < snap.latency_sum < 20
    finally:
        await engine.dispose()
        if schema is not None:
            await _pg_admin(f'DROP SCHEMA "{schema}" CASCADE')


async def test_truncate_resets_the_counters(worker_engine: AsyncEngine) -> None:
    await ingest(worker_engine, _feed())
    await settle_worker(worker_engine)
    if worker_engine.dialect.name == "postgresql":
        async with worker_engine.begin() as connection:
            await connection.execute(text("TRUNCATE inbox_message, trace, outbox"))
    else:  # no TRUNCATE: DELETE fires the row triggers
        async with worker_engine.begin() as connection:
            for table in (inbox_messages, trace, outbox):
                await connection.execute(table.delete())
    counted = await _from_counters(worker_engine)
    assert counted["inbox"] == {}
    assert counted["outbox"] == {}
    if worker_engine.dialect.name == "postgresql":
        assert counted["flags"] == {}
        assert counted["latency"] == 0
