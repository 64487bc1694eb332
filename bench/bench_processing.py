"""Benchmark: inbox -> outbox processing throughput of one worker process, against a naive pipeline.

Stores synthetic ADT messages (``--patients`` patients, ``--per-patient`` events each, interleaved)
in the inbox of a fresh SQLite file and of a fresh PostgreSQL schema (``CM_FHIR_TEST_PG_URL``,
skipped when unreachable), then times one :class:`~cm_fhir.worker.Worker` draining it: claim,
parse, workflow, state, cases, outbox Bundles, trace and fhir_resources, committed in batches.
The baseline, measured in the same run over the same messages without any database: a full
``hl7apy.parser.parse_message``, the same workflow step, and ``map_case`` with fhir.resources R4B
validation of every changed case's Bundle. Target: the worker >= 10x the baseline per core. The
headline ratio is the worker's wall-clock rate over the baseline's CPU rate (waits on the database
count against the worker); the CPU ratio counts this process only, not the PostgreSQL server.
Run: ``.venv/bin/python bench/bench_processing.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hl7apy.parser import parse_message
from sqlalchemy import text

from cm_fhir.fhir import map_case
from cm_fhir.hl7v2.adt import parse_adt
from cm_fhir.hl7v2.events import AdtEvent
from cm_fhir.hl7v2.normalise import normalise_message
from cm_fhir.mapping.adt_maps import load_adt_concept_maps
from cm_fhir.mapping.registry import default_registry
from cm_fhir.mapping.rules import load_discharge_rules
from cm_fhir.store.engine import make_engine, upgrade_database
from cm_fhir.store.inbox import NewMessage, store_messages
from cm_fhir.worker import Worker, WorkerConfig
from cm_fhir.workflow import PatientState, apply_event, patient_keys

PG_URL = os.environ.get("CM_FHIR_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
START = datetime(2024, 3, 5, 9, 0, tzinfo=UTC)
UNITS = ["4WEST", "5NORTH", "3EAST", "ED"]


def _ts(hours: float) -> str:
    return (START + timedelta(hours=hours)).strftime("%Y%m%d%H%M%S") + "+0000"


def message(n: int, i: int, event: str, at: float, **extra: str) -> str:
    """A synthetic ADT message of patient ``n`` (no real data)."""
    pv1 = [""] * 46
    pv1[1], pv1[2], pv1[10], pv1[19] = "1", "I", "MED", f"VB{n:05d}"
    pv1[3] = f"{extra.get('unit', '4WEST')}^401^A^NORTHSIDE"
    pv1[36], pv1[44] = extra.get("disposition", ""), _ts(0)
    pv1[45] = _ts(at) if event == "A03" else ""
    return "\r".join(
        [
            f"MSH|^~\\&|ADTSYS|NORTHSIDE|CMFHIR|CM|{_ts(at)}||ADT^{event}|B{n}-{i}|P|2.5.1",
            f"EVN|{event}|{_ts(at)}||||{_ts(at)}",
            f"PID|1||MRN{n:05d}^^^NSH^MR||TESTPATIENT^BENCH||19480304|F",
            "PV1|" + "|".join(pv1[1:]),
            "DG1|1|I10|I50.9^Heart failure^I10||20240305|A",
            "IN1|1|PLAN-GOLD|PAYER01|Example Health Plan" + "|" * 32 + "MEM-778",
        ]
    )


def workload(patients: int, per_patient: int) -> list[str]:
    """Admit, transfers and updates, discharge: interleaved across patients."""
    visits = []
    for n in range(patients):
        events = [message(n, 0, "A01", 0)]
        for i in range(1, per_patient - 1):
            kind = "A08" if i % 3 == 0 else "A02"
            events.append(message(n, i, kind, i, unit=UNITS[i % 4]))
        events.append(message(n, per_patient - 1, "A03", 72, disposition="01"))
        visits.append(events)
    return [v[i] for i in range(per_patient) for v in visits]


def naive(messages: list[str]) -> float:
    """Messages/s of hl7apy full parse + workflow + map_case with R4B validation, no database."""
    maps, rules, registry = load_adt_concept_maps(), load_discharge_rules(), default_registry()
    states: dict[str, PatientState] = {}
    start = time.process_time()
    for raw in messages:
        parse_message(normalise_message(raw))
        event = parse_adt(raw, maps)
        assert isinstance(event, AdtEvent)
        key = patient_keys(event, rules)[0]
        outcome = apply_event(event, states.get(key, PatientState()), rules, now=START)
        states[key] = outcome.state
        for case in outcome.changed_cases:
            map_case(case, registry, validate=True)
    return len(messages) / (time.process_time() - start)


async def worker_run(
    url: str, schema: str | None, messages: list[str], batch: int, budget: float | None
) -> tuple:
    engine = make_engine(url, search_path=schema)
    try:
        await upgrade_database(engine)
        rows = [
            NewMessage(m.encode(), uuid.uuid4().hex * 2, "received", None, None,
                       control_id=m.split("|")[9], patient_key=m.split("PID|1||")[1][:8])
            for m in messages
        ]  # fmt: skip
        async with engine.begin() as connection:
            await store_messages(connection, rows)
        worker = Worker(engine, WorkerConfig(batch_size=batch, batch_seconds=budget, retry_delay=0))
        wall, cpu = time.perf_counter(), time.process_time()
        result = await worker.run_once()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        assert result.processed == len(messages), result
        return len(messages) / wall, len(messages) / cpu, result.outbox
    finally:
        await engine.dispose()


async def pg_schema() -> str | None:
    admin = make_engine(PG_URL)
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    try:
        async with admin.begin() as connection:
            await connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        return schema
    except Exception as exc:  # no server: report and skip PostgreSQL
        print(f"PostgreSQL skipped: {type(exc).__name__}")
        return None
    finally:
        await admin.dispose()


async def drop_schema(schema: str) -> None:
    admin = make_engine(PG_URL)
    async with admin.begin() as connection:
        await connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    await admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=300)
    parser.add_argument("--per-patient", type=int, default=10)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--naive-sample", type=int, default=400)
    parser.add_argument(
        "--batch-seconds",
        type=float,
        default=None,
        help="work per transaction the worker aims at (worker.batch_seconds; 0: always --batch "
        "rows; unset: the service's default for each database)",
    )
    args = parser.parse_args()
    messages = workload(args.patients, args.per_patient)
    baseline = naive(messages[: args.naive_sample])
    print(
        f"messages: {len(messages)} ({args.patients} patients), batch {args.batch}, "
        f"batch_seconds {args.batch_seconds}"
    )
    print(f"naive (hl7apy + workflow + R4B-validated map_case): {baseline:8.0f} msgs/s per core")
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite+aiosqlite:///{Path(folder) / 'bench.sqlite3'}"
        run = worker_run(url, None, messages, args.batch, args.batch_seconds)
        wall, cpu, out = asyncio.run(run)
        print(f"worker, SQLite:     {wall:8.0f} msgs/s wall, {cpu:8.0f} msgs/s per core CPU; "
              f"{out} bundles; ratio to naive {wall / baseline:5.1f}x (wall), "
              f"{cpu / baseline:5.1f}x (CPU)")  # fmt: skip
    schema = asyncio.run(pg_schema())
    if schema is not None:
        try:
            run = worker_run(PG_URL, schema, messages, args.batch, args.batch_seconds)
            wall, cpu, out = asyncio.run(run)
            print(f"worker, PostgreSQL: {wall:8.0f} msgs/s wall, {cpu:8.0f} msgs/s per core CPU; "
                  f"{out} bundles; ratio to naive {wall / baseline:5.1f}x (wall), "
                  f"{cpu / baseline:5.1f}x (CPU)")  # fmt: skip
        finally:
            asyncio.run(drop_schema(schema))


if __name__ == "__main__":
    main()
