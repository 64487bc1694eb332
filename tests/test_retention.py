"""Retention of PHI on SQLite and PostgreSQL: what the purge blanks or deletes, what it never
touches (unprocessed, failed, dead-lettered, needs-attention rows; unsent outbox entries; the
newest entry of a case), dry runs, concurrent purgers, the worker role's job and ``db purge``."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from cm_fhir.cli import app
from cm_fhir.retention import RetentionJob
from cm_fhir.retention_policy import RetentionSettings, parse_age
from cm_fhir.store.audit import audit_events
from cm_fhir.store.case_tables import outbox, trace
from cm_fhir.store.engine import make_engine, upgrade_database
from cm_fhir.store.queue import replay
from cm_fhir.store.retention import purge
from cm_fhir.store.tables import inbox_messages
from inbox_fixtures import Database

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
OLD = NOW - timedelta(days=40)
YOUNG = NOW - timedelta(days=2)
STATES = ("received", "processed", "ignored", "failed", "dead_lettered", "needs_attention")
RAW = b"MSH|^~\\&|ADTSYS|NORTHSIDE|CMFHIR|CM|20261001||ADT^A01|C|P|2.5.1\rPID|1||MRN-SECRET"
POLICY = RetentionSettings(
    raw_messages="30d", trace="30d", audit="30d", sent_outbox="30d", batch_size=2
)


@pytest.fixture
async def store(worker_engine: AsyncEngine) -> AsyncEngine:
    if worker_engine.dialect.name == "postgresql":
        async with worker_engine.begin() as connection:
            await connection.execute(text("TRUNCATE audit_event RESTART IDENTITY"))
    return worker_engine


def _inbox(n: int, state: str, at: datetime) -> dict[str, Any]:
    return {
        "received_at": at,
        "updated_at": at,
        "state": state,
        "control_id": f"C{n}",
        "sending_application": "ADTSYS",
        "sending_facility": "NORTHSIDE",
        "content_sha256": hashlib.sha256(f"{n}".encode()).hexdigest(),
        "message_type": "ADT",
        "trigger_event": "A01",
        "patient_key": f"P{n}",
        "ack_code": "AA",
        "ack_bytes": b"ACK",
        "raw": RAW,
    }


def _outbox(case: str, state: str, at: datetime) -> dict[str, Any]:
    return {
        "created_at": at,
        "updated_at": at,
        "state": state,
        "case_id": case,
        "patient_key": "P",
        "case_identifier": f"urn:case|{case}",
        "identifiers": "[]",
        "bundle_sha256": "0" * 64,
        "bundle": b'{"resourceType":"Bundle","entry":[{"name":"MRN-SECRET"}]}',
    }


async def _seed(engine: AsyncEngine) -> dict[str, int]:
    """Old and young rows of every kind; the ids of the old inbox rows by state."""
    rows = [_inbox(n, s, OLD) for n, s in enumerate(STATES)]
    rows += [_inbox(10 + n, s, YOUNG) for n, s in enumerate(STATES)]
    async with engine.begin() as connection:
        await connection.execute(insert(inbox_messages), rows)
        found = await connection.execute(
            select(inbox_messages.c.id, inbox_messages.c.state).where(
                inbox_messages.c.received_at == OLD
            )
        )
        ids = {state: int(row_id) for row_id, state in found.all()}
        await connection.execute(
            insert(trace),
            [
                {
                    "created_at": at,
                    "inbox_message_id": ids[state],
                    "rule": f"rule.{state}",
                    "action": "open-case",
                    "patient_key": "P",
                }
                for state in STATES
                for at in (OLD, YOUNG)
            ],
        )
        await connection.execute(
            insert(audit_events),
            [
                {
                    "at": at,
                    "subject": "nurse",
                    "auth_method": "api-key",
                    "action": "read",
                    "entity_type": "case",
                    "outcome": "success",
                }
                for at in (OLD, OLD, YOUNG)
            ],
        )
        await connection.execute(
            insert(outbox),
            [
                _outbox("case-a", "sent", OLD),  # purged: a newer entry of case-a exists
                _outbox("case-a", "sent", OLD),  # purged
                _outbox("case-a", "sent", OLD + timedelta(days=1)),  # newest of case-a: kept
                _outbox("case-b", "pending", OLD),  # unsent: kept
                _outbox("case-b", "failed", OLD),  # unsent: kept
                _outbox("case-b", "sent", YOUNG),  # young: kept
            ],
        )
    return ids


async def _rows(engine: AsyncEngine, query: Any) -> list[Any]:
    async with engine.connect() as connection:
        return list((await connection.execute(query)).all())


async def test_purge_blanks_and_deletes_only_what_is_old_and_settled(store: AsyncEngine) -> None:
    await _seed(store)
    dry = await purge(store, POLICY, NOW, dry_run=True)
    assert dry.counts == {"raw_messages": 2, "trace": 2, "audit": 2, "sent_outbox": 2}
    assert len(await _rows(store, select(trace.c.id))) == 12  # a dry run changes nothing
    progress: list[tuple[str, int, int]] = []
    done = await purge(store, POLICY, NOW, progress=lambda *p: progress.append(p))
    assert done.counts == dry.counts
    assert ("raw_messages", 2, 2) in progress  # batches of 2, reported as they commit

    inbox = await _rows(
        store,
        select(
            inbox_messages.c.state,
            inbox_messages.c.received_at,
            inbox_messages.c.raw,
            inbox_messages.c.raw_purged_at,
            inbox_messages.c.control_id,
        ),
    )
    for state, received_at, raw, purged_at, control_id in inbox:
        old = received_at.replace(tzinfo=UTC) == OLD
        if old and state in ("processed", "ignored"):
            assert raw == b""
            assert purged_at is not None
            assert control_id is not None  # the row itself stays (dedup, counts)
        else:  # received, failed, dead-lettered, needs-attention, or young: untouched
            assert raw == RAW, (state, old)
            assert purged_at is None
    kept_trace = sorted(
        r.rule
        for r in await _rows(store, select(trace.c.rule, trace.c.created_at))
        if r.created_at.replace(tzinfo=UTC) == OLD
    )
    assert kept_trace == [
        f"rule.{s}" for s in sorted(("received", "failed", "dead_lettered", "needs_attention"))
    ]
    assert len(await _rows(store, select(trace.c.id))) == 10  # 6 young + 4 held old
    assert len(await _rows(store, select(audit_events.c.id))) == 1
    left = await _rows(store, select(outbox.c.case_id, outbox.c.state).order_by(outbox.c.id))
    assert left == [
        ("case-a", "sent"),
        ("case-b", "pending"),
        ("case-b", "failed"),
        ("case-b", "sent"),
    ]
    again = await purge(store, POLICY, NOW)
    assert again.total == 0


async def test_off_keeps_a_kind_and_a_replay_leaves_purged_rows_alone(store: AsyncEngine) -> None:
    await _seed(store)
    policy = RetentionSettings(raw_messages="30d", trace="off", audit="off", sent_outbox="off")
    counts = await purge(store, policy, NOW)
    assert counts.counts == {"raw_messages": 2, "trace": None, "audit": None, "sent_outbox": None}
    assert counts.describe().startswith("raw messages 2, trace rows off")
    assert len(await _rows(store, select(trace.c.id))) == 12
    # replaying everything puts back only rows that still have their message
    assert await replay(store) == 10
    purged = await _rows(
        store,
        select(inbox_messages.c.state).where(inbox_messages.c.raw_purged_at.is_not(None)),
    )
    assert sorted(r.state for r in purged) == ["ignored", "processed"]


async def test_the_api_says_when_a_raw_message_was_purged(
    store: AsyncEngine, worker_http: httpx.AsyncClient
) -> None:
    ids = await _seed(store)
    await purge(store, POLICY, NOW)
    purged = (await worker_http.get(f"/api/messages/{ids['processed']}?include_raw=true")).json()
    assert purged["raw"] is None
    assert purged["raw_purged_at"] is not None
    kept = (await worker_http.get(f"/api/messages/{ids['failed']}?include_raw=true")).json()
    assert "MRN-SECRET" in kept["raw"]
    assert kept["raw_purged_at"] is None


async def test_concurrent_purgers_share_the_work(store: AsyncEngine, database: Database) -> None:
    rows = [_inbox(n, "processed", OLD) for n in range(60)]
    async with store.begin() as connection:
        await connection.execute(insert(inbox_messages), rows)
    policy = RetentionSettings(trace="off", audit="off", sent_outbox="off", batch_size=5)
    others = [database.engine() for _ in range(2)]
    try:
        results = await asyncio.gather(*(purge(e, policy, NOW) for e in [store, *others]))
    finally:
        for engine in others:
            await engine.dispose()
    assert sum(r.counts["raw_messages"] or 0 for r in results) == 60
    left = await _rows(store, select(func.count()).where(inbox_messages.c.raw_purged_at.is_(None)))
    assert left == [(0,)]


async def test_the_worker_roles_job_purges_every_interval(store: AsyncEngine) -> None:
    await _seed(store)
    clock = [NOW - timedelta(days=20)]  # nothing is 30 days old yet
    job = RetentionJob(store, POLICY.model_copy(update={"interval": "1s"}), lambda: clock[0])
    stop = asyncio.Event()
    task = asyncio.create_task(job.run(stop))
    try:
        async with asyncio.timeout(20):
            while job.passes < 1:
                await asyncio.sleep(0.05)
            assert job.last is not None
            assert job.last.total == 0
            clock[0] = NOW
            while job.last.total == 0:
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await task
    assert job.last.counts["raw_messages"] == 2
    assert job.passes >= 2


def test_ages_and_their_errors() -> None:
    assert parse_age("30d") == timedelta(days=30)
    assert parse_age(" 12H ") == timedelta(hours=12)
    assert parse_age("2w") == timedelta(weeks=2)
    assert parse_age("OFF") is None
    for bad in ("30", "0d", "-1d", "thirty days", "1y", ""):
        with pytest.raises(ValueError, match="not an age"):
            parse_age(bad)
    with pytest.raises(ValueError, match="interval"):
        RetentionSettings(interval="off")


def test_db_purge_reports_counts_and_changes_nothing_on_a_dry_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("CM_FHIR_DATABASE_URL", "CM_FHIR_CONFIG", "CM_FHIR_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    data = tmp_path / "data"
    data.mkdir()
    url = f"sqlite+aiosqlite:///{data / 'cm-fhir.sqlite3'}"

    async def _prepare() -> None:
        engine = make_engine(url)
        try:
            await upgrade_database(engine)
            await _seed(engine)
        finally:
            await engine.dispose()

    asyncio.run(_prepare())
    config = tmp_path / "cm-fhir.toml"
    config.write_text('[retention]\ntrace = "off"\naudit = "10d"\n')
    runner = CliRunner()
    args = ["db", "purge", "--data-dir", str(data), "--config", str(config)]
    dry = runner.invoke(app, [*args, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "would purge: raw messages 2, trace rows off, audit rows 2, sent outbox entries 2" in (
        dry.stdout
    )
    done = runner.invoke(app, args)
    assert done.exit_code == 0, done.output
    assert "purged: raw messages 2, trace rows off, audit rows 2" in done.stdout
    assert "MRN-SECRET" not in done.output
    again = runner.invoke(app, args)
    assert "purged: raw messages 0, trace rows off, audit rows 0, sent outbox entries 0" in (
        again.stdout
    )
    missing = runner.invoke(app, ["db", "purge", "--data-dir", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2
    assert "nowhere" in missing.output
    assert "Traceback" not in missing.output
