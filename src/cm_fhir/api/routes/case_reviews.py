"""Utilization reviews on the hospital side: ask, read, the PAS request, the payer's answer. I/O
(database, through the case repository).

``POST /api/cases/{id}/utilization-reviews`` records a pended review on the case (through the
cases API's change path: If-Match, 409/422 refusals, audit). ``GET .../{review_id}`` reads it
(decision, authorization number, authorized days, next review). ``GET .../{review_id}/pas-request``
is the Da Vinci PAS request Bundle for the payer's ``Claim/$submit``, and ``POST .../{review_id}/
claim-response`` applies the payer's answer (a Bundle with the ClaimResponse first, or the
ClaimResponse alone, any PAS version). Sending through the outbox is not done here yet: the
Bundle is for a caller to send.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from cm_fhir.api.deps import EngineDep, ReadPrincipal, get_payer_exchange, get_registry
from cm_fhir.api.errors import FHIR_JSON, error_response
from cm_fhir.api.routes.cases import ChangeDep
from cm_fhir.domain import (
    Case,
    CriteriaSet,
    Identifier,
    LevelOfCare,
    PartyRef,
    ReviewType,
    ReviewUrgency,
    ServiceUnit,
    UtilizationReview,
)
from cm_fhir.errors import DomainError, MappingError
from cm_fhir.fhir.pas_request import pas_request_bundle
from cm_fhir.fhir.pas_response import claim_response_of, parse_claim_response
from cm_fhir.store.case_repo import read_case

__all__ = ["router"]

router = APIRouter(prefix="/api/cases", tags=["utilization review"])


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
    requester: PartyRef | None = Field(None, description="Default: the managing organisation")
    encounter: Identifier | None = Field(None, description="Default: the case's latest visit")


def _next_id(case: Case) -> str:
    taken = {r.id for r in case.utilization_reviews}
    return next(f"ur{n}" for n in range(1, len(taken) + 2) if f"ur{n}" not in taken)


@router.post("/{case_id}/utilization-reviews", summary="Ask the payer for a utilization review")
async def post_review(body: ReviewRequest, write: ChangeDep) -> Response:
    now = datetime.now(UTC)

    def change(case: Case) -> Case:
        payer = body.payer or (case.coverage[0].payer if case.coverage else None)
        if payer is None:
            raise DomainError(f"case '{case.id}' has no coverage: name the payer")
        review = UtilizationReview(
            id=_next_id(case),
            review_type=body.review_type,
            urgency=body.urgency,
            requested=now,
            payer=payer,
            requester=body.requester or case.managing_organization,
            encounter=body.encounter or (case.encounters[-1] if case.encounters else None),
            admitted=body.admitted,
            requested_level_of_care=body.level_of_care,
            requested_quantity=body.requested_days,
            unit=body.unit,
            clinical_summary=body.clinical_summary,
            criteria_set=body.criteria_set,
        )
        return case.add_utilization_review(review)

    return await write.apply(change, "utilization-review.request")


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
    summary="A utilization review: decision, authorization number, authorized days, next review",
    response_model=UtilizationReview,
)
async def get_review(
    request: Request, case_id: str, review_id: str, engine: EngineDep, _: ReadPrincipal
) -> Any:
    found = await _review(request, engine, case_id, review_id)
    return found if isinstance(found, Response) else found[1]


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
    summary="Apply the payer's answer (a PAS response Bundle or a ClaimResponse)",
)
async def post_claim_response(request: Request, review_id: str, write: ChangeDep) -> Response:
    try:
        answer = json.loads(await request.body())
        outcome = parse_claim_response(claim_response_of(answer), get_payer_exchange(request))
    except ValueError:
        return error_response(request, 400, "the body is not JSON")
    except MappingError as exc:
        return error_response(request, 422, str(exc))
    now = datetime.now(UTC)

    def change(case: Case) -> Case:
        return case.with_utilization_review(outcome.apply(case.utilization_review(review_id), now))

    return await write.apply(change, "utilization-review.decision", review_id)
