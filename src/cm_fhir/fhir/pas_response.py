"""A utilization review's decision <-> a Da Vinci PAS ClaimResponse, both ways. Pure.

:func:`pas_response_bundle` is what a payer answers to ``Claim/$submit``: a ``collection`` Bundle
whose first entry is the ClaimResponse. The decision goes out as ``outcome`` (``queued`` while
pended, else ``complete``), ``disposition`` (the reason), ``preAuthRef`` (authorization number),
``preAuthPeriod``, and the review-action code on ``item.adjudication`` (PAS STU2) with the
authorized days or visits as the adjudication ``value``. The next review date travels in a cm-fhir
extension, since PAS has no element for it.

:func:`parse_claim_response` reads ClaimResponses as payers send them: the review action on the
item adjudication (STU2, sub-extension or the 2.2 ``reviewActionCode`` directly), on the item or on
the ClaimResponse itself (earlier versions), or none. Codes go through the configurable map in
``mappings/payer-exchange.yaml``; an unknown code or none gives its neutral default (pended).
:func:`review_decided` turns a ClaimResponse into the workflow's
:class:`~cm_fhir.domain.events.ReviewDecided` event.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from cm_fhir.domain.codes import ReviewDecision
from cm_fhir.domain.common import PatientRef, Period
from cm_fhir.domain.events import ReviewDecided
from cm_fhir.domain.review import UtilizationReview
from cm_fhir.errors import MappingError
from cm_fhir.fhir.datatypes import (
    day,
    identifier,
    instant,
    parse_day,
    parse_identifier,
    parse_instant,
)
from cm_fhir.fhir.ids import resource_id
from cm_fhir.mapping.payer_exchange import PayerExchange

Json = dict[str, Any]
ADJUDICATION = "http://terminology.hl7.org/CodeSystem/adjudication"


@dataclass(frozen=True, slots=True)
class ReviewOutcome:
    """What a ClaimResponse says about a review."""

    decision: ReviewDecision
    review_action_code: str | None
    outcome: str | None
    disposition: str | None
    authorization_number: str | None
    authorized_period: Period | None
    authorized_quantity: int | None
    next_review: date | None
    created: datetime | None

    def apply(self, review: UtilizationReview, received: datetime) -> UtilizationReview:
        """``review`` with this outcome; DomainError when it contradicts an earlier decision."""
        # A payer's clock (or a date-only ``created``) may put its answer before our request.
        at = max(self.created or received, review.requested)
        return review.decide(
            self.decision,
            at,
            authorized_quantity=self.authorized_quantity,
            authorized_period=self.authorized_period,
            authorization_number=self.authorization_number,
            next_review=self.next_review,
            reason=self.disposition,
        )


def claim_response(
    review: UtilizationReview,
    patient: PatientRef,
    spec: PayerExchange,
    canonical_base: str,
    created: datetime,
) -> Json:
    """The ClaimResponse for ``review`` of ``patient``, answering the Claim it was asked by."""
    pas = spec.pas
    request = review.request_identifier
    if request is None:
        raise MappingError("the review has no request identifier to answer", path="request")
    response_value = f"{request.value}.response"
    response_system = pas.identifier_systems.claim_response
    adjudication: Json = {
        "category": {"coding": [{"system": ADJUDICATION, "code": "submitted"}]},
        "extension": [
            {
                "url": pas.extensions.review_action,
                "extension": [
                    {
                        "url": pas.extensions.review_action_code,
                        "valueCodeableConcept": {
                            "coding": [
                                {
                                    "system": pas.review_action_system,
                                    "code": spec.decision_codes[review.decision],
                                }
                            ]
                        },
                    }
                ],
            }
        ],
    }
    if review.authorized_quantity is not None:
        adjudication["value"] = review.authorized_quantity
    out: Json = {
        "resourceType": "ClaimResponse",
        "meta": {"profile": [pas.profiles.claim_response]},
        "id": resource_id(canonical_base, "ClaimResponse", response_system, response_value),
        "identifier": [{"system": response_system, "value": response_value}],
        "status": "active",
        "type": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/claim-type",
                    "code": "institutional",
                }
            ]
        },
        "use": "preauthorization",
        "patient": {"identifier": identifier(patient.primary)},
        "created": instant(created),
        "insurer": {},
        "request": {"type": "Claim", "identifier": identifier(request)},
        "outcome": "queued" if review.decision == ReviewDecision.PENDED else "complete",
        "item": [{"itemSequence": 1, "adjudication": [adjudication]}],
    }
    if review.payer.identifier is not None:
        out["insurer"]["identifier"] = identifier(review.payer.identifier)
    if review.payer.display is not None:
        out["insurer"]["display"] = review.payer.display
    if review.decision_reason is not None:
        out["disposition"] = review.decision_reason
    if review.authorization_number is not None:
        out["preAuthRef"] = review.authorization_number
    if review.authorized_period is not None:
        period: Json = {"start": instant(review.authorized_period.start)}
        if review.authorized_period.end is not None:
            period["end"] = instant(review.authorized_period.end)
        out["preAuthPeriod"] = period
    if review.next_review is not None:
        out["extension"] = [
            {"url": pas.extensions.next_review, "valueDate": day(review.next_review)}
        ]
    return out


def pas_response_bundle(response: Json, spec: PayerExchange, created: datetime) -> Json:
    """The ``$submit`` answer: a Bundle whose first (and only) entry is ``response``."""
    return {
        "resourceType": "Bundle",
        "meta": {"profile": [spec.pas.profiles.response_bundle]},
        "type": "collection",
        "timestamp": instant(created),
        "entry": [{"fullUrl": f"urn:uuid:{response['id']}", "resource": response}],
    }


def _review_action_codes(holder: Any, spec: PayerExchange) -> list[str]:
    """Review-action codes in ``holder.extension``, in any of the PAS shapes."""
    ext = spec.pas.extensions
    found: list[str] = []
    for e in (holder or {}).get("extension") or []:
        if not isinstance(e, dict):
            continue
        if e.get("url") == ext.review_action_code:
            found += _concept_codes(e.get("valueCodeableConcept"), spec)
        elif e.get("url") == ext.review_action:
            for sub in e.get("extension") or []:
                if isinstance(sub, dict) and sub.get("url") in ("code", ext.review_action_code):
                    found += _concept_codes(sub.get("valueCodeableConcept"), spec)
    return found


def _concept_codes(concept: Any, spec: PayerExchange) -> list[str]:
    codings = (concept or {}).get("coding") or [] if isinstance(concept, dict) else []
    ours = [
        c
        for c in codings
        if isinstance(c, dict) and c.get("system") == spec.pas.review_action_system
    ]
    return [str(c["code"]) for c in ours or codings if isinstance(c, dict) and c.get("code")]


def _quantity(adjudications: list[Json], path: str) -> int | None:
    for i, adj in enumerate(adjudications):
        value = adj.get("value")
        if value is None:
            continue
        try:
            number = Decimal(str(value))
        except InvalidOperation as exc:
            raise MappingError(
                "the adjudication value is not a number", path=f"{path}[{i}].value"
            ) from exc
        if number != number.to_integral_value() or number < 0:
            raise MappingError(
                "authorized days or visits must be a whole number", path=f"{path}[{i}].value"
            )
        return int(number)
    return None


def _period(data: Any, path: str) -> Period | None:
    if not isinstance(data, dict) or "start" not in data:
        return None
    start = _when(data["start"], f"{path}.start")
    end = _when(data["end"], f"{path}.end") if "end" in data else None
    try:
        return Period(start=start, end=end)
    except ValueError as exc:
        raise MappingError("the period ends before it starts", path=path) from exc


def _when(value: Any, path: str) -> datetime:
    text = str(value)
    if len(text) == 10:  # a FHIR date: the day's start, UTC
        return datetime.fromisoformat(parse_day(text, path).isoformat() + "T00:00:00+00:00")
    return parse_instant(text, path)


def parse_claim_response(resource: Any, spec: PayerExchange) -> ReviewOutcome:
    """What a ClaimResponse (any PAS version) decides; MappingError naming a malformed element."""
    if not isinstance(resource, dict) or resource.get("resourceType") != "ClaimResponse":
        raise MappingError("not a ClaimResponse", path="ClaimResponse")
    items = [i for i in resource.get("item") or [] if isinstance(i, dict)]
    adjudications = [a for i in items for a in i.get("adjudication") or [] if isinstance(a, dict)]
    codes = [c for a in adjudications for c in _review_action_codes(a, spec)]
    codes = codes or [c for i in items for c in _review_action_codes(i, spec)]
    codes = codes or _review_action_codes(resource, spec)
    code = codes[0] if codes else None
    decision = spec.review_actions.decision(code)
    period = _period(resource.get("preAuthPeriod"), "ClaimResponse.preAuthPeriod")
    granting = decision in (ReviewDecision.APPROVED, ReviewDecision.PARTIALLY_APPROVED)
    next_review = None
    for e in resource.get("extension") or []:
        if isinstance(e, dict) and e.get("url") == spec.pas.extensions.next_review:
            next_review = parse_day(e.get("valueDate"), "ClaimResponse.extension(next-review)")
    created = resource.get("created")
    disposition = resource.get("disposition")
    pre_auth = resource.get("preAuthRef")
    return ReviewOutcome(
        decision=decision,
        review_action_code=code,
        outcome=resource.get("outcome") if isinstance(resource.get("outcome"), str) else None,
        disposition=disposition.strip() or None if isinstance(disposition, str) else None,
        authorization_number=pre_auth.strip() or None if isinstance(pre_auth, str) else None,
        authorized_period=period if granting else None,
        authorized_quantity=_quantity(adjudications, "ClaimResponse.item.adjudication")
        if granting
        else None,
        next_review=next_review,
        created=_when(created, "ClaimResponse.created") if created is not None else None,
    )


def claim_response_of(bundle: Any) -> Json:
    """The ClaimResponse of a ``$submit``/``$inquire`` answer (its first entry, as PAS requires)."""
    if isinstance(bundle, dict) and bundle.get("resourceType") == "ClaimResponse":
        return bundle
    entries = (bundle or {}).get("entry") if isinstance(bundle, dict) else None
    first = (
        entries[0].get("resource")
        if isinstance(entries, list) and entries and isinstance(entries[0], dict)
        else None
    )
    if not isinstance(first, dict) or first.get("resourceType") != "ClaimResponse":
        raise MappingError(
            "the answer's first entry is not a ClaimResponse", path="Bundle.entry[0]"
        )
    return first


def review_decided(resource: Any, spec: PayerExchange, received: datetime) -> ReviewDecided:
    """The domain event a ClaimResponse carries: the decision on the request it answers.

    The request is ``ClaimResponse.request.identifier``, the patient ``patient.identifier``; the
    event is named by the ClaimResponse's identifier (else id) and its ``created`` time, so the
    same response read twice is the same event. MappingError names what is missing."""
    read = parse_claim_response(resource, spec)
    request = (resource.get("request") or {}).get("identifier")
    if not isinstance(request, dict):
        raise MappingError("the request it answers has no identifier", path="ClaimResponse.request")
    patient = (resource.get("patient") or {}).get("identifier")
    if not isinstance(patient, dict):
        raise MappingError("the patient has no identifier", path="ClaimResponse.patient")
    names = [i.get("value") for i in resource.get("identifier") or [] if isinstance(i, dict)]
    name = next((n for n in names if isinstance(n, str) and n), None) or resource.get("id") or "-"
    at = read.created or received
    return ReviewDecided(
        message_id=f"{name}|{instant(at)}"[:199],
        patient=PatientRef(identifiers=(parse_identifier(patient, "ClaimResponse.patient"),)),
        request_identifier=parse_identifier(request, "ClaimResponse.request.identifier"),
        decision=read.decision,
        at=at,
        authorized_quantity=read.authorized_quantity,
        authorized_period=read.authorized_period,
        authorization_number=read.authorization_number,
        next_review=read.next_review,
        reason=read.disposition,
    )
