"""Benchmark: ``GET /metrics`` and the worker's claim with 1,000,000 inbox rows.

Builds ``--rows`` inbox rows (default 1,000,000: mostly processed, some ignored, failed and
dead-lettered, a backlog of ``--backlog`` received rows at the end) in a fresh SQLite file and a
fresh PostgreSQL schema (``CM_FHIR_TEST_PG_URL``, skipped when unreachable), with one
``INSERT ... SELECT`` over generated ids (the counter triggers fire as for any writer). Then, on
each database:

- the scrape as served: ``GET /metrics`` through the app (counters + the indexed queue gauges),
  median of ``--scrapes`` requests; target < 100 ms;
- the same scrape after ``--unfolded`` more rows, whose counter deltas are not folded yet;
- the baseline, side by side in the same run: the former aggregate-on-scrape query set (GROUP BY
  over the whole inbox, a latency histogram over every settled row), median of 3;
- the worker's claim at that size: :func:`~cm_fhir.store.queue.claim_batch` of 200 rows over the
  backlog, rolled back, median of 5.

Run: ``.venv/bin/python bench/bench_metrics.py [--rows N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import case, func, literal, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cm_fhir.api.app import create_app
from cm_fhir.settings import load_settings
from cm_fhir.store.case_tables import outbox, trace
from cm_fhir.store.counters import LATENCY_BOUNDS, fold
from cm_fhir.store.engine import make_engine, upgrade_database
from cm_fhir.store.queue import WAITING_PREFIX, claim_batch
from cm_fhir.store.tables import inbox_messages

PG_URL = os.environ.get("CM_FHIR_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
KEY = "bench-metrics-key-0123456789"
_t = inbox_messages
_SETTLED = ("processed", "failed", "dead_lettered", "needs_attention")


def _rows_sql(dialect: str, first: int, last: int, backlog_from: int) -> str:
    """INSERT ... SELECT of inbox rows ``first..last``; ids from ``backlog_from`` are received."""
    if dialect == "sqlite":
        ids = (
            f"WITH RECURSIVE n(i) AS (SELECT {first} UNION ALL SELECT i + 1 FROM n "
            f"WHERE i < {last}) "
        )
        source, pad, at = "n", "printf('%064d', i)", "datetime('now', '-1 hour')"
        later = "datetime('now', '-1 hour', '+2 seconds')"
        event = "CASE i % 4 WHEN 0 THEN 'A01' WHEN 1 THEN 'A02' WHEN 2 THEN 'A03' ELSE 'A08' END"
        raw = "CAST('MSH|^~\\&|ADTSYS|NORTHSIDE|CMFHIR|CM|20261201||ADT^A08|B' || i AS BLOB)"
        control, key = "'B' || i", "'P' || (i % 50000)"
    else:
        ids = ""
        source = f"generate_series({first}, {last}) AS n(i)"
        pad, at = "lpad(i::text, 64, '0')", "now() - interval '1 hour'"
        later = "now() - interval '1 hour' + interval '2 seconds'"
        event = "(ARRAY['A01', 'A02', 'A03', 'A08'])[i % 4 + 1]"
        raw = "convert_to('MSH|^~\\&|ADTSYS|NORTHSIDE|CMFHIR|CM|20261201||ADT^A08|B' || i, 'UTF8')"
        control, key = "'B' || i", "'P' || (i % 50000)"
    state = (
        f"CASE WHEN i >= {backlog_from} THEN 'received' WHEN i % 1000 = 7 THEN 'ignored' "
        "WHEN i % 5000 = 11 THEN 'failed' WHEN i % 100000 = 13 THEN 'dead_lettered' "
        "ELSE 'processed' END"
    )
    updated = f"CASE WHEN i >= {backlog_from} THEN {at} ELSE {later} END"
    return (
        f"{ids}INSERT INTO inbox_message (received_at, updated_at, state, attempts, "
        "sending_application, sending_facility, control_id, content_sha256, control_id_reused, "
        "message_type, trigger_event, version_id, patient_key, ack_code, raw) "
        f"SELECT {at}, {updated}, {state}, 0, 'ADTSYS', 'NORTHSIDE', {control}, {pad}, false, "
        f"'ADT', {event}, '2.5.1', {key}, 'AA', {raw} FROM {source}"
    )


async def _old_scrape(connection: AsyncConnection) -> None:
    """The former /metrics queries: every figure aggregated over the whole tables."""
    grouped = select(
        func.coalesce(_t.c.message_type, ""),
        func.coalesce(_t.c.trigger_event, ""),
        func.coalesce(_t.c.ack_code, ""),
        _t.c.state,
        func.count(),
    ).group_by(_t.c.message_type, _t.c.trigger_event, _t.c.ack_code, _t.c.state)
    (await connection.execute(grouped)).all()
    received = _t.c.state == "received"
    await connection.execute(select(func.min(_t.c.received_at)).where(received))
    waiting = select(func.count()).where(received, _t.c.reason.startswith(WAITING_PREFIX))
    await connection.execute(waiting)
    if connection.dialect.name == "sqlite":
        seconds: Any = (func.julianday(_t.c.updated_at) - func.julianday(_t.c.received_at)) * (
            literal(86400.0)
        )
    else:
        seconds = func.extract("epoch", _t.c.updated_at - _t.c.received_at)
    columns = [func.sum(case((seconds <= bound, 1), else_=0)) for bound in LATENCY_BOUNDS]
    latency = select(*columns, func.count(), func.sum(seconds)).where(_t.c.state.in_(_SETTLED))
    (await connection.execute(latency)).one()
    await connection.execute(select(outbox.c.state, func.count()).group_by(outbox.c.state))
    await connection.execute(
        select(func.min(outbox.c.created_at)).where(outbox.c.state == "pending")
    )
    flagged = select(trace.c.flags, func.count()).where(trace.c.flags.is_not(None))
    (await connection.execute(flagged.group_by(trace.c.flags))).all()


async def _median_ms(action: Callable[[], Awaitable[Any]], times: int) -> float:
    samples = []
    for _ in range(times):
        start = time.perf_counter()
        await action()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


async def _bench(name: str, engine: AsyncEngine, args: argparse.Namespace) -> None:
    await upgrade_database(engine)
    dialect = engine.dialect.name
    backlog_from = args.rows - args.backlog + 1
    start = time.perf_counter()
    async with engine.begin() as connection:
        await connection.execute(text(_rows_sql(dialect, 1, args.rows, backlog_from)))
    built = time.perf_counter() - start
    start = time.perf_counter()
    async with engine.begin() as connection:
        await connection.run_sync(fold)
        if dialect == "postgresql":
            await connection.execute(text("ANALYZE inbox_message"))
    folded = time.perf_counter() - start
    print(f"{name}: {args.rows:,} inbox rows built in {built:.1f} s; first fold {folded:.2f} s")

    settings = load_settings(overrides={"api_keys": KEY, "database_url": str(engine.url)})
    app = create_app(settings, engine=engine)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app)
        headers = {"Authorization": f"Bearer {KEY}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://bench", headers=headers
        ) as client:

            async def scrape() -> None:
                answer = await client.get("/metrics")
                assert answer.status_code == 200, answer.text
                assert "cm_fhir_inbox_depth" in answer.text

            await scrape()  # warm caches and the pool, as a running server would be
            new = await _median_ms(scrape, args.scrapes)
            first, last = args.rows + 1, args.rows + args.unfolded
            async with engine.begin() as connection:
                await connection.execute(text(_rows_sql(dialect, first, last, last + 1)))
            unfolded = await _median_ms(scrape, args.scrapes)

    async def old() -> None:
        async with engine.connect() as connection:
            await _old_scrape(connection)

    baseline = await _median_ms(old, 3)

    async def claim() -> None:
        async with engine.connect() as connection:
            transaction = await connection.begin()
            claimed = await connection.run_sync(claim_batch, 200)
            assert len(claimed) == 200, len(claimed)
            await transaction.rollback()

    claim_ms = await _median_ms(claim, 5)
    verdict = "meets" if new < 100 else "MISSES"
    print(
        f"{name}: scrape {new:.1f} ms ({verdict} the 100 ms target); with {args.unfolded:,} "
        f"unfolded deltas {unfolded:.1f} ms; aggregate-on-scrape baseline {baseline:.1f} ms; "
        f"{baseline / new:.0f}x faster"
    )
    print(f"{name}: worker claim of 200 over a {args.backlog:,}-row backlog: {claim_ms:.1f} ms")


async def _pg(args: argparse.Namespace) -> None:
    schema = f"bench_metrics_{uuid.uuid4().hex[:10]}"
    admin = make_engine(PG_URL)
    try:
        async with admin.begin() as connection:
            await connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:  # no server: say so and skip
        print(f"postgresql: skipped ({type(exc).__name__})")
        await admin.dispose()
        return
    engine = make_engine(PG_URL, search_path=schema)
    try:
        await _bench("postgresql", engine, args)
    finally:
        await engine.dispose()
        async with admin.begin() as connection:
            await connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await admin.dispose()


async def main(args: argparse.Namespace) -> None:
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as folder:
        engine = make_engine(f"sqlite+aiosqlite:///{Path(folder) / 'bench.sqlite3'}")
        try:
            await _bench("sqlite", engine, args)
        finally:
            await engine.dispose()
    await _pg(args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--backlog", type=int, default=1_000)
    parser.add_argument("--unfolded", type=int, default=4_000)
    parser.add_argument("--scrapes", type=int, default=20)
    asyncio.run(main(parser.parse_args()))
