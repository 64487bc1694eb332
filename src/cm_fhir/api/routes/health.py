"""``GET /health`` (liveness and database) and ``GET /ready`` (readiness). I/O: one query each.

Both are open (no token), cheap, and say nothing about patients. ``/health`` answers 200 while
the process runs and the database answers a trivial query within two seconds, else 503.
``/ready`` also needs the schema at the revision this build expects and every role of the process
(api, listener, worker) running; during start-up and shutdown it answers 503, so a load balancer
sends nothing to a process that is going away.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from cm_fhir.api.deps import AppContext, ContextDep

__all__ = ["router"]

router = APIRouter(tags=["health"])
_DB_TIMEOUT = 2.0


async def _database_ok(context: AppContext) -> tuple[bool, float]:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(_DB_TIMEOUT), context.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except (SQLAlchemyError, OSError, TimeoutError):
        return False, time.perf_counter() - started
    return True, time.perf_counter() - started


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
    summary="Readiness: database, schema revision and roles running",
    responses={503: {"description": "Not ready (starting, stopping, or a dependency is down)"}},
)
async def ready(context: ContextDep) -> JSONResponse:
    ok, _ = await _database_ok(context)
    roles = dict(context.roles)
    checks = {
        "database": ok,
        "schema": context.schema_current,
        **{f"role:{name}": state == "running" for name, state in roles.items()},
    }
    is_ready = all(checks.values())
    body = {"status": "ready" if is_ready else "not-ready", "checks": checks}
    return JSONResponse(body, 200 if is_ready else 503)
