"""How much a worker batch takes on: bounded in time while messages arrive (so that a listener
sharing the process, or the SQLite write lock, waits little), ``batch_size`` rows while the inbox
is quiet, on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from cm_fhir.worker import Worker, WorkerConfig
from worker_fixtures import inbox_messages, ingest, rows
from workflow_messages import Visit, hours


async def _backlog(engine: AsyncEngine, patients: int) -> None:
    await ingest(
        engine,
        [
            Visit(mrn=f"MRN-B{n}", visit=f"VB{n}").raw("A01", f"B{n}", hours(0))
            for n in range(patients)
        ],
    )


async def _arrive(engine: AsyncEngine, n: int) -> None:
    await ingest(engine, [Visit(mrn=f"MRN-N{n}", visit=f"VN{n}").raw("A01", f"N{n}", hours(0))])


async def test_batches_shrink_while_messages_arrive(worker_engine: AsyncEngine) -> None:
    await _backlog(worker_engine, 40)
    # No row is processed in a nanosecond: while rows arrive, batches stay at the fewest rows a
    # bounded batch takes.
    worker = Worker(worker_engine, WorkerConfig(batch_size=20, batch_seconds=1e-9, retry_delay=0))
    assert worker.batch_limit == 8
    assert (await worker.run_batch()).claimed == 8  # whether rows arrive is not known yet
    await _arrive(worker_engine, 1)
    assert (await worker.run_batch()).claimed == 8
    await _arrive(worker_engine, 2)
    assert (await worker.run_batch()).claimed == 8
    assert (await worker.run_batch()).claimed == 18  # quiet again: the rest
    states = {r.state for r in await rows(worker_engine, inbox_messages)}
    assert states == {"processed"}
    small = Worker(worker_engine, WorkerConfig(batch_size=3, batch_seconds=1e-9))
    assert small.batch_limit == 3  # never more than batch_size


async def test_a_quiet_inbox_takes_batch_size(worker_engine: AsyncEngine) -> None:
    """A backlog with nothing arriving (after an outage, a bulk load): no ACK waits on the
    worker, so the bound does not cost throughput."""
    await _backlog(worker_engine, 40)
    worker = Worker(worker_engine, WorkerConfig(batch_size=20, batch_seconds=1e-9, retry_delay=0))
    assert (await worker.run_batch()).claimed == 8
    assert (await worker.run_batch()).claimed == 20
    await _arrive(worker_engine, 1)
    assert (await worker.run_batch()).claimed == 8  # a message came: bounded again
    assert (await worker.run_once()).claimed == 5


async def test_batches_take_batch_size_when_they_may_take_long(worker_engine: AsyncEngine) -> None:
    await _backlog(worker_engine, 30)
    roomy = Worker(worker_engine, WorkerConfig(batch_size=12, batch_seconds=60.0, retry_delay=0))
    assert (await roomy.run_batch()).claimed == 8  # the first bounded batch is short
    assert roomy.batch_limit == 12
    assert (await roomy.run_batch()).claimed == 12
    unbounded = Worker(worker_engine, WorkerConfig(batch_size=7, batch_seconds=0, retry_delay=0))
    assert unbounded.batch_limit == 7
    assert (await unbounded.run_batch()).claimed == 7
    assert (await unbounded.run_once()).claimed == 3


async def test_unset_the_bound_is_sqlites_only(worker_engine: AsyncEngine) -> None:
    """Unset, batches are bounded in time on SQLite (whose one write lock the inbox's ACKs wait
    on) and take batch_size on PostgreSQL (small batches only cost throughput there)."""
    await _backlog(worker_engine, 30)
    worker = Worker(worker_engine, WorkerConfig(batch_size=20, retry_delay=0))
    assert WorkerConfig().batch_seconds is None
    first = (await worker.run_batch()).claimed
    if worker_engine.dialect.name == "sqlite":
        assert first == 8  # the first bounded batch is short
    else:
        assert first == 20
