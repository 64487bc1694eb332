"""FastAPI dependencies: the engine, the settings, the caller and its scopes, the audit trail. I/O.

Route modules depend on these aliases instead of reaching into ``app.state``::

    @router.get("/cases/{case_id}")
    async def read_case(case_id: str, engine: EngineDep, audit: AuditDep,
                        _: Annotated[Principal, Depends(require_scope("read"))]) -> ...:
        async with engine.begin() as connection:
            ...
            await audit.record("read", "case", case_id, connection=connection)

``require_scope("read" | "write")`` guards ``/api``; ``require_fhir_read("Task")`` guards the
FHIR facade with SMART system scopes (``system/*.read``, ``system/Task.read``, ``system/Task.rs``).
Failures raise :class:`~cm_fhir.api.auth.AuthError`, which the error handlers turn into 401/403
with ``WWW-Authenticate`` (an OperationOutcome under ``/fhir``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cm_fhir.api.auth import Authenticator, AuthError, Principal, grants_fhir_read
from cm_fhir.listener import MllpListener
from cm_fhir.settings import Settings
from cm_fhir.store.audit import AuditRecord, record_audit

__all__ = [
    "AppContext",
    "AuditDep",
    "Auditor",
    "ContextDep",
    "EngineDep",
    "PrincipalDep",
    "ReadPrincipal",
    "SettingsDep",
    "WritePrincipal",
    "audit",
    "current_principal",
    "get_context",
    "get_engine",
    "get_settings",
    "require_fhir_read",
    "require_scope",
]


@dataclass(slots=True)
class AppContext:
    """What the routes share, kept in ``app.state.context`` for the app's lifetime."""

    settings: Settings
    engine: AsyncEngine
    authenticator: Authenticator
    ingest: MllpListener | None = None
    listener: MllpListener | None = None
    roles: dict[str, str] = field(default_factory=dict)  # role -> "starting"/"running"/"stopped"
    schema_current: bool = False


def get_context(request: Request) -> AppContext:
    context: AppContext = request.app.state.context
    return context


def get_engine(request: Request) -> AsyncEngine:
    return get_context(request).engine


def get_settings(request: Request) -> Settings:
    return get_context(request).settings


ContextDep = Annotated[AppContext, Depends(get_context)]
EngineDep = Annotated[AsyncEngine, Depends(get_engine)]
SettingsDep = Annotated[Settings, Depends(get_settings)]

# auto_error=False: a missing header is our 401 (JSON / OperationOutcome), not FastAPI's 403.
_bearer = HTTPBearer(auto_error=False, description="An API key or an OAuth2 JWT access token.")


async def current_principal(
    request: Request,
    context: ContextDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The authenticated caller (401 without a valid bearer token)."""
    header = request.headers.get("authorization")
    principal = await context.authenticator.authenticate(header if credentials else None)
    request.state.principal = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(current_principal)]


def require_scope(scope: str) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency: the caller must hold ``scope`` (``read`` or ``write``), else 403."""

    async def _check(principal: PrincipalDep) -> Principal:
        if not principal.has_scope(scope):
            raise AuthError(403, f"this needs the '{scope}' scope", scope=scope)
        return principal

    _check.__name__ = f"require_{scope.replace('/', '_').replace('*', 'all')}"
    return _check


def require_fhir_read(resource_type: str) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency for the FHIR facade: ``system/*.read`` or ``system/<Type>.read`` (or v2)."""

    async def _check(principal: PrincipalDep) -> Principal:
        if not grants_fhir_read(principal.scopes, resource_type):
            scope = f"system/{resource_type}.read"
            raise AuthError(403, f"this needs the '{scope}' scope", scope=scope)
        return principal

    _check.__name__ = f"require_fhir_read_{resource_type}"
    return _check


ReadPrincipal = Annotated[Principal, Depends(require_scope("read"))]
WritePrincipal = Annotated[Principal, Depends(require_scope("write"))]


class Auditor:
    """Records who did what to which entity, for one request."""

    def __init__(self, engine: AsyncEngine, principal: Principal, route: str, client: str | None):
        self._engine = engine
        self.principal = principal
        self._route = route
        self._client = client

    def record_for(
        self, action: str, entity_type: str, entity_id: str | None, outcome: str = "success"
    ) -> AuditRecord:
        return AuditRecord(
            subject=self.principal.subject,
            auth_method=self.principal.method,
            action=action,
            entity_type=entity_type,
            entity_id=entity_id,
            route=self._route,
            outcome=outcome,
            client=self._client,
        )

    async def record(
        self,
        action: str,
        entity_type: str,
        entity_id: str | None = None,
        *,
        outcome: str = "success",
        connection: AsyncConnection | None = None,
    ) -> None:
        """Write one audit row; inside ``connection``'s transaction when given."""
        await self.record_many(action, entity_type, [entity_id], outcome, connection=connection)

    async def record_many(
        self,
        action: str,
        entity_type: str,
        entity_ids: list[str | None],
        outcome: str = "success",
        *,
        connection: AsyncConnection | None = None,
    ) -> None:
        records = [self.record_for(action, entity_type, i, outcome) for i in entity_ids]
        if connection is not None:
            await record_audit(connection, records)
            return
        async with self._engine.begin() as own:
            await record_audit(own, records)


def audit(request: Request, engine: EngineDep, principal: PrincipalDep) -> Auditor:
    """The request's :class:`Auditor` (needs an authenticated caller)."""
    route = getattr(request.scope.get("route"), "path", None)
    client = request.client.host if request.client else None
    return Auditor(engine, principal, route or "", client)


AuditDep = Annotated[Auditor, Depends(audit)]
