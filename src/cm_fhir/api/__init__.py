"""The HTTP API of cm-fhir (FastAPI). I/O edge: serves HTTP, reads and writes the store.

The seam for route modules::

    from cm_fhir.api.app import create_app      # create_app(settings, *, engine=None) -> FastAPI
    from cm_fhir.api.deps import (
        EngineDep,            # the AsyncEngine of the app (from app.state)
        SettingsDep,          # the Settings the app was built with
        PrincipalDep,         # the authenticated caller: Principal(subject, scopes, method)
        require_scope,        # Depends(require_scope("read" | "write")) on /api routes
        require_fhir_read,    # Depends(require_fhir_read("Task")) on /fhir: system/*.read,
                              #   system/Task.read, SMART v2 system/Task.rs
        AuditDep,             # await audit.record("read", "case", case_id, connection=conn)
    )

A route module is ``cm_fhir.api.routes.<name>`` defining ``router = APIRouter(...)``; the modules
named in ``cm_fhir.api.routes.ROUTE_MODULES`` (health, messages, outbox, cases, fhir) are included
when present, so adding ``routes/cases.py`` or ``routes/fhir.py`` needs no change to the factory.

Before routing, :mod:`cm_fhir.api.front_door` authenticates every request but the open paths
(``/health``, ``/ready``, ``/fhir/metadata``, the OpenAPI document and its pages) from its headers
and bounds its body by ``http.max_body_bytes`` (413), so no route reads a body for a stranger.

Errors: raise :class:`fastapi.HTTPException` or an error of :mod:`cm_fhir.errors`
(``RecordNotFound`` -> 404, ``ValidationError`` -> 422 with its OperationOutcome, ``StoreError``
-> 503). Every error is JSON: ``{"error": {"status", "code", "message", "fields"}}`` on ``/api``,
an OperationOutcome (``application/fhir+json``) on paths under ``/fhir``; validation errors name
the field (``query.limit``). Auth failures are 401/403 with ``WWW-Authenticate``.

Tests drive the app in-process with ``httpx.ASGITransport``; ASGITransport does not run the
lifespan, so wrap the app in ``async with app.router.lifespan_context(app):`` (the
``api_client`` fixture in ``tests/api_fixtures.py`` does this over SQLite and PostgreSQL).
"""

from cm_fhir.api.app import create_app

__all__ = ["create_app"]
