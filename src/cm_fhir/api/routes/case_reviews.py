"""Utilization reviews on the hospital side: ask, read, the PAS request, the payer's answer. I/O
(database, through the case repository).

``POST /api/cases/{id}/utilization-reviews`` records a pended review on the case (through the
cases API's change path: If-Match, 409/422 refusals, audit) and, where a payer endpoint serves the
review's payer, enqueues its Da Vinci PAS request for the payer's ``Claim/$submit`` in the same
transaction (the sync worker sends it, applies the answer and asks again with ``Claim/$inquire``
while it is pended; :mod:`cm_fhir.sync.payer`). Without a clinical summary in the request, and
with an EHR endpoint configured, the summary is read from the EHR's Conditions, Observations and
MedicationRequests of the encounter (:mod:`cm_fhir.sync.clinical`). ``GET .../{review_id}`` reads
the review (decision, authorization number, authorized days, next review) with the payer's last
ClaimResponse as received and where the exchange stands. ``GET .../{review_id}/pas-request`` is
the request Bundle, and ``POST .../{review_id}/claim-response`` takes an answer received another
way (a Bundle with the ClaimResponse first, or the ClaimResponse alone, any PAS version) as the
sync worker takes one it fetched: stored in the inbox (a ``CLAIMRESPONSE`` FHIR message,
deduplicated by the ClaimResponse's identifier and creation time, the client and the content) and
kept on the review, in one transaction, then answered 202 with the message to poll
(``Location``). The worker applies it to the review like any event (ADR 0018: traced; a
contradiction of the decision made is flagged ``needs_attention``, never applied).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from datetime import UTC, date, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection

from cm_fhir.api.deps import (
    AuditDep,
    EngineDep,
    ReadPrincipal,
    WritePrincipal,
    get_payer_exchange,
    get_registry,
    get_settings,
)
from cm_fhir.api.errors import FHIR_JSON, error_response
from cm_fhir.api.routes.cases import ChangeDep
from cm_fhir.domain import (
    Case,
    CriteriaSet,
    Identifier,
    LevelOfCare,
    PartyRef,
    ReviewDecision,
    ReviewType,
    ReviewUrgency,
    ServiceUnit,
    UtilizationReview,
)
from cm_fhir.errors import DomainError, MappingError
from cm_fhir.fhir import dumps
from cm_fhir.fhir.ids import local_value
from cm_fhir.fhir.pas_request import pas_request_bundle
from cm_fhir.fhir.pas_response import claim_response_of, parse_claim_response, review_decided
from cm_fhir.store.case_repo import StoredCase, file_in_state, read_case
from cm_fhir.store.fhir_inbox import CLAIM_RESPONSE, fhir_message, store_fhir_message
from cm_fhir.store.outbox import OutboxEntry, enqueue
from cm_fhir.store.payer_reviews import (
    PayerReview,
    keep_answer,
    read_payer_review,
    record_request,
)
from cm_fhir.store.tables import InboxState
from cm_fhir.sync.clinical import read_clinical_summary
from cm_fhir.sync.endpoints import RequestCount, open_client
from cm_fhir.sync.payer import SUBMIT
from cm_fhir.sync.routing import payer_routes
from cm_fhir.workflow.facts import patient_key

__all__ = ["router"]

router = APIRouter(prefix="/api/cases", tags=["utilization review"])
log = logging.getLogger(__name__)


class ReviewRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    review_type: ReviewType
    level_of_care: LevelOfCare
    requested_days: int = Field(ge=1, le=366, description="Days, or visits when unit is visit")
    unit: ServiceUnit = ServiceUnit.DAY
    urgency: ReviewUrgency = ReviewUrgency.STANDARD
    clinical_summary: str | None = Field(None, min_length=1, max_length=20_000)
    admitted: date | None = None
    criteria_set: CriteriaSet | None = None
    payer: PartyRef | None = Field(None, description="Default: the payer of the case's coverage")
    requester: PartyRef | None = Field(
        None,
        description="Default: the managing organisation, else the provider in payer-exchange.yaml",
    )
    encounter: Identifier | None = Field(None, description="Default: the case's latest visit")


def _next_id(case: Case) -> str:
    taken = {r.id for r in case.utilization_reviews}
    return next(f"ur{n}" for n in range(1, len(taken) + 2) if f"ur{n}" not in taken)


async def _summary_from_ehr(request: Request, case: Case, body: ReviewRequest) -> str | None:
    """The clinical summary read from the first EHR endpoint; None without one, without an
    encounter, or when the EHR cannot be read within the endpoint's ``timeout`` for the whole
    read, retries included (the review is asked for all the same, without waiting longer)."""
    settings = get_settings(request)
    encounter = body.encounter or (case.encounters[-1] if case.encounters else None)
    if not settings.endpoints or encounter is None:
        return None
    endpoint = settings.endpoints[0]
    try:
        async with (
            asyncio.timeout(endpoint.timeout),
            open_client(endpoint, RequestCount(), settings.ehr) as client,
        ):
            return await read_clinical_summary(client, encounter)
    except Exception as exc:  # the EHR is away or refuses: no summary, named by type only
        log.warning("clinical summary from %s not read (%s)", endpoint.name, type(exc).__name__)
        return None


def _send_request(request: Request, review_id: list[str]) -> Any:
    """Enqueue the new review's PAS request for the first payer endpoint serving its payer (with
    its ``payer_reviews`` row), in the transaction that records the review."""
    routes = payer_routes(get_settings(request))
    spec, base = get_payer_exchange(request), get_registry(request).canonical_base

    def then(connection: Connection, stored: StoredCase) -> None:
        if not review_id:
            return
        case_id = stored.case.id
        review = stored.case.utilization_review(review_id[0])
        payer = review.payer.identifier.value if review.payer.identifier else None
        route = next((r for r in routes if r.serves(payer)), None)
        if route is None:
            return
        bundle = pas_request_bundle(stored.case, review, spec, base)
        data = dumps(bundle)
        ident = bundle["identifier"]
        request_key = f"{ident['system']}|{ident['value']}"[:500]
        now = datetime.now(UTC)
        entry = OutboxEntry(
            case_id=case_id,
            patient_key=patient_key(stored.case.patient),
            inbox_message_id=None,
            case_identifier=request_key,
            identifiers=(f"UtilizationReview|{review.id}",),
            bundle_sha256=hashlib.sha256(data).hexdigest(),
            bundle=data,
            endpoint=route.name,
            operation=SUBMIT,
        )
        enqueue(connection, [entry], now)
        record_request(connection, case_id, review.id, route.name, request_key, now)

    return then


@router.post("/{case_id}/utilization-reviews", summary="Ask the payer for a utilization review")
async def post_review(
    request: Request, case_id: str, body: ReviewRequest, engine: EngineDep, write: ChangeDep
) -> Response:
    now = datetime.now(UTC)
    summary = body.clinical_summary
    if summary is None:
        async with engine.connect() as connection:
            stored = await connection.run_sync(read_case, case_id)
        if stored is not None:
            summary = await _summary_from_ehr(request, stored.case, body)
    asked: list[str] = []
    spec = get_payer_exchange(request)

    def change(case: Case) -> Case:
        payer = body.payer or (case.coverage[0].payer if case.coverage else None)
        if payer is None:
            raise DomainError(f"case '{case.id}' has no coverage: name the payer")
        review_id = _next_id(case)
        review = UtilizationReview(
            id=review_id,
            review_type=body.review_type,
            urgency=body.urgency,
            requested=now,
            payer=payer,
            requester=body.requester or case.managing_organization or spec.provider,
            request_identifier=Identifier(
                system=spec.pas.identifier_systems.claim, value=local_value(case.id, review_id)
            ),
            encounter=body.encounter or (case.encounters[-1] if case.encounters else None),
            admitted=body.admitted,
            requested_level_of_care=body.level_of_care,
            requested_quantity=body.requested_days,
            unit=body.unit,
            clinical_summary=summary,
            criteria_set=body.criteria_set,
        )
        asked[:] = [review.id]
        return case.add_utilization_review(review)

    then = _send_request(request, asked)
    return await write.apply(change, "utilization-review.request", then=then)


class PayerExchangeView(BaseModel):
    """Where the review's exchange with its payer stands."""

    endpoint: str = Field(description="The payer endpoint; empty: an answer posted to the API")
    state: str = Field(description="queued, pended, decided or failed")
    submitted: datetime | None
    next_inquiry: datetime | None
    inquiries: int = Field(description="Inquiries that failed in a row")
    received: datetime | None
    last_error: str | None


