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
with ``WWW-Authenticate`` (an OperationOutcome under ``/fhir``). The caller itself was
authenticated by :mod:`cm_fhir.api.front_door` from the headers, before any body was read;
:func:`current_principal` hands that principal to the routes. :func:`record_denial` audits every
refusal (401 and 403), and :func:`route_template` names routes in the audit trail and the logs.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from starlette.routing import compile_path
from starlette.types import Scope

from cm_fhir.api.auth import Authenticator, AuthError, Principal, grants_fhir_read
from cm_fhir.listener import MllpListener
from cm_fhir.mapping.payer_exchange import PayerExchange, default_payer_exchange
from cm_fhir.mapping.programmes import ProgrammesSpec, load_programmes
from cm_fhir.mapping.registry import MappingRegistry, default_registry
from cm_fhir.settings import Settings
from cm_fhir.store.audit import AuditGroupWriter, AuditRecord, record_audit
from cm_fhir.store.wakeup import Wakeup
from cm_fhir.sync.runner import SyncWorker

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
    "check_fhir_read",
    "current_principal",
    "get_context",
    "get_engine",
    "get_payer_exchange",
    "get_registry",
    "get_settings",
    "record_denial",
    "require_fhir_read",
    "require_scope",
    "route_path",
    "route_template",
    "token_subject",
]

log = logging.getLogger(__name__)


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
    denials: AuditGroupWriter = field(default_factory=AuditGroupWriter)  # refusals' audit rows
    sync: SyncWorker | None = None  # the sync role, when this process runs it
    registry: MappingRegistry = field(default_factory=default_registry)  # the site's mappings
    payer_exchange: PayerExchange = field(default_factory=default_payer_exchange)  # the same site
    programmes: ProgrammesSpec = field(default_factory=load_programmes)  # programmes.yaml
    # EHR endpoint name -> its status back and notification secret (routes/ehr_notifications.py)
    notifications: dict[str, Any] = field(default_factory=dict)
    # notified after a commit that put subscription notifications in the outbox
    subscription_events: Wakeup = field(default_factory=Wakeup)


def get_context(request: Request) -> AppContext:
    context: AppContext = request.app.state.context
    return context


def get_engine(request: Request) -> AsyncEngine:
    return get_context(request).engine


def get_settings(request: Request) -> Settings:
    return get_context(request).settings


def get_registry(request: Request) -> MappingRegistry:
    """The mapping registry of the site (``mappings_dir``), loaded once at start."""
    return get_context(request).registry


def get_payer_exchange(request: Request) -> PayerExchange:
    """The site's ``payer-exchange.yaml`` (``mappings_dir`` over the bundled), loaded at start."""
    return get_context(request).payer_exchange


ContextDep = Annotated[AppContext, Depends(get_context)]
EngineDep = Annotated[AsyncEngine, Depends(get_engine)]
SettingsDep = Annotated[Settings, Depends(get_settings)]

# auto_error=False: a missing header is our 401 (JSON / OperationOutcome), not FastAPI's 403.
_bearer = HTTPBearer(auto_error=False, description="An API key or an OAuth2 JWT access token.")


async def current_principal(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller the front door authenticated (:mod:`cm_fhir.api.front_door`), else 401.

    ``_credentials`` only documents the bearer scheme in the OpenAPI document: the token was
    checked before the request body was read, and the principal kept in the request state.
    """
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:
        raise AuthError(401, "a bearer token is required")
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


def check_fhir_read(principal: Principal, resource_type: str) -> None:
    """403 unless the caller may read ``resource_type``: ``system/*.read``,
    ``system/<Type>.read`` or SMART v2 (``system/<Type>.rs``)."""
    if not grants_fhir_read(principal.scopes, resource_type):
        scope = f"system/{resource_type}.read"
        raise AuthError(403, f"this needs the '{scope}' or 'system/*.read' scope", scope=scope)


def require_fhir_read(resource_type: str) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency for a FHIR route of one type (:func:`check_fhir_read`)."""

    async def _check(principal: PrincipalDep) -> Principal:
        check_fhir_read(principal, resource_type)
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


def route_path(scope: Scope) -> str:
    """The request path below the app's root path (``/fhir/Task``, whatever the proxy prefix)."""
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path


def _route_table(app: Any) -> list[tuple[re.Pattern[str], str]]:
    table: list[tuple[re.Pattern[str], str]] | None = getattr(app.state, "route_table", None)
    if table is None:
        paths = app.openapi().get("paths", {})
        table = [(compile_path(template)[0], template) for template in paths]
        app.state.route_table = table
    return table


def route_template(scope: Scope) -> str:
    """The route template of a request (``/api/messages/{message_id}``), never the concrete path.

    After routing it is the matched route's; before (in the front door) the path is matched
    against the templates of the OpenAPI document. ``(no route)`` when none matches.
    """
    route = scope.get("route")
    if route is not None and getattr(route, "path", None):
        return str(route.path)
    app = scope.get("app")
    if app is None or not hasattr(app, "openapi"):
        return "(no route)"
    path = route_path(scope)
    for pattern, template in _route_table(app):
        if pattern.match(path):
            return template
    return "(no route)"


def _client_of(scope: Scope) -> str | None:
    client = scope.get("client")
    return str(client[0]) if client else None


def audit(request: Request, engine: EngineDep, principal: PrincipalDep) -> Auditor:
    """The request's :class:`Auditor` (needs an authenticated caller)."""
    return Auditor(engine, principal, route_template(request.scope), _client_of(request.scope))


def token_subject(authorization: str | None) -> str:
    """How a refused caller is named in the audit trail: a short digest of what it sent, or
    ``anonymous``. Never the token itself."""
    if not authorization:
        return "anonymous"
    return "token:" + hashlib.sha256(authorization.encode()).hexdigest()[:12]


async def record_denial(
    scope: Scope, subject: str, auth_method: str, status: int, reason: str
) -> None:
    """Audit a refused request (401 or 403): who, route template, client, never the token.

    Best effort: a database that cannot take the row is logged, and the refusal still answered.
    """
    context: AppContext | None = getattr(getattr(scope.get("app"), "state", None), "context", None)
    if context is None:
        return
    record = AuditRecord(
        subject=subject,
        auth_method=auth_method,
        action="authenticate" if status == 401 else "authorise",
        entity_type="request",
        entity_id=None,
        route=route_template(scope),
        outcome="denied" if status == 401 else "forbidden",
        client=_client_of(scope),
    )
    try:
        await context.denials.add(context.engine, record)
    except (SQLAlchemyError, OSError) as exc:
        log.warning("audit of a refused request failed: %s (%s)", type(exc).__name__, reason)


AuditDep = Annotated[Auditor, Depends(audit)]
