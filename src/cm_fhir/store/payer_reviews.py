"""Utilization reviews sent to a payer, on the hospital side: where, state, next inquiry, the
payer's last answer. I/O.

One ``payer_reviews`` row per review sent (``case_id``, ``review_id``), written in the transaction
that records the review and enqueues its PAS request (``Claim/$submit``) in the outbox, so a
review is never asked for twice or forgotten. ``state`` is ``queued`` until the payer has taken
the request, then ``pended`` while it has not decided, ``decided`` once it has, or ``failed`` when
the payer refused the request for good. A pended review is asked about again
(``Claim/$inquire``) at ``next_inquiry_at``; ``inquiries`` counts the inquiries that failed in a
row (they back off). ``claim_response`` is the payer's last
ClaimResponse exactly as received (JSON text), kept for audit and for the review's readers.
Functions run in the caller's transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson
from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    select,
    update,
)

from cm_fhir.store.tables import metadata

__all__ = [
    "PayerReview",
    "PayerReviewState",
    "due_inquiries",
    "find_by_request",
    "inquire_now",
    "keep_answer",
    "payer_reviews",
    "read_payer_review",
    "record_answer",
    "record_refusal",
    "record_request",
    "record_submitted",
]


class PayerReviewState(StrEnum):
    QUEUED = "queued"
    PENDED = "pended"
    DECIDED = "decided"
    FAILED = "failed"


payer_reviews = Table(
    "payer_reviews",
    metadata,
    Column("case_id", String(64), nullable=False),
    Column("review_id", String(64), nullable=False),
    Column("endpoint", String(64), nullable=False),
    Column("request_key", String(500), nullable=False),
    Column("state", String(16), nullable=False),
    Column("submitted_at", DateTime(timezone=True), nullable=True),
    Column("next_inquiry_at", DateTime(timezone=True), nullable=True),
    Column("inquiries", Integer, nullable=False, server_default="0"),
    Column("claim_response", Text, nullable=True),
    Column("received_at", DateTime(timezone=True), nullable=True),
    Column("last_error", String(500), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("case_id", "review_id"),
)
Index(
    "ix_payer_reviews_endpoint_state_next_inquiry_at",
    payer_reviews.c.endpoint,
    payer_reviews.c.state,
    payer_reviews.c.next_inquiry_at,
)
_t = payer_reviews


@dataclass(frozen=True, slots=True)
class PayerReview:
    """One review as sent to its payer."""

    case_id: str
    review_id: str
    endpoint: str
    request_key: str  # the PAS Claim identifier, system|value
    state: PayerReviewState
    submitted_at: datetime | None
    next_inquiry_at: datetime | None
    inquiries: int
    claim_response: dict[str, Any] | None
    received_at: datetime | None
    last_error: str | None


def _aware(value: datetime | None) -> datetime | None:
    """SQLite gives back naive datetimes: they were written in UTC."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _review(row: Any) -> PayerReview:
    return PayerReview(
        case_id=row.case_id,
        review_id=row.review_id,
        endpoint=row.endpoint,
        request_key=row.request_key,
        state=PayerReviewState(row.state),
        submitted_at=_aware(row.submitted_at),
        next_inquiry_at=_aware(row.next_inquiry_at),
        inquiries=int(row.inquiries),
        claim_response=orjson.loads(row.claim_response) if row.claim_response else None,
        received_at=_aware(row.received_at),
        last_error=row.last_error,
    )


def record_request(
    connection: Connection,
    case_id: str,
    review_id: str,
    endpoint: str,
    request_key: str,
    now: datetime,
) -> None:
    """The review is queued for its payer (its ``Claim/$submit`` is in the outbox)."""
    connection.execute(
        _t.insert().values(
            case_id=case_id,
            review_id=review_id,
            endpoint=endpoint,
            request_key=request_key,
            state=PayerReviewState.QUEUED.value,
            inquiries=0,
            updated_at=now,
        )
    )


def read_payer_review(connection: Connection, case_id: str, review_id: str) -> PayerReview | None:
    row = connection.execute(
        select(_t).where(_t.c.case_id == case_id, _t.c.review_id == review_id)
    ).first()
    return _review(row) if row is not None else None


