"""``POST /fhir/Claim/$inquire``: where a prior-authorization request stands (payer side). I/O.

The inquiry is a Da Vinci PAS inquiry Bundle whose Claim carries the identifier of the Claim
first submitted to ``Claim/$submit`` and names the patient
(:func:`~cm_fhir.fhir.pas_intake.parse_pas_inquiry`). The answer is a Bundle whose first entry is
the current ClaimResponse of that request (pended, or the decision with its authorization
number, period, quantity and next review), dated when the payer decided (when it asked, while
pended), so asking again gives the same answer until something changes. The member is found by
any of the patient's member ids (system and value). A request the payer does not hold for that
member is 404, the same answer as for another patient's request. A Bundle
without a usable Claim is 400 with an OperationOutcome naming the element. Scope: SMART
``system/ClaimResponse.r`` (``.read``, ``.*``). Every inquiry is audited.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy import Connection

from cm_fhir.api.auth import AuthError, Principal, grants_fhir
from cm_fhir.api.deps import AuditDep, EngineDep, PrincipalDep, get_payer_exchange, get_registry
from cm_fhir.api.errors import FHIR_JSON, error_response, json_bundle
from cm_fhir.domain import Case, UtilizationReview
from cm_fhir.errors import MappingError, ValidationError
from cm_fhir.fhir.pas_intake import PasInquiry, parse_pas_inquiry
from cm_fhir.fhir.pas_response import claim_response, pas_response_bundle
from cm_fhir.store.payer_cases import member_cases
from cm_fhir.workflow.facts import member_keys
from cm_fhir.workflow.utilization import review_id_for

__all__ = ["router"]

router = APIRouter(tags=["utilization review"])


async def require_claim_response_read(principal: PrincipalDep) -> Principal:
    """403 unless the caller may read ClaimResponses (``system/ClaimResponse.r``, ``.read``)."""
    if not grants_fhir(principal.scopes, "ClaimResponse", "r"):
        raise AuthError(
            403, "this needs the 'system/ClaimResponse.r' scope", scope="system/ClaimResponse.r"
        )
    return principal


def _held(
    connection: Connection, programme: str, inquiry: PasInquiry
) -> tuple[Case, UtilizationReview] | None:
    review_id = review_id_for(inquiry.request)
    for stored in member_cases(connection, programme, member_keys(inquiry.patient)):
        for review in stored.case.utilization_reviews:
            if review.id == review_id:
                return stored.case, review
    return None


@router.post(
    "/fhir/Claim/$inquire",
    summary="Inquire about a Da Vinci PAS prior-authorization request (payer side)",
    response_class=Response,
)
async def inquire_claim(
    request: Request,
    engine: EngineDep,
    audit: AuditDep,
    _: Annotated[Principal, Depends(require_claim_response_read)],
) -> Response:
    spec = get_payer_exchange(request)
    got = await json_bundle(request, audit, "inquire", "Claim")
    if isinstance(got, Response):
        return got
    body = got[1]
    try:
        inquiry = parse_pas_inquiry(body, spec)
    except MappingError as exc:
        await audit.record("inquire", "Claim", None, outcome="failure")
        where = exc.path or "Bundle"
        return error_response(request, 400, str(exc), fields=[(where, str(exc))])
    except ValidationError as exc:
        await audit.record("inquire", "Claim", None, outcome="failure")
        return error_response(request, 400, str(exc), outcome=exc.outcome)
    async with engine.connect() as connection:
        held = await connection.run_sync(_held, spec.payer_programme, inquiry)
    if held is None:
        await audit.record("inquire", "Claim", None, outcome="failure")
        text = "no prior-authorization request with this identifier for this patient"
        return error_response(request, 404, text, fields=[("Claim.identifier", text)])
    case, review = held
    base = get_registry(request).canonical_base
    created = review.decided or review.requested
    response = claim_response(review, case.patient, spec, base, created)
    answer = pas_response_bundle(response, spec, datetime.now(UTC))
    await audit.record("inquire", "utilization-review", review.id)
    return Response(json.dumps(answer), 200, media_type=FHIR_JSON)
