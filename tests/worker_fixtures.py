"""Fixtures and helpers for the worker tests, over SQLite and PostgreSQL. Does I/O.

``worker_engine`` is a migrated, empty store (every table emptied on the session's PostgreSQL
schema). ``ingest`` stores raw messages through the listener's own intake path
(:meth:`~cm_fhir.listener.MllpListener.handle_payload`, no socket); ``store_rows`` reads tables
back; ``settle_worker`` runs a worker until nothing is claimable; ``worker_http`` is a client of
the HTTP API over the worker's database.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import pytest
from sqlalchemy import Table, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from api_fixtures import API_KEY
from cm_fhir.api.app import create_app
from cm_fhir.hl7v2.adt import parse_adt
from cm_fhir.hl7v2.events import AdtEvent
from cm_fhir.listener import ListenerConfig, MllpListener
from cm_fhir.settings import Settings
from cm_fhir.store.case_tables import cases, fhir_resources, outbox, patient_states, trace
from cm_fhir.store.engine import upgrade_database
from cm_fhir.store.tables import inbox_messages
from cm_fhir.store.writer import InboxWriter
from cm_fhir.worker import BatchResult, Worker, WorkerConfig
from cm_fhir.workflow import PatientState, apply_event
from inbox_fixtures import Database
from workflow_messages import NOW, maps, rules

_TABLES = (
    "inbox_message",
    "patient_states",
    "cases",
    "outbox",
    "trace",
    "fhir_resources",
    "sync_state",
    "payer_reviews",
    "payer_subscriptions",
    "payer_review_submitters",
    "payer_subscribed",
)


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


@pytest.fixture
async def worker_http(
    worker_engine: AsyncEngine, api_settings: Settings
) -> AsyncIterator[httpx.AsyncClient]:
    """The API over the worker's database."""
    app = create_app(api_settings, engine=worker_engine)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app)
        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://cm-fhir.test", headers=headers
        ) as client:
            yield client


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


def expected_states(messages: list[str]) -> dict[str, PatientState]:
    """The pure workflow over the same messages (each once, in order), by patient key."""
    states: dict[str, PatientState] = {}
    alias: dict[str, str] = {}
    for raw in dict.fromkeys(messages):
        event = parse_adt(raw, maps())
        assert isinstance(event, AdtEvent)
        outcome = apply_event(event, PatientState(), rules(), now=NOW)  # keys only
        key, *others = outcome.lock_keys
        key = alias.get(key, key)
        merged = [states.pop(alias.get(k, k)) for k in others if alias.get(k, k) in states]
        outcome = apply_event(
            event, states.get(key, PatientState()), rules(), now=NOW, merged=merged
        )
        states[key] = outcome.state
        alias.update({k: key for k in outcome.retired_keys})
    return states


__all__ = [
    "cases",
    "expected_states",
    "fhir_resources",
    "inbox_messages",
    "ingest",
    "outbox",
    "patient_states",
    "rows",
    "settle_worker",
    "trace",
    "worker_engine",
    "worker_http",
]
