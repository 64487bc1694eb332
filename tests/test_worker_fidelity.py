"""Real-feed fidelity through the worker on SQLite and PostgreSQL: case identity, clinical order.

Messages go into the inbox through the listener's intake, a real worker commits them, and the
tests read back the committed rows: two facilities reusing a visit number keep two cases and two
sets of resources; a stale event is traced as stale; the committed cases do not depend on the
arrival order; a site's visit-identity rule holds; a message with no visit identity changes nothing.
"""

from __future__ import annotations

import random
from pathlib import Path

import orjson
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncEngine

from cm_fhir.mapping.rules import DISCHARGE_RULES_FILE, load_discharge_rules
from cm_fhir.worker import Worker, WorkerConfig
from cm_fhir.workflow import Flag
from worker_fixtures import (
    cases,
    fhir_resources,
    inbox_messages,
    ingest,
    outbox,
    patient_states,
    rows,
    settle_worker,
    trace,
)
from workflow_messages import Visit, hours

V = Visit()
NORTH = Visit(mrn="MRN-N1", visit="V500", facility="NORTHSIDE")
SOUTH = Visit(mrn="MRN-S1", visit="V500", facility="SOUTHSIDE")


async def test_two_facilities_reusing_a_visit_number_write_two_episodes(
    worker_engine: AsyncEngine,
) -> None:
    await ingest(
        worker_engine, [NORTH.raw("A01", "N1", hours(0)), SOUTH.raw("A01", "S1", hours(1))]
    )
    await settle_worker(worker_engine)
    case_rows = await rows(worker_engine, cases)
    assert len(case_rows) == 2
    assert len({r.patient_key for r in case_rows}) == 2
    queued = await rows(worker_engine, outbox)
    assert len({r.case_identifier for r in queued}) == 2
    episodes = [
        r for r in await rows(worker_engine, fhir_resources) if r.resource_type == "EpisodeOfCare"
    ]
    assert len(episodes) == 2
    encounters = {
        orjson.dumps(ext["valueReference"]["identifier"])
        for r in episodes
        for ext in orjson.loads(r.resource)["extension"]
        if "valueReference" in ext
    }
    assert len(encounters) == 2


async def test_a_stale_event_is_traced_as_stale(worker_engine: AsyncEngine) -> None:
    messages = [
        V.raw("A01", "L1", hours(0)),
        V.raw("A02", "L2", hours(5), location="5NORTH"),
        V.raw("A02", "L3", hours(3), location="ED"),
    ]
    await ingest(worker_engine, messages)
    await settle_worker(worker_engine, batch_size=1)
    inbox = {r.control_id: r.id for r in await rows(worker_engine, inbox_messages)}
    stale = [
        t for t in await rows(worker_engine, trace) if Flag.STALE_EVENT.value in (t.flags or "")
    ]
    assert [t.inbox_message_id for t in stale] == [inbox["L3"]]


def _feed() -> list[str]:
    return [
        V.raw("A01", "F1", hours(0)),
        V.raw("A02", "F2", hours(2), location="5NORTH"),
        V.raw("A08", "F3", hours(3), location="5NORTH", expected="20240310"),
        V.raw("A02", "F4", hours(6), location="ED"),
        V.raw("A02", "F5", hours(8), location="3EAST"),
        V.raw("A12", "F6", hours(9), occurred=hours(8), location="ED"),
        V.raw("A03", "F7", hours(30), disposition="03", discharge=hours(30)),
    ]


async def _committed(engine: AsyncEngine, messages: list[str]) -> tuple[object, ...]:
    async with engine.begin() as connection:
        for table in (trace, outbox, fhir_resources, cases, patient_states, inbox_messages):
            await connection.execute(delete(table))
    await ingest(engine, messages)
    await settle_worker(engine, batch_size=2)
    case_json = sorted(r.case_json for r in await rows(engine, cases))
    served = sorted((r.resource_type, r.id, r.resource) for r in await rows(engine, fhir_resources))
    last = {r.case_id: r.bundle for r in await rows(engine, outbox)}
    return case_json, served, sorted(last.items())


async def test_the_committed_cases_do_not_depend_on_arrival_order(
    worker_engine: AsyncEngine,
) -> None:
    feed = _feed()
    expected = await _committed(worker_engine, feed)
    shuffler = random.Random(7)
    for _ in range(2):
        shuffled = feed[:]
        shuffler.shuffle(shuffled)
        assert await _committed(worker_engine, shuffled) == expected


async def test_a_site_rule_names_the_visit(worker_engine: AsyncEngine, tmp_path: Path) -> None:
    (tmp_path / DISCHARGE_RULES_FILE).write_text(
        "identity:\n  visit_number_fields: [PV1-50, PV1-19]\n", encoding="utf-8"
    )
    site = load_discharge_rules(tmp_path)
    await ingest(worker_engine, [V.raw("A01", "R1", hours(0), alternate="ALT7^^^REGISTRY")])
    await Worker(worker_engine, WorkerConfig(retry_delay=0.0), rules=site).run_once()
    (row,) = await rows(worker_engine, cases)
    assert "ALT7" in row.case_id
    assert '"value":"ALT7"' in row.case_json


async def test_a_message_without_visit_identity_changes_nothing(
    worker_engine: AsyncEngine,
) -> None:
    await ingest(worker_engine, [V.raw("A01", "W1", hours(0))])
    await settle_worker(worker_engine)
    before = [r.case_json for r in await rows(worker_engine, cases)]
    nothing = Visit(mrn=V.mrn, visit="")
    await ingest(worker_engine, [nothing.raw("A03", "W2", hours(5), discharge=hours(5))])
    result = await settle_worker(worker_engine)
    assert result.outbox == 0  # settled (processed, or held for attention), no write
    assert [r.case_json for r in await rows(worker_engine, cases)] == before
    inbox = {r.control_id: r.id for r in await rows(worker_engine, inbox_messages)}
    flagged = [t for t in await rows(worker_engine, trace) if t.inbox_message_id == inbox["W2"]]
    assert [t.flags for t in flagged] == [Flag.NO_VISIT_NUMBER.value]
