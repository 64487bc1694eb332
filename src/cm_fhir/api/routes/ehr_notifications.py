"""``POST /fhir/subscription-notification/{endpoint}``: R4 Subscription notifications
(Subscriptions R5 Backport IG) from an EHR, bringing Task status back, or from a payer, bringing
its ClaimResponses (:meth:`cm_fhir.sync.payer.PayerDelivery.notify`). I/O.

The EHR authenticates with the bearer secret configured for its endpoint (not an API key: the
front door leaves this path to the route), compared in constant time; a payer may instead carry
the secret of the Subscription this side made there (:mod:`cm_fhir.sync.payer_subscribe`,
compared by digest), and is then taken for that Subscription only; a wrong or missing secret
is 401 (audited), and so is an endpoint that is unknown or has no secret (endpoint names cannot
be probed); a body that is not a notification Bundle is 400; a notification of a Subscription the
endpoint does not accept (another server's, or not in its ``subscriptions``) is 403 (audited),
all as OperationOutcome. Each notified Task is read from the endpoint before it is applied
(``reread_notified_tasks``, on by default), so a forged payload changes nothing. An endpoint
that cannot be read meanwhile (an ``id-only`` Task, the gap poll) answers 503, so the EHR sends
the notification again. Handshakes and heartbeats are acknowledged;
events are applied (:meth:`cm_fhir.sync.status_back.StatusBack.notify`), reading ``id-only``
focuses from the endpoint and polling when ``eventsSinceSubscriptionStart`` shows a gap. The
answer is 200 with an OperationOutcome that counts what the Tasks did (no patient data).
"""

from __future__ import annotations

import hmac
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.ext.asyncio import AsyncEngine

from cm_fhir.api.deps import get_context, record_denial
from cm_fhir.api.errors import FHIR_JSON, error_response
from cm_fhir.errors import RemoteFhirError, ValidationError
from cm_fhir.fhir.outcome import Issue, operation_outcome
from cm_fhir.mapping.payer_exchange import PayerExchange, default_payer_exchange
from cm_fhir.mapping.registry import MappingRegistry, default_registry
from cm_fhir.settings import Settings
from cm_fhir.store.payer_subscribed import read_subscribed
from cm_fhir.sync.endpoints import RequestCount, open_client
from cm_fhir.sync.notifications import read_notification, type_and_id
from cm_fhir.sync.payer import PayerDelivery
from cm_fhir.sync.routing import outbox_routes
from cm_fhir.sync.status_back import StatusBack, StatusBackEndpoint

__all__ = ["NOTIFICATION_PREFIX", "NotificationReceiver", "open_receivers", "router"]

#: Paths the front door leaves to this route's own authentication.
NOTIFICATION_PREFIX = "/fhir/subscription-notification/"
router = APIRouter(tags=["ehr"])


@dataclass(frozen=True, slots=True)
class NotificationReceiver:
    """What applies one endpoint's notifications (an EHR's status back, a payer's answers) and
    the bearer secret they carry."""

    status_back: StatusBack | PayerDelivery
    secret: str | None
    subscribed: bool = False  # a payer's: also its Subscription's own secret (payer_subscribed)


async def open_receivers(
    settings: Settings,
    engine: AsyncEngine,
    stack: AsyncExitStack,
    *,
    registry: MappingRegistry | None = None,
    payer_exchange: PayerExchange | None = None,
) -> dict[str, NotificationReceiver]:
    """A receiver per EHR or payer endpoint with a ``notification_secret``; their clients close
    with ``stack``."""
    out = {}
    for endpoint in settings.endpoints:
        if endpoint.notification_secret is None:
            continue
        client = open_client(endpoint, RequestCount(), settings.ehr)
        stack.push_async_callback(client.aclose)
        back = StatusBack(engine, default_registry(), StatusBackEndpoint.of(endpoint), client)
        out[endpoint.name] = NotificationReceiver(
            back, endpoint.notification_secret.get_secret_value()
        )
    spec = payer_exchange or default_payer_exchange()
    routes = outbox_routes(settings)
    subscribing = settings.payer.public_url is not None
    for payer in settings.payer_endpoints:
        subscribed = subscribing and payer.subscribe != "never"
        if payer.notification_secret is None and not subscribed:
            continue
        client = open_client(payer, RequestCount(), settings.ehr)
        stack.push_async_callback(client.aclose)
        delivery = PayerDelivery(
            engine,
            payer,
            client,
            settings.ehr,
            "notifications",
            registry=registry or default_registry(),
            spec=spec,
            routes=routes,
        )
        secret = payer.notification_secret
        out[payer.name] = NotificationReceiver(
            delivery, secret.get_secret_value() if secret else None, subscribed
        )
    return out


def _token(request: Request) -> str | None:
    scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
    return token if scheme.lower() == "bearer" and token else None


async def _authorised(
    request: Request, endpoint: str, receiver: NotificationReceiver | None
) -> tuple[bool, str | None]:
    """Whether the request carries the endpoint's secret; and, when it is the secret of our
    Subscription at a payer, that Subscription's id (only its notifications are taken)."""
    token = _token(request)
    if receiver is None or token is None:
        return False, None
    if receiver.secret and hmac.compare_digest(token.encode(), receiver.secret.encode()):
        return True, None
    if receiver.subscribed:
        async with get_context(request).engine.connect() as connection:
            held = await connection.run_sync(read_subscribed, endpoint)
        if held is not None and held.subscription_id and held.carries_secret(token):
            return True, held.subscription_id
    return False, None


@router.post(
    NOTIFICATION_PREFIX + "{endpoint}",
    summary="Receive an R4 Subscription notification (R5 Backport) from an EHR endpoint",
    response_class=Response,
)
async def subscription_notification(request: Request, endpoint: str) -> Response:
    receivers: dict[str, NotificationReceiver] = get_context(request).notifications
    receiver = receivers.get(endpoint)
    authorised, ours = await _authorised(request, endpoint, receiver)
    if receiver is None or not authorised:
        subject = f"ehr:{endpoint}"[:255]
        await record_denial(request.scope, subject, "ehr", 401, "wrong notification secret")
        headers = {"WWW-Authenticate": 'Bearer realm="cm-fhir"'}
        return error_response(
            request, 401, "the endpoint's bearer secret is required", headers=headers
        )
    try:
        body: Any = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        return error_response(request, 400, "the body is not JSON")
    try:
        notification = read_notification(body)
    except ValidationError as exc:
        return error_response(request, 400, str(exc), outcome=exc.outcome)
    endpoint_of = receiver.status_back.endpoint
    taken = (
        endpoint_of
        if isinstance(endpoint_of, StatusBackEndpoint)
        else StatusBackEndpoint.of(endpoint_of)
    )
    if not taken.accepts(notification.subscription) or (
        ours is not None and type_and_id(notification.subscription) != f"Subscription/{ours}"
    ):
        subject = f"ehr:{endpoint}"[:255]
        await record_denial(request.scope, subject, "ehr", 403, "unknown subscription")
        return error_response(request, 403, "not a subscription of this endpoint")
    try:
        result = await receiver.status_back.notify(notification)
    except RemoteFhirError as exc:  # an id-only Task or the gap poll could not be read: retry
        return error_response(request, 503, f"the endpoint could not be read ({exc.status})")
    counts = ", ".join(f"{k} {v}" for k, v in sorted(result.counts.items())) or "no Tasks"
    text = f"{notification.type}: {counts}" + ("; missed events: polled" if result.gap else "")
    outcome = operation_outcome([Issue("information", "informational", text)])
    return JSONResponse(outcome, 200, media_type=FHIR_JSON)
