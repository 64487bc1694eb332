"""``GET /health`` (liveness and database) and ``GET /ready`` (readiness). I/O: a few queries.

Both are open (no token), cheap, and say nothing about patients. ``/health`` answers 200 while
the process runs and the database answers a trivial query within two seconds, else 503.
``/ready`` also needs the schema at the revision this build expects, every role of the process
(api, listener, worker) running, and intake flowing:

- **the inbox can be written**: a write probe (an ``UPDATE`` of no row of ``inbox_message`` in a
  transaction that is rolled back) must get the inbox's write lock within
  ``health.write_probe_timeout`` seconds, so a read-only database (a replica after a failover, a
  read-only file) or another writer holding the inbox fails it, on SQLite and PostgreSQL;
- **the inbox is being worked off**: the oldest message still waiting to be processed must be
  younger than ``health.max_inbox_age_seconds`` (0 turns the check off). Rows held back behind a
  dead letter of their patient wait for a person, not for the worker, and do not count (they are
  ``cm_fhir_inbox_waiting_behind_dead_letter`` in ``/metrics``).

A 503 names every failed check in ``reasons``. During start-up and shutdown ``/ready`` is 503 too,
so a load balancer sends nothing to a process that is going away.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import Connection, false, or_, select, text, update
from sqlalchemy.exc import SQLAlchemyError

from cm_fhir.api.deps import AppContext, ContextDep
from cm_fhir.store.engine import READ_ONLY_OPTION
from cm_fhir.store.queue import WAITING_PREFIX
from cm_fhir.store.tables import InboxState, inbox_messages

__all__ = ["router"]

router = APIRouter(tags=["health"])
_DB_TIMEOUT = 2.0
_t = inbox_messages
_PROBE = update(_t).where(false()).values(state=_t.c.state)
_FAILURES = (SQLAlchemyError, OSError, TimeoutError)


def _sqlite_cursor(connection: Connection) -> Any:
    """The driver's cursor: on SQLite the engine begins every transaction with BEGIN IMMEDIATE
    (a write lock), which a read-only check must not take."""
    dbapi = connection.connection.dbapi_connection
    assert dbapi is not None
    return dbapi.cursor()


def _sqlite_select_one(connection: Connection) -> None:
    cursor = _sqlite_cursor(connection)
    try:
        cursor.execute("SELECT 1")
    finally:
        cursor.close()


async def _database_ok(context: AppContext) -> tuple[bool, float]:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(_DB_TIMEOUT), context.engine.connect() as connection:
            if context.engine.dialect.name == "sqlite":
                await connection.run_sync(_sqlite_select_one)
            else:
                await connection.execute(text("SELECT 1"))
    except (*_FAILURES, sqlite3.Error):
        return False, time.perf_counter() - started
    return True, time.perf_counter() - started


def _sqlite_probe(connection: Connection, timeout: float) -> None:
    # The engine's connections wait up to 30 s for a lock; the probe waits ``timeout`` only.
    cursor = _sqlite_cursor(connection)
    cursor.execute("PRAGMA busy_timeout")
    previous = int(cursor.fetchone()[0])
    cursor.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
    try:
        cursor.execute("BEGIN IMMEDIATE")
        try:
            cursor.execute(str(_PROBE.compile(connection)))
        finally:
            cursor.execute("ROLLBACK")
    finally:
        cursor.execute(f"PRAGMA busy_timeout = {previous}")
        cursor.close()


async def _inbox_write_problem(context: AppContext) -> str | None:
    """None when the inbox takes a write now, else why not (an error class, never data)."""
    engine = context.engine
    timeout = context.settings.health.write_probe_timeout
    try:
        async with asyncio.timeout(timeout + _DB_TIMEOUT), engine.connect() as connection:
            if engine.dialect.name == "sqlite":
                await connection.run_sync(_sqlite_probe, timeout)
                return None
            transaction = await connection.begin()
            try:
                await connection.execute(text(f"SET LOCAL lock_timeout = {int(timeout * 1000)}"))
                await connection.execute(_PROBE)
            finally:
                await transaction.rollback()
    except (*_FAILURES, sqlite3.Error) as exc:
        return f"the inbox cannot be written ({type(exc).__name__})"
    return None


async def _inbox_age_problem(context: AppContext) -> str | None:
    """None when the oldest unprocessed message is young enough (or the check is off)."""
    limit = context.settings.health.max_inbox_age_seconds
    if limit <= 0:
        return None
    waiting = or_(_t.c.reason.is_(None), ~_t.c.reason.startswith(WAITING_PREFIX))
    oldest = (
        select(_t.c.received_at)
        .where(_t.c.state == InboxState.RECEIVED.value, waiting)
        .order_by(_t.c.id)
        .limit(1)
    )
    try:
        async with asyncio.timeout(_DB_TIMEOUT), context.engine.connect() as connection:
            reader = await connection.execution_options(**{READ_ONLY_OPTION: True})
            received = (await reader.execute(oldest)).scalar()
    except _FAILURES as exc:
        return f"the inbox age cannot be read ({type(exc).__name__})"
    if received is None:
        return None
    received = received.replace(tzinfo=UTC) if received.tzinfo is None else received
    age = (datetime.now(UTC) - received).total_seconds()
    if age <= limit:
        return None
    return f"the oldest unprocessed inbox message is {age:.0f} s old (limit {limit:.0f} s)"


@router.get(
    "/health",
    summary="Liveness and database reachability",
    responses={503: {"description": "The database does not answer"}},
)
async def health(context: ContextDep) -> JSONResponse:
    ok, seconds = await _database_ok(context)
    body: dict[str, Any] = {
        "status": "ok" if ok else "unavailable",
        "database": {"status": "ok" if ok else "unreachable", "seconds": round(seconds, 4)},
    }
    return JSONResponse(body, 200 if ok else 503)


@router.get(
    "/ready",
    summary="Readiness: database, schema, roles running, inbox writable and worked off",
    responses={503: {"description": "Not ready: starting, stopping, or intake is stalled"}},
)
async def ready(context: ContextDep) -> JSONResponse:
    ok, _ = await _database_ok(context)
    reasons: list[str] = []
    if not ok:
        reasons.append("the database does not answer")
    if not context.schema_current:
        reasons.append("the database schema is not at this build's revision")
    roles = dict(context.roles)
    reasons += [f"role {name} is {state}" for name, state in roles.items() if state != "running"]
    write_problem = await _inbox_write_problem(context) if ok else "the database does not answer"
    age_problem = await _inbox_age_problem(context) if ok else None
    reasons += [p for p in (write_problem, age_problem) if p is not None and ok]
    checks = {
        "database": ok,
        "schema": context.schema_current,
        **{f"role:{name}": state == "running" for name, state in roles.items()},
        "inbox_writable": write_problem is None,
        "inbox_age": age_problem is None,
    }
    is_ready = all(checks.values())
    body = {"status": "ready" if is_ready else "not-ready", "checks": checks, "reasons": reasons}
    return JSONResponse(body, 200 if is_ready else 503)
