"""Benchmark: one closing pass of the worker against looking at every patient state.

Builds ``--patients`` synthetic patient states with the pure workflow (an admission; every tenth
patient also discharged: half long ago, so their cases are due to close, half yesterday) and files
them in a fresh SQLite file and a fresh PostgreSQL schema (``CM_FHIR_TEST_PG_URL``, skipped when
unreachable) with their ``close_check_at``, as the worker writes them. Then, on each database:

- baseline: find the due cases without the schedule: read every state document, decode it and
  ask :func:`~cm_fhir.workflow.close_due_cases` (nothing written);
- scheduler: :meth:`cm_fhir.worker.Worker.close_due` reads the due rows through the
  ``close_check_at`` index and closes their cases (state, cases, outbox, trace, fhir_resources
  committed); then its next pass, when nothing is due: the cost of each periodic check.

Prints both times, their ratio and the cases closed.
Run: ``.venv/bin/python bench/bench_closing.py``.
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

from sqlalchemy import select, text

from cm_fhir.hl7v2.adt import parse_adt
from cm_fhir.hl7v2.events import AdtEvent
from cm_fhir.mapping.adt_maps import load_adt_concept_maps
from cm_fhir.mapping.rules import load_discharge_rules
from cm_fhir.store.case_tables import patient_states
from cm_fhir.store.cases import write_states
from cm_fhir.store.engine import make_engine, upgrade_database
from cm_fhir.worker import Worker, WorkerConfig
from cm_fhir.worker.schedule import next_close_check
from cm_fhir.workflow import PatientState, apply_event, close_due_cases

PG_URL = os.environ.get("CM_FHIR_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
NOW = datetime.now(UTC).replace(microsecond=0)


def _ts(at: datetime) -> str:
    return at.strftime("%Y%m%d%H%M%S") + "+0000"


def _message(n: int, event: str, at: datetime) -> str:
    """A synthetic ADT message of patient ``n`` (no real data)."""
    pv1 = [""] * 46
    pv1[1], pv1[2], pv1[10], pv1[19] = "1", "I", "MED", f"VC{n:05d}"
    pv1[3] = "4WEST^401^A^NORTHSIDE"
    pv1[36] = "03" if event == "A03" else ""
    pv1[44] = _ts(at - timedelta(days=3))
    pv1[45] = _ts(at) if event == "A03" else ""
    return "\r".join(
        [
            f"MSH|^~\\&|ADTSYS|NORTHSIDE|CMFHIR|CM|{_ts(at)}||ADT^{event}|C{n}-{event}|P|2.5.1",
            f"EVN|{event}|{_ts(at)}",
            f"PID|1||MRN{n:06d}^^^NSH^MR||BENCH^PATIENT||19450101|F",
            "PV1|" + "|".join(pv1[1:]),
            "DG1|1|I10|I50.9^Heart failure^I10||20240305|A",
        ]
    )


def build_states(patients: int) -> dict[str, str]:
    """Patient key -> state document: admitted; every tenth discharged (odd tenths long ago)."""
    maps, rules = load_adt_concept_maps(), load_discharge_rules()
    documents: dict[str, str] = {}
    for n in range(patients):
        discharged = n % 10 == 0
        at = NOW - timedelta(days=60 if n % 20 == 0 else 1)
        state = PatientState()
        events = [("A01", at - timedelta(days=3))] + ([("A03", at)] if discharged else [])
        for code, when in events:
            event = parse_adt(_message(n, code, when), maps)
            assert isinstance(event, AdtEvent)
            state = apply_event(event, state, rules, now=when).state
        documents[state.patient_keys[0]] = state.model_dump_json()
    return documents


async def _file(engine: object, documents: dict[str, str]) -> None:
    rules = load_discharge_rules()
    checks = {
        k: next_close_check(PatientState.model_validate_json(d), rules, NOW)
        for k, d in documents.items()
    }
    async with engine.begin() as connection:  # type: ignore[attr-defined]
        await connection.run_sync(write_states, documents, {}, NOW, checks)


async def _scan_all(engine: object) -> tuple[float, int]:
    """Baseline: every state read, decoded and asked; (seconds, cases due)."""
    rules = load_discharge_rules()
    start = time.perf_counter()
    due = 0
    async with engine.connect() as connection:  # type: ignore[attr-defined]
        query = select(patient_states.c.document).where(patient_states.c.document.is_not(None))
        for (document,) in await connection.execute(query):
            state = PatientState.model_validate_json(document)
            due += len(close_due_cases(state, rules, NOW).changed_cases)
    return time.perf_counter() - start, due


async def run(label: str, url: str, documents: dict[str, str], search_path: str | None) -> None:
    engine = make_engine(url, search_path=search_path)
    try:
        await upgrade_database(engine)
        await _file(engine, documents)
        baseline, due = await _scan_all(engine)
        worker = Worker(engine, WorkerConfig(batch_size=200))
        await worker.close_due(now=NOW - timedelta(days=365))  # warm: connection, nothing due
        start = time.perf_counter()
        result = await worker.close_due(now=NOW)
        scheduled = time.perf_counter() - start
        start = time.perf_counter()
        idle = await worker.close_due(now=NOW)  # the next pass: nothing is due any more
        quiet = time.perf_counter() - start
        assert idle.checked == 0
        print(
            f"{label:<11} states {len(documents)}, due {due}: scan-all (find only) "
            f"{baseline * 1000:7.1f} ms | scheduler (find + close + commit) "
            f"{scheduled * 1000:7.1f} ms, closed {result.closed}, "
            f"ratio {baseline / scheduled:4.1f}x"
            f" | next pass (none due) {quiet * 1000:5.1f} ms, ratio {baseline / quiet:6.0f}x"
        )
    finally:
        await engine.dispose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=5000)
    args = parser.parse_args()
    documents = build_states(args.patients)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "closing.sqlite3"
        await run("SQLite", f"sqlite+aiosqlite:///{path}", documents, None)
    schema = f"bench_closing_{uuid.uuid4().hex[:8]}"
    admin = make_engine(PG_URL)
    try:
        async with admin.begin() as connection:
            await connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:  # no server: say so and stop
        print(f"PostgreSQL skipped: {type(exc).__name__}")
        await admin.dispose()
        return
    try:
        await run("PostgreSQL", PG_URL, documents, schema)
    finally:
        async with admin.begin() as connection:
            await connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await admin.dispose()


if __name__ == "__main__":
    asyncio.run(main())
