"""Subscriptions held on the payer side (PAS topic), and who submitted each review. I/O.

``payer_subscriptions`` holds one row per Subscription a client created
(``POST /fhir/Subscription``): its owner (the authenticated subject that created it), the
requester filter, the channel (endpoint, header lines, payload) and ``events``, the number of
events it has been sent since it started (the notifications' ``eventsSinceSubscriptionStart``).
``payer_review_submitters`` names, per review, the subject whose ``Claim/$submit`` asked for it:
a subscription is only ever told about its owner's own reviews, so one provider never hears of
another's patients.

:func:`enqueue_review_event` runs in the transaction that changes a review: for each active
subscription of the review's submitter (and of its requesting organisation, when filtered) it
counts the event and puts the notification Bundle in the outbox (endpoint
``subscription/<id>``, operation :data:`NOTIFY`), so it is delivered, retried and backed off like
every other outbox message and never sent for a change that was rolled back. Functions run in
the caller's transaction.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    DateTime,
    Index,
    String,
    Table,
    Text,
    delete,
    select,
    update,
)

from cm_fhir.domain import Case, UtilizationReview
from cm_fhir.fhir.pas_response import claim_response
from cm_fhir.fhir.subscription import EventFocus, SubscriptionRequest, notification_bundle
from cm_fhir.mapping.payer_exchange import PayerExchange
from cm_fhir.store.case_tables import OutboxState, outbox
from cm_fhir.store.outbox import OutboxEntry, enqueue
from cm_fhir.store.tables import metadata
from cm_fhir.workflow.facts import patient_key

__all__ = [
    "ENDPOINT_PREFIX",
    "NOTIFY",
    "StoredSubscription",
    "active_endpoints",
    "create_subscription",
    "delete_subscription",
    "end_subscription",
    "enqueue_review_event",
    "notify_review_change",
    "payer_review_submitters",
    "payer_subscriptions",
    "read_subscription_row",
    "record_submitter",
    "subscription_of_endpoint",
]

#: Outbox rows of a subscription go to the endpoint ``subscription/<id>`` ...
ENDPOINT_PREFIX = "subscription/"
#: ... as this operation (posted to the subscription's channel endpoint).
NOTIFY = "subscription-notification"
ACTIVE = "active"

payer_subscriptions = Table(
    "payer_subscriptions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("owner", String(255), nullable=False),
    Column("topic", String(500), nullable=False),
    Column("org_filter", String(500), nullable=True),
    Column("endpoint_url", String(2000), nullable=False),
    Column("headers", Text, nullable=False),
    Column("payload", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("events", BigInteger, nullable=False, server_default="0"),
    Column("end_at", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
Index("ix_payer_subscriptions_owner", payer_subscriptions.c.owner, payer_subscriptions.c.status)

payer_review_submitters = Table(
    "payer_review_submitters",
    metadata,
    Column("review_id", String(64), primary_key=True),
    Column("owner", String(255), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
_s = payer_subscriptions


@dataclass(frozen=True, slots=True)
class StoredSubscription:
    """One subscription as stored."""

    id: str
    owner: str
    request: SubscriptionRequest
    status: str
    events: int
    created_at: datetime

    @property
    def endpoint_name(self) -> str:
        return ENDPOINT_PREFIX + self.id


def _aware(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _stored(row: Any) -> StoredSubscription:
    request = SubscriptionRequest(
        topic=row.topic,
        endpoint=row.endpoint_url,
        headers=tuple(orjson.loads(row.headers)),
        payload=row.payload,
        org_filter=row.org_filter,
        end=_aware(row.end_at),
    )
    created = _aware(row.created_at)
    assert created is not None
    return StoredSubscription(row.id, row.owner, request, row.status, int(row.events), created)


def create_subscription(
    connection: Connection,
    subscription_id: str,
    owner: str,
    request: SubscriptionRequest,
    now: datetime,
) -> StoredSubscription:
    """Store a new active subscription of ``owner``."""
    connection.execute(
        _s.insert().values(
            id=subscription_id,
            owner=owner[:255],
            topic=request.topic,
            org_filter=request.org_filter,
            endpoint_url=request.endpoint,
            headers=orjson.dumps(list(request.headers)).decode(),
            payload=request.payload,
            status=ACTIVE,
            events=0,
            end_at=request.end,
            created_at=now,
            updated_at=now,
        )
    )
    return StoredSubscription(subscription_id, owner, request, ACTIVE, 0, now)


def read_subscription_row(
    connection: Connection, subscription_id: str
) -> StoredSubscription | None:
    row = connection.execute(select(_s).where(_s.c.id == subscription_id)).first()
    return _stored(row) if row is not None else None


def subscription_of_endpoint(connection: Connection, endpoint: str) -> StoredSubscription | None:
    """The subscription whose outbox endpoint is ``endpoint`` (``subscription/<id>``)."""
    if not endpoint.startswith(ENDPOINT_PREFIX):
        return None
    return read_subscription_row(connection, endpoint.removeprefix(ENDPOINT_PREFIX))


def _fail_waiting(connection: Connection, subscription_id: str, why: str, now: datetime) -> None:
    """The subscription's notifications still waiting will not be sent: ``failed``."""
    o = outbox.c
    connection.execute(
        update(outbox)
        .where(
            o.endpoint == ENDPOINT_PREFIX + subscription_id, o.state == OutboxState.PENDING.value
        )
        .values(state=OutboxState.FAILED.value, reason=why, last_error=why, updated_at=now)
    )


