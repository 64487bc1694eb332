"""The outbox is counted one way, on SQLite and PostgreSQL: ``/metrics`` groups its rows by endpoint
and state, and no trigger keeps a second, per-state count of it. Revision 0009 drops the outbox
triggers and counter rows that revision 0006 created; its downgrade restores them, seeded from the
stored rows, and they count again."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Connection, delete, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from cm_fhir.api.metrics import snapshot
from cm_fhir.store.case_tables import outbox
from cm_fhir.store.counters import metric_delta, metric_total
from cm_fhir.store.engine import _alembic_config, make_engine, upgrade_database
from inbox_fixtures import Database, _pg_admin

_BEFORE = "0010_payer_exchange"
_HEAD = "0011_outbox_counted_once"


def _row(n: int, state: str, endpoint: str = "default") -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "created_at": now,
        "updated_at": now,
        "state": state,
        "endpoint": endpoint,
        "case_id": f"case-{n}",
        "patient_key": f"p-{n}",
        "case_identifier": f"i-{n}",
        "identifiers": "[]",
        "bundle_sha256": f"{n}",
        "bundle": b"{}",
    }


@pytest.fixture
async def fresh_engine(database: Database, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """An empty database of its own (a new SQLite file, or a new PostgreSQL schema)."""
    schema = None
    if database.search_path is None:
        engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'counted.sqlite3'}")
    else:
        schema = f"cmfhir_outbox_{uuid.uuid4().hex[:12]}"
        await _pg_admin(f'CREATE SCHEMA "{schema}"')
        engine = make_engine(database.url, search_path=schema)
    try:
        yield engine
    finally:
        await engine.dispose()
        if schema is not None:
            await _pg_admin(f'DROP SCHEMA "{schema}" CASCADE')


async def _outbox_counters(engine: AsyncEngine) -> tuple[int, dict[str, int]]:
    """Delta rows of the ``outbox`` metric, and its totals plus deltas per state."""
    async with engine.connect() as connection:
        deltas = select(func.count()).where(metric_delta.c.metric == "outbox")
        count = int((await connection.execute(deltas)).scalar_one())
        per_state: dict[str, int] = {}
        for table, value in (
            (metric_total, metric_total.c.value),
            (metric_delta, metric_delta.c.delta),
        ):
            query = select(table.c.labels, func.sum(value)).where(table.c.metric == "outbox")
            for state, n in (await connection.execute(query.group_by(table.c.labels))).all():
                per_state[str(state)] = per_state.get(str(state), 0) + int(n)
    return count, {state: n for state, n in per_state.items() if n}


async def _downgrade(engine: AsyncEngine, revision: str) -> None:
    def _run(connection: Connection) -> None:
        command.downgrade(_alembic_config(connection), revision)

    async with engine.begin() as connection:
        await connection.run_sync(_run)


async def _write_outbox(engine: AsyncEngine) -> None:
    """Every kind of outbox write: inserts, a state change, a delete."""
    async with engine.begin() as connection:
        await connection.execute(
            insert(outbox),
            [_row(1, "pending"), _row(2, "pending", "north"), _row(3, "failed", "north")],
        )
        await connection.execute(
            update(outbox).where(outbox.c.case_id == "case-1").values(state="sent")
        )
        await connection.execute(delete(outbox).where(outbox.c.case_id == "case-3"))


async def test_outbox_writes_add_no_counter_row_and_metrics_group_the_rows(
    fresh_engine: AsyncEngine,
) -> None:
    await upgrade_database(fresh_engine)
    await _write_outbox(fresh_engine)
    assert await _outbox_counters(fresh_engine) == (0, {})
    async with fresh_engine.connect() as connection:
        snap = await snapshot(connection)
    assert snap.outbox_states == {("default", "sent"): 1, ("north", "pending"): 1}


async def test_the_downgrade_restores_the_outbox_counters_and_the_upgrade_drops_them(
    fresh_engine: AsyncEngine,
) -> None:
    await upgrade_database(fresh_engine)
    async with fresh_engine.begin() as connection:
        await connection.execute(insert(outbox), [_row(7, "pending"), _row(8, "sent")])
    await _downgrade(fresh_engine, _BEFORE)
    # seeded from the stored rows, then kept by the restored triggers
    assert (await _outbox_counters(fresh_engine))[1] == {"pending": 1, "sent": 1}
    await _write_outbox(fresh_engine)
    deltas, per_state = await _outbox_counters(fresh_engine)
    assert deltas > 0
    assert per_state == {"pending": 2, "sent": 2}
    assert (await upgrade_database(fresh_engine))[0] == _HEAD  # then any later revision
    assert await _outbox_counters(fresh_engine) == (0, {})
    await _write_outbox(fresh_engine)  # the triggers are gone again
    assert await _outbox_counters(fresh_engine) == (0, {})
    async with fresh_engine.connect() as connection:
        snap = await snapshot(connection)
    expected = {("default", "pending"): 1, ("default", "sent"): 3, ("north", "pending"): 2}
    assert snap.outbox_states == expected


async def _triggers(engine: AsyncEngine) -> set[tuple[str, str]]:
    """(trigger, table) of the database's own triggers."""
    if engine.dialect.name == "sqlite":
        query = "SELECT name, tbl_name FROM sqlite_master WHERE type = 'trigger'"
    else:
        query = (
            "SELECT DISTINCT trigger_name, event_object_table FROM information_schema.triggers"
            " WHERE trigger_schema = current_schema()"
        )
    async with engine.connect() as connection:
        return {(str(a), str(b)) for a, b in (await connection.execute(text(query))).all()}


async def test_a_downgrade_through_the_table_rebuilds_keeps_every_metric_trigger(
    fresh_engine: AsyncEngine,
) -> None:
    """SQLite rebuilds ``inbox_message`` and ``outbox`` when 0009 and 0010 drop their columns,
    which drops their triggers silently: back at 0008, every trigger that revision had is there."""
    await upgrade_database(fresh_engine, "0008_status_back")
    before = await _triggers(fresh_engine)
    assert {t for _, t in before} >= {"inbox_message", "outbox", "trace"}
    await upgrade_database(fresh_engine, "head")
    await _downgrade(fresh_engine, "0008_status_back")
    assert await _triggers(fresh_engine) == before
