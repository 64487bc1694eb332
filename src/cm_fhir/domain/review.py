"""Utilization review: a request to a payer to authorize a level of care, and its decision. Pure.

A review is asked for (admission, concurrent or retrospective), starts ``pended`` and is decided
once: approved, partially approved or denied, with the authorized days or visits, an
authorization number and the next review date. The payer must decide by a deadline that follows
from the urgency (72 hours expedited, 7 days standard, as CMS-0057-F requires); a pended review
past its deadline is overdue.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Final, Self

from pydantic import Field, model_validator

from cm_fhir.domain.codes import (
    CriteriaSet,
    LevelOfCare,
    ReviewDecision,
    ReviewType,
    ReviewUrgency,
    ServiceUnit,
)
from cm_fhir.domain.common import DomainModel, Identifier, Instant, LocalId, PartyRef, Period
from cm_fhir.errors import DomainError

#: How long the payer has to decide, by urgency.
DECISION_WINDOWS: Final[dict[ReviewUrgency, timedelta]] = {
    ReviewUrgency.EXPEDITED: timedelta(hours=72),
    ReviewUrgency.STANDARD: timedelta(days=7),
}
_GRANTING = frozenset({ReviewDecision.APPROVED, ReviewDecision.PARTIALLY_APPROVED})


class UtilizationReview(DomainModel):
    """One utilization review of a stay: what was asked of the payer and what it decided."""

    id: LocalId
    """Case-local id of the review."""
    review_type: ReviewType
    """Admission (prospective), concurrent or retrospective."""
    urgency: ReviewUrgency = ReviewUrgency.STANDARD
    """Expedited (72 hours to decide) or standard (7 days)."""
    requested: Instant
    """When the review was asked for; the decision deadline counts from here."""
    payer: PartyRef
    """The payer (or its utilization-management organisation) that decides."""
    requester: PartyRef | None = None
    """The provider asking: the hospital, or the attending practitioner."""
    request_identifier: Identifier | None = None
    """The request's business identifier as the requester sent it (the PAS Claim identifier)."""
    encounter: Identifier | None = None
    """The visit the review is about (its visit number)."""
    admitted: date | None = None
    """The admission date of the stay under review."""
    requested_level_of_care: LevelOfCare | None
    """The level of care asked for (inpatient, observation, SNF, IRF, home health); None when a
    request from another system does not say it in codes cm-fhir knows (a reviewer reads it)."""
    requested_quantity: int | None = Field(default=None, ge=1, le=366)
    """How many days (or visits, see ``unit``) are asked for; None when the request does not say."""
    unit: ServiceUnit = ServiceUnit.DAY
    """What the requested and authorized quantities count: days, or visits for home health."""
    clinical_summary: str | None = Field(default=None, max_length=20_000)
    """The clinical information sent in support of the request (free text)."""
    criteria_set: CriteriaSet | None = None
    """The medical-necessity criteria set applied (InterQual, MCG, local), named only."""
    criteria_subset: str | None = Field(default=None, max_length=200)
    """The subset or guideline applied, as its publisher names it (no criteria content)."""
    decision: ReviewDecision = ReviewDecision.PENDED
    """Pended until the payer decides; then approved, partially approved or denied."""
    decided: Instant | None = None
    """When the payer decided; None while pended."""
    decision_reason: str | None = Field(default=None, max_length=2_000)
    """The payer's reason for the decision, as text (the disposition)."""
    authorized_level_of_care: LevelOfCare | None = None
    """The level of care the payer authorized, when it granted any."""
    authorized_quantity: int | None = Field(default=None, ge=0, le=366)
    """How many days (or visits) the payer authorized."""
    authorized_period: Period | None = None
    """The period the authorization covers."""
    authorization_number: str | None = Field(default=None, max_length=100)
    """The payer's authorization (pre-auth reference) number."""
    next_review: date | None = None
    """When the payer reviews the stay again (the next concurrent review)."""
    reviewer: PartyRef | None = None
    """Who decided at the payer (the reviewing nurse or physician)."""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        pended = self.decision == ReviewDecision.PENDED
        if pended != (self.decided is None):
            raise ValueError("'decided' is set exactly when the review is decided (not pended)")
        if self.decided is not None and self.decided < self.requested:
            raise ValueError("the review is decided before it was requested")
        granted = (self.authorized_quantity, self.authorized_level_of_care, self.authorized_period)
        if self.decision not in _GRANTING and any(v is not None for v in granted):
            raise ValueError(f"a {self.decision.value} review authorizes nothing")
        if self.decision == ReviewDecision.PARTIALLY_APPROVED and (
            self.authorized_quantity is not None
            and self.requested_quantity is not None
            and self.authorized_quantity >= self.requested_quantity
            and self.authorized_level_of_care in (None, self.requested_level_of_care)
        ):
            raise ValueError("a partial approval grants less, or another level, than requested")
        return self

    @property
    def deadline(self) -> datetime:
        """When the payer must have decided, from the urgency."""
        return self.requested + DECISION_WINDOWS[self.urgency]

    def is_overdue(self, now: datetime) -> bool:
        """True when the review is still pended after its decision deadline."""
        return self.decision == ReviewDecision.PENDED and now > self.deadline

    def decide(
        self,
        decision: ReviewDecision,
        at: datetime,
        *,
        authorized_quantity: int | None = None,
        authorized_level_of_care: LevelOfCare | None = None,
        authorized_period: Period | None = None,
        authorization_number: str | None = None,
        next_review: date | None = None,
        reason: str | None = None,
        reviewer: PartyRef | None = None,
    ) -> UtilizationReview:
        """The review with the payer's decision; DomainError when it is already decided otherwise.

        A grant without an explicit level of care authorizes the level requested; an approval
        without a quantity authorizes the quantity requested. Deciding again with the same
        decision is a no-op answer (a payer resending its ClaimResponse), not an error.
        """
        if decision == ReviewDecision.PENDED:
            if self.decision == ReviewDecision.PENDED:
                return self
            raise DomainError(f"review '{self.id}' is {self.decision.value}: it cannot be pended")
        if decision in _GRANTING:
            authorized_level_of_care = authorized_level_of_care or self.requested_level_of_care
            if authorized_quantity is None and decision == ReviewDecision.APPROVED:
                authorized_quantity = self.requested_quantity
        update = {
            "decision": decision,
            "decided": at,
            "authorized_quantity": authorized_quantity,
            "authorized_level_of_care": authorized_level_of_care,
            "authorized_period": authorized_period,
            "authorization_number": authorization_number,
            "next_review": next_review,
            "decision_reason": reason,
            "reviewer": reviewer,
        }
        if self.decision != ReviewDecision.PENDED:
            same = all(getattr(self, k) == v for k, v in update.items() if k != "decided")
            if same:
                return self
            raise DomainError(
                f"review '{self.id}' is already {self.decision.value}: a change is a new review"
            )
        try:
            return UtilizationReview.model_validate({**dict(self), **update})
        except ValueError as exc:
            raise DomainError(f"review '{self.id}': {exc}") from exc
