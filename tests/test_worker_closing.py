"""The closing scheduler on SQLite and PostgreSQL: due cases close once, through the write path.

Discharges go in through the listener's intake and a worker; then the scheduler
(:meth:`~cm_fhir.worker.Worker.close_due`, or the ``run`` loop) closes what is due. The tests read
back the committed rows: the ``cases`` row, the state document, ``fhir_resources``, the outbox and
the trace, and the ``close_check_at`` schedule. Two workers at once and a restarted worker must
not close a case twice.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta, timezone

import httpx
import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from cm_fhir.domain import Case, TaskStatus
from cm_fhir.mapping.registry import default_registry
from cm_fhir.service_roles import make_workers
from cm_fhir.settings import load_settings
from cm_fhir.store.case_repo import change_case
from cm_fhir.store.engine import make_engine, upgrade_database
from cm_fhir.worker import Worker, WorkerConfig
from cm_fhir.workflow import PatientState
from inbox_fixtures import Database
from worker_fixtures import (
    cases,
    fhir_resources,
    ingest,
    outbox,
    patient_states,
    rows,
    settle_worker,
    trace,
)
from workflow_messages import Visit, hours, rules

CLOSE_AFTER = rules().discharge.close_after


def discharged(visit: Visit, at: datetime | None = None, disposition: str = "03") -> list[str]:
    """An admission and its discharge; ``at`` is the discharge time (default: in 2024)."""
    if at is None:
        return [
            visit.raw("A01", f"{visit.visit}-1", hours(0)),
            visit.raw(
                "A03", f"{visit.visit}-2", hours(50), disposition=disposition, discharge=hours(50)
            ),
        ]
    return [
        visit.raw("A01", f"{visit.visit}-1", at - timedelta(days=3)),
        visit.raw("A03", f"{visit.visit}-2", at, disposition=disposition, discharge=at),
    ]


def aware(value: datetime | None) -> datetime | None:
    return value if value is None or value.tzinfo else value.replace(tzinfo=UTC)


async def statuses(engine: AsyncEngine) -> dict[str, str]:
    return {r.case_id: r.status for r in await rows(engine, cases)}


async def closing_trace(engine: AsyncEngine) -> list[tuple[str, str, int | None]]:
    return [
        (r.case_id, r.rule, r.inbox_message_id)
        for r in await rows(engine, trace)
        if r.action == "case-closed"
    ]


async def test_a_due_case_closes_once_through_the_write_path(worker_engine: AsyncEngine) -> None:
    visit = Visit(mrn="MRN-CL1", visit="VCL1")
    await ingest(worker_engine, discharged(visit))
    await settle_worker(worker_engine)
    (case_id,) = (await statuses(worker_engine)).keys()
    assert (await statuses(worker_engine))[case_id] == "transition"
    (state,) = [r for r in await rows(worker_engine, patient_states) if r.document]
    assert aware(state.close_check_at) <= datetime.now(UTC)  # the discharge was long ago
    outbox_before = len(await rows(worker_engine, outbox))

    worker = Worker(worker_engine, WorkerConfig())
    result = await worker.close_due()
    assert (result.checked, result.closed) == (1, 1)

    (row,) = await rows(worker_engine, cases)
    assert row.status == "closed"
    assert row.closed_at is not None
    stored = Case.model_validate_json(row.case_json)
    assert stored.status.value == "closed"
    (state,) = [r for r in await rows(worker_engine, patient_states) if r.document]
    assert PatientState.model_validate_json(state.document).case(case_id).status.value == "closed"
    assert state.close_check_at is None  # nothing left to close
    episode = [
        r for r in await rows(worker_engine, fhir_resources) if r.resource_type == "EpisodeOfCare"
    ]
    assert [orjson.loads(e.resource)["status"] for e in episode] == ["finished"]
    written = await rows(worker_engine, outbox)
    assert len(written) == outbox_before + 1
    assert written[-1].case_id == case_id
    assert written[-1].inbox_message_id is None
    assert b'"finished"' in written[-1].bundle
    assert await closing_trace(worker_engine) == [(case_id, "discharge.close_after", None)]

    again = await worker.close_due()
    restarted = await Worker(worker_engine, WorkerConfig()).close_due()
    assert (again.checked, restarted.checked) == (0, 0)
    assert len(await rows(worker_engine, outbox)) == outbox_before + 1
    assert len(await closing_trace(worker_engine)) == 1


def in_new_york(raw: str) -> str:
    """The message with its times written at UTC-5 (the same instants)."""
    zone = timezone(timedelta(hours=-5))
    return re.sub(
        r"(\d{14})\+0000",
        lambda m: (
            datetime.strptime(m.group(1), "%Y%m%d%H%M%S")
            .replace(tzinfo=UTC)
            .astimezone(zone)
            .strftime("%Y%m%d%H%M%S-0500")
        ),
        raw,
    )


@pytest.mark.parametrize("local", [False, True], ids=["utc", "utc-5"])
async def test_only_due_states_are_checked_and_the_deadline_is_kept(
    worker_engine: AsyncEngine, local: bool
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    recent = Visit(mrn="MRN-CL2", visit="VCL2")
    messages = discharged(recent, at=now - timedelta(days=1))
    await ingest(worker_engine, [in_new_york(m) for m in messages] if local else messages)
    await settle_worker(worker_engine)
    (state,) = [r for r in await rows(worker_engine, patient_states) if r.document]
    deadline = now - timedelta(days=1) + CLOSE_AFTER
    assert aware(state.close_check_at) == deadline

    worker = Worker(worker_engine, WorkerConfig())
    assert (await worker.close_due()).checked == 0  # not loaded at all before its time
    early = await worker.close_due(now=deadline - timedelta(seconds=1))
    assert early.checked == 0
    late = await worker.close_due(now=deadline)
    assert (late.checked, late.closed) == (1, 1)
    (row,) = await rows(worker_engine, cases)
    assert row.status == "closed"
    assert aware(row.opened_at) == now - timedelta(days=4)  # the A01, as an instant
    assert aware(row.closed_at) == deadline


async def test_follow_up_done_through_the_api_closes_at_the_next_check(
    worker_engine: AsyncEngine,
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    visit = Visit(mrn="MRN-CL3", visit="VCL3")
    await ingest(worker_engine, discharged(visit, at=now - timedelta(hours=2), disposition="01"))
    await settle_worker(worker_engine)
    (case_id,) = (await statuses(worker_engine)).keys()
    worker = Worker(worker_engine, WorkerConfig())
    assert (await worker.close_due()).checked == 0

    def complete_follow_up(case: Case) -> Case:  # and every other open task
        for task in case.tasks:
            if task.is_open:
                case = case.update_task_status(task.id, TaskStatus.IN_PROGRESS)
                case = case.update_task_status(task.id, TaskStatus.COMPLETED)
        return case

    async with worker_engine.begin() as connection:
        await connection.run_sync(
            lambda c: change_case(
                c,
                case_id,
                complete_follow_up,
                default_registry(),
                expected_version=None,
                now=datetime.now(UTC),
                action="task.complete",
            )
        )
    result = await worker.close_due()
    assert (result.checked, result.closed) == (1, 1)
    assert await closing_trace(worker_engine) == [
        (case_id, "discharge.close_when_follow_up_done", None)
    ]


async def test_two_workers_at_once_close_each_case_once(database: Database) -> None:
    setup = database.engine()
    engines = [database.engine(), database.engine()]
    try:
        await _empty(setup)
        patients = [Visit(mrn=f"MRN-CC{n:02d}", visit=f"VCC{n:02d}") for n in range(24)]
        await ingest(setup, [m for p in patients for m in discharged(p)])
        await settle_worker(setup)
        assert set((await statuses(setup)).values()) == {"transition"}
        outbox_before = len(await rows(setup, outbox))
        workers = [Worker(e, WorkerConfig(batch_size=4)) for e in engines]
        results = await asyncio.gather(*(w.close_due() for w in workers))
        assert sum(r.closed for r in results) == 24
        closings = await closing_trace(setup)
        assert sorted(c for c, _, _ in closings) == sorted(await statuses(setup))  # once each
        assert set((await statuses(setup)).values()) == {"closed"}
        assert len(await rows(setup, outbox)) == outbox_before + 24
    finally:
        for engine in (setup, *engines):
            await engine.dispose()


async def _empty(engine: AsyncEngine) -> None:
    await upgrade_database(engine)
    if engine.dialect.name == "postgresql":
        async with engine.begin() as connection:
            await connection.execute(
                text(
                    "TRUNCATE inbox_message, patient_states, cases, outbox, trace, "
                    "fhir_resources RESTART IDENTITY"
                )
            )


async def test_the_run_loop_closes_due_cases_and_a_restart_closes_nothing_again(
    worker_engine: AsyncEngine,
) -> None:
    await ingest(worker_engine, discharged(Visit(mrn="MRN-CL5", visit="VCL5")))
    config = WorkerConfig(poll_interval=0.02, close_check_seconds=0.05, retry_delay=0.0)

    async def run_until(done: object, seconds: float) -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(Worker(worker_engine, config).run(stop))
        deadline = asyncio.get_running_loop().time() + seconds
        while asyncio.get_running_loop().time() < deadline:
            if done is not None and set((await statuses(worker_engine)).values()) == {done}:
                break
            await asyncio.sleep(0.05)
        stop.set()
        await task

    await run_until("closed", 20.0)
    assert set((await statuses(worker_engine)).values()) == {"closed"}
    await run_until(None, 0.3)  # a restarted worker passes a few checks
    assert len(await closing_trace(worker_engine)) == 1


def test_the_service_hands_the_closing_and_processing_id_settings_to_its_workers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CM_FHIR_WORKER__APPLY_PROCESSING_IDS", raising=False)
    settings = load_settings(
        overrides={"worker": {"close_check_seconds": 7.5, "apply_processing_ids": "p,T"}}
    )
    engine = make_engine("sqlite+aiosqlite:///unused.sqlite3")
    (worker,) = make_workers(engine, settings)
    assert isinstance(worker, Worker)
    assert worker.config.close_check_seconds == 7.5
    assert worker.config.apply_processing_ids == frozenset({"P", "T"})


async def test_closing_a_merged_patient_keeps_its_alias_rows(worker_engine: AsyncEngine) -> None:
    survivor = Visit(mrn="MRN-CM1", visit="VCM1")
    prior = Visit(mrn="MRN-CM2", visit="VCM2")
    await ingest(
        worker_engine,
        [
            prior.raw("A01", "CM-0", hours(0)),
            *discharged(survivor),
            survivor.raw("A40", "CM-9", hours(60), prior_mrn=prior.mrn),
        ],
    )
    await settle_worker(worker_engine)
    before = {r.patient_key: r for r in await rows(worker_engine, patient_states)}
    (alias,) = [r for r in before.values() if r.alias_of]
    result = await Worker(worker_engine, WorkerConfig()).close_due()
    assert result.closed == 1  # the survivor's discharged case; the prior visit's stays open
    after = {r.patient_key: r for r in await rows(worker_engine, patient_states)}
    assert after[alias.patient_key] == alias  # not rewritten, so never locked by closing
    assert sorted((await statuses(worker_engine)).values()) == ["active", "closed"]


async def test_a_closing_is_one_provenance_naming_its_rule_and_what_it_withdrew(
    worker_engine: AsyncEngine, worker_http: httpx.AsyncClient
) -> None:
    await ingest(worker_engine, discharged(Visit(mrn="MRN-CP1", visit="VCP1")))
    await settle_worker(worker_engine)
    await Worker(worker_engine, WorkerConfig()).close_due()
    withdrawn = [
        r.target
        for r in await rows(worker_engine, trace)
        if r.rule == "discharge.close_after" and r.target
    ]
    assert len(withdrawn) >= 2  # the open tasks and the referral

    found = (await worker_http.get("/fhir/Provenance", params={"_count": "50"})).json()
    resources = [e["resource"] for e in found["entry"]]
    closings = [p for p in resources if "discharge.close_after" in p["activity"]["text"]]
    assert len(closings) == 1
    (closing,) = closings
    assert "entity" not in closing  # no inbox message caused it
    assert "case-closed" in closing["activity"]["text"]
    kinds = [t["reference"].split("/")[0] for t in closing["target"]]
    assert kinds[0] == "EpisodeOfCare"
    assert kinds.count("Task") >= len(withdrawn)  # tasks, and each referral's fulfilment Task
    read = await worker_http.get(f"/fhir/Provenance/{closing['id']}")
    assert read.json() == closing
