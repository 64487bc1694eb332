"""``/fhir/Subscription``: R4 Subscriptions (R5 Backport) to the Da Vinci PAS topic (payer side).
I/O.

``POST /fhir/Subscription`` reads the Subscription (:func:`~cm_fhir.fhir.subscription.
read_subscription`: the PAS topic, an optional ``orgIdentifier`` filter, a ``rest-hook`` channel
with ``id-only`` or ``full-resource`` payloads) and stores it ``active`` for the caller
(:mod:`cm_fhir.store.subscriptions`); one it cannot use is 400 with an OperationOutcome naming
the element. The answer is 201 with the Subscription as stored (header values withheld) and its
``Location``. ``GET /fhir/Subscription/{id}``, ``GET /fhir/Subscription/{id}/$status`` and
``DELETE /fhir/Subscription/{id}`` serve its owner only: another caller gets the same 404 as for
an id that does not exist. A subscription hears only of the reviews its owner submitted
(``Claim/$submit``). Scopes: SMART ``system/Subscription.c`` to create (``.write``, ``.*``),
``.r`` to read (``.read``) and ``.d`` to delete (``.write``). Every exchange is audited.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from cm_fhir.api.auth import AuthError, Principal, grants_fhir
from cm_fhir.api.deps import AuditDep, EngineDep, PrincipalDep
from cm_fhir.api.errors import FHIR_JSON, error_response, json_bundle
from cm_fhir.errors import ValidationError
from cm_fhir.fhir.subscription import read_subscription, status_parameters, subscription_resource
from cm_fhir.store.subscriptions import (
    StoredSubscription,
    create_subscription,
    delete_subscription,
    read_subscription_row,
)

__all__ = ["router"]

router = APIRouter(tags=["payer exchange"])
_ENTITY = "Subscription"


def _scope(action: Literal["r", "c", "d"]) -> Callable[[Principal], Awaitable[Principal]]:
    async def check(principal: PrincipalDep) -> Principal:
        if not grants_fhir(principal.scopes, _ENTITY, action):
            scope = f"system/{_ENTITY}.{action}"
            raise AuthError(403, f"this needs the '{scope}' scope", scope=scope)
        return principal

    return check


CreatePrincipal = Annotated[Principal, Depends(_scope("c"))]
ReadPrincipal = Annotated[Principal, Depends(_scope("r"))]
DeletePrincipal = Annotated[Principal, Depends(_scope("d"))]


def _resource(stored: StoredSubscription) -> str:
    return json.dumps(subscription_resource(stored.id, stored.request, stored.status))


async def _own(
    request: Request,
    engine: EngineDep,
    audit: AuditDep,
    principal: Principal,
    sid: str,
    action: str,
) -> StoredSubscription | Response:
    """The caller's subscription ``sid``, or the 404 answer (audited)."""
    async with engine.connect() as connection:
        stored = await connection.run_sync(read_subscription_row, sid[:64])
    if stored is None or stored.owner != principal.subject:
        await audit.record(action, _ENTITY, None, outcome="failure")
        return error_response(request, 404, "no such Subscription")
    return stored


@router.post(
    "/fhir/Subscription",
    summary="Subscribe to results of pended prior-authorization requests (payer side)",
    response_class=Response,
    status_code=201,
)
async def create(
    request: Request, engine: EngineDep, audit: AuditDep, principal: CreatePrincipal
) -> Response:
    got = await json_bundle(request, audit, "create", _ENTITY)
    if isinstance(got, Response):
        return got
    try:
        asked = read_subscription(got[1])
    except ValidationError as exc:
        await audit.record("create", _ENTITY, None, outcome="failure")
        return error_response(request, 400, str(exc), outcome=exc.outcome)
    sid = uuid.uuid4().hex
    async with engine.begin() as connection:
        stored = await connection.run_sync(
            create_subscription, sid, principal.subject, asked, datetime.now(UTC)
        )
        await audit.record("create", _ENTITY, sid, connection=connection)
    location = str(request.url_for("subscription-read", subscription_id=sid))
    return Response(_resource(stored), 201, media_type=FHIR_JSON, headers={"Location": location})


@router.get(
    "/fhir/Subscription/{subscription_id}",
    summary="Read one of the caller's Subscriptions",
    response_class=Response,
    name="subscription-read",
)
async def read(
    request: Request,
    subscription_id: str,
    engine: EngineDep,
    audit: AuditDep,
    principal: ReadPrincipal,
) -> Response:
    found = await _own(request, engine, audit, principal, subscription_id, "read")
    if isinstance(found, Response):
        return found
    await audit.record("read", _ENTITY, found.id)
    return Response(_resource(found), 200, media_type=FHIR_JSON)


@router.get(
    "/fhir/Subscription/{subscription_id}/$status",
    summary="The status of one of the caller's Subscriptions (events since it started)",
    response_class=Response,
)
async def status(
    request: Request,
    subscription_id: str,
    engine: EngineDep,
    audit: AuditDep,
    principal: ReadPrincipal,
) -> Response:
    found = await _own(request, engine, audit, principal, subscription_id, "status")
    if isinstance(found, Response):
        return found
    parameters = status_parameters(found.id, "query-status", found.events, status=found.status)
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": 1,
        "entry": [{"resource": parameters, "search": {"mode": "match"}}],
    }
    await audit.record("status", _ENTITY, found.id)
    return Response(json.dumps(bundle), 200, media_type=FHIR_JSON)


@router.delete(
    "/fhir/Subscription/{subscription_id}",
    summary="End one of the caller's Subscriptions",
    response_class=Response,
    status_code=204,
)
async def remove(
    request: Request,
    subscription_id: str,
    engine: EngineDep,
    audit: AuditDep,
    principal: DeletePrincipal,
) -> Response:
    found = await _own(request, engine, audit, principal, subscription_id, "delete")
    if isinstance(found, Response):
        return found
    async with engine.begin() as connection:
        await connection.run_sync(delete_subscription, found.id, datetime.now(UTC))
        await audit.record("delete", _ENTITY, found.id, connection=connection)
    return Response(status_code=204)