class ReviewView(UtilizationReview):
    """A review with the payer's last ClaimResponse, as received, and the exchange's state."""

    claim_response: dict[str, Any] | None = None
    payer_exchange: PayerExchangeView | None = None


def _view(review: UtilizationReview, sent: PayerReview | None) -> dict[str, Any]:
    out = review.model_dump(mode="json")
    out["claim_response"] = sent.claim_response if sent is not None else None
    out["payer_exchange"] = (
        PayerExchangeView(
            endpoint=sent.endpoint,
            state=sent.state.value,
            submitted=sent.submitted_at,
            next_inquiry=sent.next_inquiry_at,
            inquiries=sent.inquiries,
            received=sent.received_at,
            last_error=sent.last_error,
        ).model_dump(mode="json")
        if sent is not None
        else None
    )
    return out


async def _review(
    request: Request, engine: EngineDep, case_id: str, review_id: str
) -> tuple[Case, UtilizationReview] | Response:
    async with engine.connect() as connection:
        stored = await connection.run_sync(read_case, case_id)
    if stored is None:
        return error_response(request, 404, f"case '{case_id}' does not exist")
    try:
        return stored.case, stored.case.utilization_review(review_id)
    except DomainError as exc:
        return error_response(request, 404, str(exc))


@router.get(
    "/{case_id}/utilization-reviews/{review_id}",
    summary="A utilization review: decision, authorization number, authorized days, next review "
    "and the payer's ClaimResponse",
    response_model=ReviewView,
)
async def get_review(
    request: Request, case_id: str, review_id: str, engine: EngineDep, _: ReadPrincipal
) -> Any:
    found = await _review(request, engine, case_id, review_id)
    if isinstance(found, Response):
        return found
    async with engine.connect() as connection:
        sent = await connection.run_sync(read_payer_review, case_id, review_id)
    return _view(found[1], sent)


