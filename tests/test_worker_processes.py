"""Three ``cm-fhir worker`` processes share one PostgreSQL inbox: order per patient, exactly once.

Real subprocesses (the console script) run in polling mode while the messages of 20 patients
arrive interleaved through the listener's intake; SIGTERM stops them after the inbox is drained
(each finishes the transaction in flight). The test then proves: every row was processed once
(``attempts == 1``, the processes' counts add up), each patient's state saw its messages in
arrival order, the trace of each patient follows arrival order, and the final states equal the
pure workflow applied to the same messages one after another.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from cm_fhir.store.engine import make_engine, upgrade_database
from cm_fhir.workflow import PatientState
from inbox_fixtures import PG_URL
from worker_fixtures import expected_states, inbox_messages, ingest, patient_states, rows, trace
from workflow_messages import Visit, hours

pytestmark = pytest.mark.postgres
PATIENTS = 20
PER_PATIENT = 15
_TABLES = "inbox_message, patient_states, cases, outbox, trace, fhir_resources"


def patient_messages(n: int) -> list[str]:
    """A visit with transfers, updates, a cancelled and a repeated discharge."""
    visit = Visit(mrn=f"MRN-MP{n:03d}", visit=f"VMP{n:03d}")
    units = ["5NORTH", "3EAST", "ED", "4WEST"]
    out = [visit.raw("A01", f"P{n}-0", hours(0))]
    for i in range(1, PER_PATIENT - 3):
        if i % 3 == 0:
            out.append(visit.raw("A08", f"P{n}-{i}", hours(i), location=units[(i - 1) % 4]))
        else:
            out.append(visit.raw("A02", f"P{n}-{i}", hours(i), location=units[i % 4]))
    end = PER_PATIENT - 3
    out.append(visit.raw("A03", f"P{n}-{end}", hours(50), disposition="03", discharge=hours(50)))
    out.append(visit.raw("A13", f"P{n}-{end + 1}", hours(51)))
    out.append(
        visit.raw("A03", f"P{n}-{end + 2}", hours(60), disposition="06", discharge=hours(60))
    )
    return out


async def _drained(engine: object, total: int) -> None:
    query = select(func.count()).where(inbox_messages.c.state == "processed")
    for _ in range(600):
        async with engine.connect() as connection:  # type: ignore[attr-defined]
            if (await connection.execute(query)).scalar_one() == total:
                return
        await asyncio.sleep(0.1)
    raise AssertionError("the workers did not drain the inbox in time")


async def test_three_worker_processes_keep_order_and_process_each_row_once(
    pg_schema: str,
) -> None:
    engine = make_engine(PG_URL, search_path=pg_schema)
    await upgrade_database(engine)
    async with engine.begin() as connection:
        await connection.execute(text(f"TRUNCATE {_TABLES} RESTART IDENTITY"))
    per_patient = [patient_messages(n) for n in range(PATIENTS)]
    arrival = [m for i in range(PER_PATIENT) for msgs in per_patient for m in msgs[i : i + 1]]
    script = Path(sys.executable).with_name("cm-fhir")
    # the 2024 discharges are due at once: no closing pass after the first (before any message)
    command = [
        str(script), "worker", "--database-url", PG_URL, "--database-schema", pg_schema,
        "--batch-size", "7", "--migrate", "--close-check-seconds", "3600",
    ]  # fmt: skip
    workers = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    try:
        for process in workers:  # wait until each one polls
            assert process.stderr is not None
            for line in process.stderr:
                if "started" in line:
                    break
        await ingest(engine, arrival)
        await _drained(engine, len(arrival))
    finally:
        for process in workers:
            process.send_signal(signal.SIGTERM)
        outputs = [process.communicate(timeout=60) for process in workers]
    assert [p.returncode for p in workers] == [0, 0, 0], outputs
    counts = [int(re.search(r"processed (\d+)", out).group(1)) for out, _ in outputs]  # type: ignore[union-attr]
    assert sum(counts) == len(arrival)
    assert sum(c > 0 for c in counts) >= 2, counts  # the work really was shared

    inbox = await rows(engine, inbox_messages)
    assert {(r.state, r.attempts) for r in inbox} == {("processed", 1)}
    control_of = {r.id: r.control_id for r in inbox}
    documents = {
        r.patient_key: PatientState.model_validate_json(r.document)
        for r in await rows(engine, patient_states)
        if r.document
    }
    for state in documents.values():
        seen = [e.message_control_id for v in state.visits for e in v.log]
        n = int(seen[0].split("-")[0][1:])
        assert seen == [f"P{n}-{i}" for i in range(PER_PATIENT)]
    traced: dict[str, list[int]] = {}
    for row in await rows(engine, trace):
        traced.setdefault(row.patient_key, []).append(row.inbox_message_id)
    for ids in traced.values():
        assert ids == sorted(ids)
        assert [control_of[i] for i in dict.fromkeys(ids)] == [
            control_of[i] for i in sorted(set(ids))
        ]
    assert documents == expected_states(arrival)
    await engine.dispose()
