"""Which inbox rows one claim takes: heads per patient, their followers, keyless rows, limits.

Runs on SQLite and PostgreSQL (the ``worker_engine`` fixture). Rows are stored directly with the
states a scenario needs; the claim runs in a transaction that is rolled back. Also: a batch holds
the cyclic garbage collector off and always gives it back.
"""

from __future__ import annotations

import gc

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from cm_fhir.store.inbox import NewMessage, store_messages
from cm_fhir.store.queue import claim_batch
from cm_fhir.store.tables import inbox_messages
from cm_fhir.worker.batch import collection_paused
from worker_fixtures import rows


async def _store(engine: AsyncEngine, keys: list[str | None]) -> dict[int, str | None]:
    """One received row per entry of ``keys`` (its patient key), in order; id -> key."""
    messages = [
        NewMessage(f"MSH|{n}".encode(), f"{n:064d}", "received", None, None, control_id=f"C{n}",
                   patient_key=key)
        for n, key in enumerate(keys)
    ]  # fmt: skip
    async with engine.begin() as connection:
        await store_messages(connection, messages)
    stored = await rows(engine, inbox_messages)
    return {r.id: r.patient_key for r in stored}


async def _claim(engine: AsyncEngine, limit: int) -> list[int]:
    async with engine.connect() as connection:
        claimed = await connection.run_sync(claim_batch, limit)
        await connection.rollback()
    return [c.id for c in claimed]


async def _set_state(engine: AsyncEngine, row_id: int, state: str) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            update(inbox_messages).where(inbox_messages.c.id == row_id).values(state=state)
        )


async def test_claim_takes_heads_with_their_followers_and_keyless_rows(
    worker_engine: AsyncEngine,
) -> None:
    ids = list(await _store(worker_engine, ["A", "B", None, "A", "C", "B", None, "A"]))
    a1, b1, n1, a2, c1, b2, n2, a3 = ids
    assert await _claim(worker_engine, 50) == ids
    # The limit caps heads first (in id order), then the rows taken with them.
    assert await _claim(worker_engine, 3) == [a1, b1, n1]
    await _set_state(worker_engine, a1, "processed")
    await _set_state(worker_engine, n1, "processed")
    assert await _claim(worker_engine, 50) == [b1, a2, c1, b2, n2, a3]


async def test_an_older_dead_letter_holds_back_its_patient_only(
    worker_engine: AsyncEngine,
) -> None:
    a1, b1, a2, b2, a3 = await _store(worker_engine, ["A", "B", "A", "B", "A"])
    await _set_state(worker_engine, a1, "dead_lettered")
    assert await _claim(worker_engine, 50) == [b1, b2]
    await _set_state(worker_engine, a1, "processed")
    await _set_state(worker_engine, a2, "failed")
    assert await _claim(worker_engine, 50) == [b1, b2, a3]


def test_a_batch_pauses_the_collector_and_gives_it_back() -> None:
    seen: list[bool] = []

    def failing_batch() -> None:
        with collection_paused():
            seen.append(gc.isenabled())
            raise RuntimeError("the batch failed")

    assert gc.isenabled()
    with pytest.raises(RuntimeError):
        failing_batch()
    assert seen == [False]
    assert gc.isenabled()
    gc.disable()
    try:
        with collection_paused():
            pass
        assert not gc.isenabled(), "a collector someone else turned off stays off"
    finally:
        gc.enable()
