"""The payer side of utilization review: which case a PAS request lands on, the review's id, and
the simple rules (``auto_decisions`` in ``mappings/payer-exchange.yaml``) that decide at once. Pure.

A request is keyed by its Claim's business identifier, so the same request sent twice is the same
review (the answer repeats, nothing is added). A member's requests gather on one open payer case
management case (programme ``payer-case-management``); a member without one gets a new case.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from cm_fhir.domain import (
    Case,
    Code,
    Identifier,
    PatientRef,
    ReviewDecision,
    UtilizationReview,
)
from cm_fhir.mapping.payer_exchange import AutoDecision
from cm_fhir.workflow.payer_events import new_payer_case

__all__ = ["auto_decide", "open_payer_case", "payer_case_id", "review_id_for"]


def _digest(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def review_id_for(request: Identifier) -> str:
    """The review id a request with this Claim identifier always gets."""
    return f"ur-{_digest(request.system, request.value)}"


def payer_case_id(request: Identifier) -> str:
    """The id of the payer case a member's first request opens."""
    return f"PCM-{_digest('case', request.system, request.value)}"


def open_payer_case(
    case_id: str,
    programme: str,
    patient: PatientRef,
    review: UtilizationReview,
    member_id: str | None,
) -> Case:
    """A new, active case of the payer's ``programme`` for the member, opened when ``review``
    came."""
    return new_payer_case(case_id, programme, patient, review.requested, review.payer, member_id)


def _matches(rule: AutoDecision, review: UtilizationReview, diagnoses: tuple[Code, ...]) -> bool:
    if review.requested_level_of_care != rule.level_of_care:
        return False
    if not rule.diagnosis_prefixes:
        return True
    return any(d.code.startswith(p) for d in diagnoses for p in rule.diagnosis_prefixes)


def auto_decide(
    review: UtilizationReview,
    diagnoses: tuple[Code, ...],
    rules: tuple[AutoDecision, ...],
    at: datetime,
) -> UtilizationReview:
    """``review`` decided by the first rule it matches, or unchanged (pended) when none does.

    An approval above a rule's ``max_quantity`` becomes a partial approval of ``max_quantity``."""
    rule = next((r for r in rules if _matches(r, review, diagnoses)), None)
    if rule is None:
        return review
    decision, quantity = rule.decision, None
    if decision != ReviewDecision.DENIED:
        quantity = review.requested_quantity
        if rule.max_quantity is not None and (quantity is None or quantity > rule.max_quantity):
            quantity = rule.max_quantity
            decision = ReviewDecision.PARTIALLY_APPROVED
    return review.decide(
        decision,
        max(at, review.requested),
        authorized_quantity=quantity,
        authorization_number=review.id if decision != ReviewDecision.DENIED else None,
        reason=rule.reason,
    )
