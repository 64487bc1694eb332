"""A batch in two halves: read and applied without locks (:meth:`BatchProcessor.prepare`), then
written (:meth:`BatchProcessor.write_prepared`), which writes nothing when a claimed row or a
patient state it read changed in between. On SQLite the worker runs its batches this way, in a
thread of its own, and falls back to the whole batch under the lock. SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Connection, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from cm_fhir.errors import ConfigError
from cm_fhir.store.engine import READ_ONLY_OPTION, sibling_engine
from cm_fhir.store.queue import InboxOutcome, replay, settle
from cm_fhir.store.tables import InboxState
from cm_fhir.worker import BatchResult, Worker, WorkerConfig
from cm_fhir.worker.batch import PreparedBatch
from cm_fhir.workflow import apply_domain_event
from worker_fixtures import inbox_messages, ingest, outbox, patient_states, rows, settle_worker
from workflow_messages import Visit, hours

ADMIT = Visit(mrn="MRN-S1", visit="VS1")
OTHER = Visit(mrn="MRN-S2", visit="VS2")


def _worker(engine: AsyncEngine) -> Worker:
    return Worker(engine, WorkerConfig(batch_size=50, retry_delay=0))


async def _prepare(engine: AsyncEngine, worker: Worker) -> PreparedBatch:
    async with engine.connect() as connection:
        reader = await connection.execution_options(**{READ_ONLY_OPTION: True})
        async with reader.begin():
            return await reader.run_sync(worker.processor.prepare, 50)


async def _write(engine: AsyncEngine, worker: Worker, prepared: PreparedBatch) -> Any:
    async with engine.begin() as connection:
        return await connection.run_sync(worker.processor.write_prepared, prepared)


async def _states(engine: AsyncEngine) -> dict[int, str]:
    return {r.id: r.state for r in await rows(engine, inbox_messages)}


async def test_an_unchanged_batch_is_written(worker_engine: AsyncEngine) -> None:
    await ingest(
        worker_engine, [ADMIT.raw("A01", "S1", hours(0)), OTHER.raw("A01", "S2", hours(0))]
    )
    worker = _worker(worker_engine)
    prepared = await _prepare(worker_engine, worker)
    assert len(prepared.rows) == 2
    assert set((await _states(worker_engine)).values()) == {"received"}  # the read wrote nothing
    result = await _write(worker_engine, worker, prepared)
    assert isinstance(result, BatchResult)
    assert result.processed == 2
    assert set((await _states(worker_engine)).values()) == {"processed"}
    assert len(await rows(worker_engine, outbox)) == 2


async def test_a_state_written_in_between_stops_the_write(worker_engine: AsyncEngine) -> None:
    await ingest(worker_engine, [ADMIT.raw("A01", "S1", hours(0))])
    await settle_worker(worker_engine)
    await ingest(
        worker_engine, [ADMIT.raw("A02", "S2", hours(2), location="5NORTH", prior_location="4WEST")]
    )
    worker = _worker(worker_engine)
    prepared = await _prepare(worker_engine, worker)
    assert len(prepared.rows) == 1
    async with worker_engine.begin() as connection:  # another writer (the case API) in between
        await connection.execute(
            update(patient_states).values(version=patient_states.c.version + 1)
        )
    outbox_before = len(await rows(worker_engine, outbox))
    assert await _write(worker_engine, worker, prepared) is None
    assert (await _states(worker_engine))[prepared.rows[0].id] == "received"
    assert len(await rows(worker_engine, outbox)) == outbox_before
    assert (await worker.run_once()).processed == 1  # the next batch reads the new state


async def test_a_new_patients_state_filed_in_between_stops_the_write(
    worker_engine: AsyncEngine,
) -> None:
    await ingest(worker_engine, [ADMIT.raw("A01", "S1", hours(0))])
    worker = _worker(worker_engine)
    prepared = await _prepare(worker_engine, worker)
    assert prepared.versions is not None
    [key] = prepared.versions  # the patient's key: no state filed under it yet
    assert prepared.versions[key] == -1
    async with worker_engine.begin() as connection:
        await connection.execute(patient_states.insert().values(patient_key=key))
    assert await _write(worker_engine, worker, prepared) is None
    assert set((await _states(worker_engine)).values()) == {"received"}


async def test_a_claimed_row_settled_in_between_stops_the_write(
    worker_engine: AsyncEngine,
) -> None:
    await ingest(worker_engine, [ADMIT.raw("A01", "S1", hours(0))])
    worker = _worker(worker_engine)
    prepared = await _prepare(worker_engine, worker)
    row = prepared.rows[0].id

    def _retry(connection: Connection) -> None:  # another worker's failed attempt
        settle(connection, [InboxOutcome(row, InboxState.RECEIVED, "x")], datetime.now(UTC))

    async with worker_engine.begin() as connection:
        await connection.run_sync(_retry)
    assert await _write(worker_engine, worker, prepared) is None
    assert await rows(worker_engine, outbox) == []


async def test_an_older_row_replayed_in_between_stops_the_write(
    worker_engine: AsyncEngine,
) -> None:
    """The patient's earlier message is put back to be processed again: the later one must wait
    for it, as a claim made now would."""
    await ingest(worker_engine, [ADMIT.raw("A01", "S1", hours(0))])
    await settle_worker(worker_engine)
    await ingest(
        worker_engine, [ADMIT.raw("A02", "S2", hours(2), location="5NORTH", prior_location="4WEST")]
    )
    worker = _worker(worker_engine)
    prepared = await _prepare(worker_engine, worker)
    first = min(await _states(worker_engine))
    assert await replay(worker_engine, [first]) == 1
    assert await _write(worker_engine, worker, prepared) is None
    assert (await worker.run_once()).processed == 2


async def test_the_sqlite_worker_reads_off_the_loop_and_redoes_a_changed_batch(
    worker_engine: AsyncEngine,
) -> None:
    """On a SQLite file the worker's Python work runs in its own thread, not on the event loop a
    listener shares; a state written while a batch is read makes the batch run again under the
    lock, and nothing is written twice."""
    await ingest(worker_engine, [ADMIT.raw("A01", "S1", hours(0))])
    await settle_worker(worker_engine)
    await ingest(
        worker_engine, [ADMIT.raw("A02", "S2", hours(2), location="5NORTH", prior_location="4WEST")]
    )
    sqlite = worker_engine.dialect.name == "sqlite"
    loop_thread = threading.get_ident()
    threads: list[int] = []

    def apply(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.get_ident())
        if len(threads) == 1 and sqlite:  # another writer files the state while it is read
            path = worker_engine.url.database
            assert path is not None
            with sqlite3.connect(path) as other:
                other.execute("UPDATE patient_states SET version = version + 1")
        return apply_domain_event(*args, **kwargs)

    worker = Worker(worker_engine, WorkerConfig(retry_delay=0), apply=apply)
    result = await worker.run_once()
    assert result.processed == 1
    if sqlite:
        assert len(threads) == 2  # read once, changed, then run whole under the lock
        assert loop_thread not in threads
    else:
        assert threads == [loop_thread]  # PostgreSQL: one transaction on the async connection
    async with worker_engine.connect() as connection:
        bundles = (await connection.execute(select(outbox.c.case_id))).scalars().all()
    assert len(bundles) == len(set(bundles)) + 1  # the admission's and the transfer's, one case


async def test_a_worker_with_its_own_loop_leaves_the_callers_loop_free(
    worker_engine: AsyncEngine,
) -> None:
    """``own_loop`` (``cm-fhir serve``, beside the listener): on PostgreSQL too the batch's
    Python work runs elsewhere than on the loop that awaits it, and the result comes back."""
    await ingest(
        worker_engine, [ADMIT.raw("A01", "S1", hours(0)), OTHER.raw("A01", "S2", hours(0))]
    )
    loop_thread = threading.get_ident()
    threads: list[int] = []

    def apply(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.get_ident())
        return apply_domain_event(*args, **kwargs)

    worker = Worker(worker_engine, WorkerConfig(retry_delay=0), apply=apply, own_loop=True)
    try:
        assert (await worker.run_once()).processed == 2
        assert (await worker.close_due()).checked >= 0
    finally:
        await worker.aclose()
    assert len(threads) == 2
    assert loop_thread not in threads
    assert set((await _states(worker_engine)).values()) == {"processed"}


def test_a_sibling_engine_needs_an_engine_of_make_engine() -> None:
    foreign = create_async_engine("sqlite+aiosqlite://")
    with pytest.raises(ConfigError, match="make_engine"):
        sibling_engine(foreign)
