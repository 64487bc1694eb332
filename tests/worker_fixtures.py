"""Fixtures and helpers for the worker tests, over SQLite and PostgreSQL. Does I/O.

``worker_engine`` is a migrated, empty store (every table emptied on the session's PostgreSQL
schema). ``ingest`` stores raw messages through the listener's own intake path
(:meth:`~cm_fhir.listener.MllpListener.handle_payload`, no socket); ``store_rows`` reads tables
back; ``settle_worker`` runs a worker until nothing is claimable.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from sqlalchemy import Table, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from cm_fhir.listener import ListenerConfig, MllpListener
from cm_fhir.store.case_tables import cases, fhir_resources, outbox, patient_states, trace
from cm_fhir.store.engine import upgrade_database
from cm_fhir.store.tables import inbox_messages
from cm_fhir.store.writer import InboxWriter
from cm_fhir.worker import BatchResult, Worker, WorkerConfig
from inbox_fixtures import Database

_TABLES = ("inbox_message", "patient_states", "cases", "outbox", "trace", "fhir_resources")


@pytest.fixture
async def worker_engine(database: Database) -> AsyncIterator[AsyncEngine]:
    """A migrated store with every worker table empty."""
    engine = database.engine()
    await upgrade_database(engine)
    if engine.dialect.name == "postgresql":
        async with engine.begin() as connection:
            await connection.execute(text(f"TRUNCATE {', '.join(_TABLES)} RESTART IDENTITY"))
    yield engine
    await engine.dispose()


async def ingest(engine: AsyncEngine, messages: Sequence[str | bytes]) -> list[bytes]:
    """Store each message as the listener would (one frame each); the ACK payloads."""
    acks: list[bytes] = []
    async with InboxWriter(engine) as writer:
        listener = MllpListener(ListenerConfig(port=0), writer)
        for message in messages:
            data = message.encode() if isinstance(message, str) else message
            acks += await listener.handle_payload(data)
    return acks


async def settle_worker(engine: AsyncEngine, **config: Any) -> BatchResult:
    """Run a worker (no retry delay unless given) until nothing is claimable."""
    config.setdefault("retry_delay", 0.0)
    apply = config.pop("apply", None)
    worker = Worker(engine, WorkerConfig(**config), **({"apply": apply} if apply else {}))
    return await worker.run_once()


async def rows(engine: AsyncEngine, table: Table, order: Any = None) -> list[Any]:
    """Every row of ``table`` (ordered by ``order`` or the primary key)."""
    query = select(table).order_by(*(order if order is not None else table.primary_key.columns))
    async with engine.connect() as connection:
        return list((await connection.execute(query)).all())


__all__ = [
    "cases",
    "fhir_resources",
    "inbox_messages",
    "ingest",
    "outbox",
    "patient_states",
    "rows",
    "settle_worker",
    "trace",
    "worker_engine",
]