def end_subscription(
    connection: Connection, subscription_id: str, status: str, now: datetime
) -> None:
    """Set the subscription's status (``error`` when its endpoint refused a notification); its
    notifications still waiting end ``failed``."""
    connection.execute(
        update(_s).where(_s.c.id == subscription_id).values(status=status, updated_at=now)
    )
    _fail_waiting(connection, subscription_id, f"the subscription is {status}", now)


def delete_subscription(connection: Connection, subscription_id: str, now: datetime) -> None:
    """Forget the subscription; its notifications still waiting end ``failed``."""
    connection.execute(delete(_s).where(_s.c.id == subscription_id))
    _fail_waiting(connection, subscription_id, "the subscription is gone", now)


def active_endpoints(connection: Connection) -> list[str]:
    """The outbox endpoints of the active subscriptions."""
    query = select(_s.c.id).where(_s.c.status == ACTIVE).order_by(_s.c.id)
    return [ENDPOINT_PREFIX + str(sid) for sid in connection.execute(query).scalars()]


def record_submitter(connection: Connection, review_id: str, owner: str, now: datetime) -> None:
    """``owner`` submitted the review (the first submission counts; a resend changes nothing)."""
    found = connection.execute(
        select(payer_review_submitters.c.owner).where(
            payer_review_submitters.c.review_id == review_id
        )
    ).first()
    if found is None:
        connection.execute(
            payer_review_submitters.insert().values(
                review_id=review_id, owner=owner[:255], created_at=now
            )
        )


def _subscribers(
    connection: Connection, review_id: str, requester: str | None, now: datetime
) -> list[StoredSubscription]:
    owner = connection.execute(
        select(payer_review_submitters.c.owner).where(
            payer_review_submitters.c.review_id == review_id
        )
    ).scalar()
    if owner is None:  # not asked for through $submit: nobody subscribed to hear of it
        return []
    rows = connection.execute(
        select(_s).where(_s.c.owner == owner, _s.c.status == ACTIVE).order_by(_s.c.id)
    )
    found = [_stored(row) for row in rows]
    return [
        s
        for s in found
        if (s.request.org_filter is None or s.request.org_filter == requester)
        and (s.request.end is None or s.request.end > now)
    ]


def enqueue_review_event(
    connection: Connection,
    review_id: str,
    requester: str | None,
    claim_response: dict[str, Any],
    case_id: str,
    patient_key: str,
    now: datetime,
) -> int:
    """Count one event on each subscription that hears of this review and put its notification
    in the outbox; the number of notifications enqueued."""
    entries = []
    for subscription in _subscribers(connection, review_id, requester, now):
        connection.execute(
            update(_s)
            .where(_s.c.id == subscription.id)
            .values(events=_s.c.events + 1, updated_at=now)
        )
        number = int(
            connection.execute(select(_s.c.events).where(_s.c.id == subscription.id)).scalar_one()
        )
        bundle = orjson.dumps(
            notification_bundle(
                subscription.id,
                "event-notification",
                number,
                [EventFocus(number, now, claim_response)],
                subscription.request.payload,
                now,
            )
        )
        entries.append(
            OutboxEntry(
                case_id=case_id,
                patient_key=patient_key,
                inbox_message_id=None,
                case_identifier=f"Subscription/{subscription.id}",
                identifiers=(f"ClaimResponse|{review_id}|{number}",),
                bundle_sha256=hashlib.sha256(bundle).hexdigest(),
                bundle=bundle,
                endpoint=subscription.endpoint_name,
                operation=NOTIFY,
            )
        )
    enqueue(connection, entries, now)
    return len(entries)


def notify_review_change(
    connection: Connection,
    case: Case,
    review: UtilizationReview,
    canonical_base: str,
    spec: PayerExchange,
    now: datetime,
) -> int:
    """Notify each subscription that hears of ``review`` of its ClaimResponse as ``$inquire``
    answers it now (in the caller's transaction); how many notifications were enqueued."""
    response = claim_response(
        review, case.patient, spec, canonical_base, review.decided or review.requested
    )
    party = review.requester.identifier if review.requester is not None else None
    requester = f"{party.system}|{party.value}" if party is not None else None
    return enqueue_review_event(
        connection, review.id, requester, response, case.id, patient_key(case.patient), now
    )