def _key(case_id: str, review_id: str) -> Any:
    return (_t.c.case_id == case_id) & (_t.c.review_id == review_id)


def record_submitted(connection: Connection, case_id: str, review_id: str, now: datetime) -> None:
    """The payer took the request (its answer is recorded with :func:`record_answer`)."""
    connection.execute(
        update(_t)
        .where(_key(case_id, review_id), _t.c.submitted_at.is_(None))
        .values(submitted_at=now, updated_at=now)
    )


def record_answer(
    connection: Connection,
    case_id: str,
    review_id: str,
    claim_response: bytes,
    *,
    decided: bool,
    now: datetime,
    next_inquiry: datetime | None,
    error: str | None = None,
) -> None:
    """The payer's ClaimResponse, as received; a pended one is asked about at ``next_inquiry``."""
    state = PayerReviewState.DECIDED if decided else PayerReviewState.PENDED
    connection.execute(
        update(_t)
        .where(_key(case_id, review_id))
        .values(
            state=state.value,
            claim_response=claim_response.decode(),
            received_at=now,
            next_inquiry_at=None if decided else next_inquiry,
            last_error=error,
            inquiries=0,
            updated_at=now,
        )
    )


def record_refusal(
    connection: Connection,
    case_id: str,
    review_id: str,
    error: str,
    now: datetime,
    *,
    next_inquiry: datetime | None = None,
) -> None:
    """The payer refused the request (``failed``), or an inquiry failed (``next_inquiry`` set:
    the review stays as it is and is asked about again then)."""
    values: dict[str, Any] = {"last_error": error[:500], "updated_at": now}
    if next_inquiry is None:
        values["state"] = PayerReviewState.FAILED.value
    else:
        values["next_inquiry_at"] = next_inquiry
        values["inquiries"] = _t.c.inquiries + 1
    connection.execute(update(_t).where(_key(case_id, review_id)).values(**values))


def due_inquiries(
    connection: Connection, endpoint: str, now: datetime, limit: int = 50
) -> list[PayerReview]:
    """Pended reviews at ``endpoint`` whose next inquiry is due, oldest due first."""
    query = (
        select(_t)
        .where(
            _t.c.endpoint == endpoint,
            _t.c.state == PayerReviewState.PENDED.value,
            _t.c.next_inquiry_at.is_not(None),
            _t.c.next_inquiry_at <= now,
        )
        .order_by(_t.c.next_inquiry_at)
        .limit(limit)
    )
    return [_review(row) for row in connection.execute(query)]


def find_by_request(connection: Connection, endpoint: str, request_key: str) -> PayerReview | None:
    """The review sent to ``endpoint`` whose PAS Claim identifier is ``request_key``."""
    row = connection.execute(
        select(_t).where(_t.c.endpoint == endpoint, _t.c.request_key == request_key).limit(1)
    ).first()
    return _review(row) if row is not None else None


def inquire_now(connection: Connection, endpoint: str, now: datetime) -> int:
    """Make every pended review at ``endpoint`` due for an inquiry now; how many."""
    result = connection.execute(
        update(_t)
        .where(_t.c.endpoint == endpoint, _t.c.state == PayerReviewState.PENDED.value)
        .values(next_inquiry_at=now, updated_at=now)
    )
    return int(result.rowcount)


def keep_answer(
    connection: Connection,
    case_id: str,
    review_id: str,
    claim_response: bytes,
    *,
    decided: bool,
    now: datetime,
) -> None:
    """Keep an answer received another way (posted to the API): on the review's row, or on a
    new one without an endpoint (nothing is sent or asked for it)."""
    sent = read_payer_review(connection, case_id, review_id)
    if sent is None:
        connection.execute(
            _t.insert().values(
                case_id=case_id,
                review_id=review_id,
                endpoint="",
                request_key="",
                state=PayerReviewState.QUEUED.value,
                inquiries=0,
                updated_at=now,
            )
        )
    keep = sent.next_inquiry_at if sent is not None and not decided else None
    record_answer(
        connection, case_id, review_id, claim_response, decided=decided, now=now, next_inquiry=keep
    )
