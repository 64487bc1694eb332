"""The payer side of utilization review. I/O (database, through the case repository).

``POST /fhir/Claim/$submit`` (Da Vinci PAS), the reviewer's queue ``GET /api/utilization-reviews``
(pended first, then soonest deadline; paged by ``cursor`` as every list) and
``POST /api/utilization-reviews/{id}/decision``.

``$submit`` reads a PAS request Bundle (:mod:`cm_fhir.fhir.pas_intake`), records the review on the
member's payer case (found by any of the member's ids; opening one if needed) through the one case
write path, decides it at once when a rule in ``mappings/payer-exchange.yaml`` matches, and answers
a Bundle whose first entry is the ClaimResponse. The same request sent again gets the same answer
and adds nothing. A Bundle without a usable Claim is answered 400 with an OperationOutcome naming
the element. Scopes: SMART
``system/Claim.c`` (or ``.write``/``.*``) for ``$submit``; ``read`` for the queue and ``write``
to decide. Every exchange is audited.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection

from cm_fhir.api.auth import AuthError, Principal, grants_fhir
from cm_fhir.api.deps import (
    AuditDep,
    EngineDep,
    PrincipalDep,
    ReadPrincipal,
    WritePrincipal,
    get_payer_exchange,
    get_registry,
    get_settings,
)
from cm_fhir.api.errors import FHIR_JSON, error_response, json_bundle
from cm_fhir.api.paging import CursorQuery, PageLinks, RetiredPaging, decode_cursor, links
from cm_fhir.domain import (
    Case,
    Identifier,
    LevelOfCare,
    Period,
    ReviewDecision,
    UtilizationReview,
)
from cm_fhir.errors import MappingError, RecordNotFound, ValidationError
from cm_fhir.fhir.pas_intake import PasRequest, claim_identifier, parse_pas_request
from cm_fhir.fhir.pas_response import claim_response, pas_response_bundle
from cm_fhir.mapping.payer_exchange import PayerExchange
from cm_fhir.mapping.registry import MappingRegistry
from cm_fhir.store.case_repo import TraceSource, change_case, create_case
from cm_fhir.store.case_writes import OutboxRoute
from cm_fhir.store.fhir_inbox import (
    fhir_message,
    record_answer,
    store_fhir_message,
    stored_message_key,
)
from cm_fhir.store.inbox import NewMessage
from cm_fhir.store.payer_cases import file_member, find_review, member_cases, payer_cases
from cm_fhir.store.tables import InboxState
from cm_fhir.sync.routing import outbox_routes
from cm_fhir.workflow.facts import member_keys, patient_key
from cm_fhir.workflow.utilization import auto_decide, open_payer_case, payer_case_id, review_id_for

__all__ = ["router"]

router = APIRouter(tags=["utilization review"])
_CURSOR = "utilization-reviews"


async def require_claim_create(principal: PrincipalDep) -> Principal:
    """403 unless the caller may create Claims (``system/Claim.c``, ``.write``, ``.*``)."""
    if not grants_fhir(principal.scopes, "Claim", "c"):
        raise AuthError(403, "this needs the 'system/Claim.c' scope", scope="system/Claim.c")
    return principal


def _record(
    connection: Connection,
    read: PasRequest,
    registry: MappingRegistry,
    spec: PayerExchange,
    now: datetime,
    routes: Sequence[OutboxRoute],
    message: NewMessage,
) -> tuple[Case, UtilizationReview, int]:
    """Store the request in the inbox and its review on the member's payer case; the case, the
    review as stored and the inbox row."""
    row = store_fhir_message(connection, message)
    source = TraceSource(
        rule="pas.submit",
        event="claim-submit",
        message_key=stored_message_key(message),
        inbox_message_id=row.id,
    )
    review = read.review
    # The member's state first, as the worker takes it: a notice being applied now cannot open
    # a second payer case beside the one this request finds or opens. Any of the member's ids
    # finds it; the ids it did not know yet are linked to it.
    filed = file_member(connection, member_keys(read.patient), now)
    cases = member_cases(connection, spec.payer_programme, [filed])
    for stored in cases:
        if any(r.id == review.id for r in stored.case.utilization_reviews):
            return stored.case, stored.case.utilization_review(review.id), row.id  # a resend
    decided = auto_decide(review, read.diagnoses, spec.auto_decisions, now)
    open_case = next((s.case for s in cases if not s.case.is_final), None)
    if open_case is None:
        assert review.request_identifier is not None
        case = open_payer_case(
            payer_case_id(review.request_identifier),
            spec.payer_programme,
            read.patient,
            review,
            read.member_id,
        )
        create_case(
            connection,
            case.add_utilization_review(decided),
            registry,
            now,
            routes=routes,
            in_state=True,
            source=source,
        )
        return case, decided, row.id

    def add(case: Case) -> Case:
        # Under the case lock: a resend that raced this one may have added the review already.
        if any(r.id == decided.id for r in case.utilization_reviews):
            return case
        return case.add_utilization_review(decided)

    stored = change_case(
        connection,
        open_case.id,
        add,
        registry,
        expected_version=None,
        now=now,
        action="utilization-review.submit",
        target=decided.id,
        routes=routes,
        source=source,
    )
    return stored.case, stored.case.utilization_review(decided.id), row.id


@router.post(
    "/fhir/Claim/$submit",
    summary="Submit a Da Vinci PAS prior-authorization request (payer side)",
    response_class=Response,
)
async def submit_claim(
    request: Request,
    engine: EngineDep,
    audit: AuditDep,
    principal: Annotated[Principal, Depends(require_claim_create)],
) -> Response:
    spec = get_payer_exchange(request)
    got = await json_bundle(request, audit, "submit", "Claim")
    if isinstance(got, Response):
        return got
    raw, body = got
    review_id = "pending"
    identifier = None
    try:
        identifier = claim_identifier(body)
        if identifier is not None:
            review_id = review_id_for(identifier)
        read = parse_pas_request(body, spec, review_id)
    except MappingError as exc:
        await audit.record("submit", "Claim", None, outcome="failure")
        where = exc.path or "Bundle"
        return error_response(request, 400, str(exc), fields=[(where, str(exc))])
    except ValidationError as exc:
        await audit.record("submit", "Claim", None, outcome="failure")
        return error_response(request, 400, str(exc), outcome=exc.outcome)
    now = datetime.now(UTC)
    message = fhir_message(
        raw,
        body,
        message_id=_request_id(body, identifier),
        source=_requester(read),
        client=principal.subject,
        message_type="Claim",
        event="submit",
        state=InboxState.PROCESSED,
        answer=None,
        patient_key=patient_key(read.patient),
        received_at=now,
        peer=request.client.host if request.client else None,
    )
    base = get_registry(request).canonical_base
    async with engine.begin() as connection:
        case, review, row_id = await connection.run_sync(
            _record,
            read,
            get_registry(request),
            spec,
            now,
            outbox_routes(get_settings(request)),
            message,
        )
        response = claim_response(review, case.patient, spec, base, now)
        answer = json.dumps(pas_response_bundle(response, spec, now))
        await connection.run_sync(record_answer, row_id, answer.encode())
        await audit.record("submit", "utilization-review", review.id, connection=connection)
    return Response(answer, 200, media_type=FHIR_JSON)


def _request_id(body: Any, claim: Identifier | None) -> str:
    """The request's identity: the Bundle identifier, else the Claim's business identifier."""
    ident = body.get("identifier") if isinstance(body, dict) else None
    value = ident.get("value") if isinstance(ident, dict) else None
    if isinstance(value, str) and value.strip():
        return value
    assert claim is not None  # parse_pas_request refused a Claim without one
    return f"{claim.system}|{claim.value}"


def _requester(read: PasRequest) -> str | None:
    """Who asked, for the inbox row: the requester's identifier (``system|value``) or name."""
    party = read.review.requester
    if party is None:
        return None
    if party.identifier is not None:
        return f"{party.identifier.system}|{party.identifier.value}"
    return party.display