@router.get(
    "/{case_id}/utilization-reviews/{review_id}/pas-request",
    summary="The Da Vinci PAS request Bundle for the payer's Claim/$submit",
    response_class=Response,
)
async def get_pas_request(
    request: Request, case_id: str, review_id: str, engine: EngineDep, _: ReadPrincipal
) -> Response:
    found = await _review(request, engine, case_id, review_id)
    if isinstance(found, Response):
        return found
    case, review = found
    try:
        bundle = pas_request_bundle(
            case, review, get_payer_exchange(request), get_registry(request).canonical_base
        )
    except MappingError as exc:
        return error_response(request, 422, str(exc))
    return Response(json.dumps(bundle), 200, media_type=FHIR_JSON)


@router.post(
    "/{case_id}/utilization-reviews/{review_id}/claim-response",
    summary="Take the payer's answer (a PAS response Bundle or a ClaimResponse) for the worker "
    "to apply",
    status_code=202,
    response_class=Response,
)
async def post_claim_response(
    request: Request,
    case_id: str,
    review_id: str,
    engine: EngineDep,
    audit: AuditDep,
    principal: WritePrincipal,
) -> Response:
    """Store the answer in the inbox (a ClaimResponse message, as the sync worker stores one it
    fetched) and keep it on the review; the worker applies it as a ``ReviewDecided`` event."""
    spec = get_payer_exchange(request)
    now = datetime.now(UTC)
    try:
        answer = json.loads(await request.body())
    except ValueError:
        return error_response(request, 400, "the body is not JSON")
    try:
        response = claim_response_of(answer)
        decision = parse_claim_response(response, spec).decision
        event = review_decided(response, spec, now)
    except MappingError as exc:
        await audit.record("claim-response", "utilization-review", review_id, outcome="failure")
        where = exc.path or "ClaimResponse"
        return error_response(request, 422, str(exc), fields=[(where, str(exc))])
    found = await _review(request, engine, case_id, review_id)
    if isinstance(found, Response):
        return found
    case, review = found
    if event.request_identifier != review.request_identifier:
        await audit.record("claim-response", "utilization-review", review_id, outcome="failure")
        text = "the answer is for another request"
        return error_response(request, 422, text, fields=[("ClaimResponse.request", text)])
    raw = dumps(response)
    message = fhir_message(
        raw,
        response,
        message_id=event.message_id,
        source="api",
        client=principal.subject,
        message_type=CLAIM_RESPONSE,
        event=decision.value,
        state=InboxState.RECEIVED,
        answer=None,
        patient_key=patient_key(case.patient),
        received_at=now,
        peer=request.client.host if request.client else None,
    )
    decided = decision != ReviewDecision.PENDED
    async with engine.begin() as connection:
        stored = await connection.run_sync(store_fhir_message, message)
        await connection.run_sync(file_in_state, case_id, now)
        await connection.run_sync(keep_answer, case_id, review_id, raw, decided=decided, now=now)
        await audit.record("claim-response", "utilization-review", review_id, connection=connection)
    review_url = f"/api/cases/{case_id}/utilization-reviews/{review_id}"
    body = {"message_id": stored.id, "duplicate": stored.duplicate, "review": review_url}
    headers = {"Location": f"/api/messages/{stored.id}", "Content-Location": review_url}
    return Response(json.dumps(body), 202, headers=headers, media_type="application/json")