class QueueItem(BaseModel):
    case_id: str
    deadline: datetime
    overdue: bool
    review: UtilizationReview


class Queue(PageLinks):
    """A page of the reviewer's queue (paged as every list: :mod:`cm_fhir.api.paging`)."""

    items: list[QueueItem]


def _queue_key(item: QueueItem) -> tuple[int, str, str, str]:
    """Pended reviews first, then by deadline (soonest first), case and review id."""
    pended = item.review.decision == ReviewDecision.PENDED
    return (0 if pended else 1, item.deadline.isoformat(), item.case_id, item.review.id)


@router.get(
    "/api/utilization-reviews",
    summary="Utilization reviews on payer cases (the reviewer's queue): pended first, "
    "then soonest deadline first",
    response_model=Queue,
    dependencies=[RetiredPaging],
)
async def get_reviews(
    request: Request,
    engine: EngineDep,
    audit: AuditDep,
    _: ReadPrincipal,
    status: Annotated[ReviewDecision | None, Query(description="pended, approved...")] = None,
    overdue: Annotated[
        bool | None, Query(description="true: only reviews past their decision deadline")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: CursorQuery = None,
) -> Queue:
    start = decode_cursor(_CURSOR, cursor, (int, str, str, str))
    now = datetime.now(UTC)
    async with engine.connect() as connection:
        cases = await connection.run_sync(payer_cases, get_payer_exchange(request).payer_programme)
    items = [
        QueueItem(case_id=s.case.id, deadline=r.deadline, overdue=r.is_overdue(now), review=r)
        for s in cases
        for r in s.case.utilization_reviews
        if (status is None or r.decision == status)
        and (overdue is None or r.is_overdue(now) == overdue)
    ]
    items.sort(key=_queue_key)
    if start is not None:
        items = [i for i in items if _queue_key(i) > start]
    page = items[:limit]
    await audit.record_many("search", "utilization-review", [i.review.id for i in page] or [None])
    paged = links(request, _CURSOR, _queue_key(page[-1]) if len(items) > limit else None)
    return Queue(items=page, next=paged.next, next_cursor=paged.next_cursor)


class DecisionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    decision: ReviewDecision
    authorized_quantity: int | None = Field(None, ge=0, le=366)
    authorized_level_of_care: LevelOfCare | None = None
    authorized_period: Period | None = None
    authorization_number: str | None = Field(None, min_length=1, max_length=100)
    next_review: date | None = None
    reason: str | None = Field(None, min_length=1, max_length=2000)


def _decide(
    connection: Connection,
    review_id: str,
    body: DecisionRequest,
    registry: MappingRegistry,
    programme: str,
    now: datetime,
    routes: Sequence[OutboxRoute],
) -> UtilizationReview:
    found = find_review(connection, programme, review_id)
    if found is None:
        raise RecordNotFound(f"no utilization review '{review_id}' on a payer case")
    holder = found[0]
    granting = body.decision in (ReviewDecision.APPROVED, ReviewDecision.PARTIALLY_APPROVED)
    number = body.authorization_number or (review_id if granting else None)

    def change(case: Case) -> Case:
        review = case.utilization_review(review_id).decide(
            body.decision,
            now,
            authorized_quantity=body.authorized_quantity,
            authorized_level_of_care=body.authorized_level_of_care,
            authorized_period=body.authorized_period,
            authorization_number=number,
            next_review=body.next_review,
            reason=body.reason,
        )
        return case.with_utilization_review(review)

    stored = change_case(
        connection,
        holder.id,
        change,
        registry,
        expected_version=None,
        now=now,
        action="utilization-review.decide",
        target=review_id,
        routes=routes,
    )
    return stored.case.utilization_review(review_id)


@router.post(
    "/api/utilization-reviews/{review_id}/decision",
    summary="Decide a pended utilization review (payer side)",
    response_model=UtilizationReview,
)
async def post_decision(
    request: Request,
    review_id: str,
    body: DecisionRequest,
    engine: EngineDep,
    audit: AuditDep,
    _: WritePrincipal,
) -> UtilizationReview:
    now = datetime.now(UTC)
    async with engine.begin() as connection:
        review = await connection.run_sync(
            _decide,
            review_id,
            body,
            get_registry(request),
            get_payer_exchange(request).payer_programme,
            now,
            outbox_routes(get_settings(request)),
        )
        await audit.record("decide", "utilization-review", review_id, connection=connection)
    return review
