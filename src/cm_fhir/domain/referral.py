"""Service referrals and the discharge plan. Pure.

A referral follows the Gravity SDOH closed-loop pattern: a request (what is asked, of whom) and a
fulfilment task the performer works on, whose status closes the loop. The discharge plan predicts
what the patient needs after the hospital and puts it in place.
"""

from __future__ import annotations

from datetime import date

from pydantic import Field

from cm_fhir.domain.codes import (
    DispositionCode,
    NeedCode,
    PlanStatus,
    Priority,
    ReferralTypeCode,
    TaskStatus,
)
from cm_fhir.domain.common import Code, DomainModel, Instant, LocalId, NonEmptyStr, PartyRef


class Referral(DomainModel):
    """A referral to a medical, social, community, legal/financial, home health or rehab service."""

    id: LocalId
    """Case-local id."""
    type: ReferralTypeCode
    """The kind of service referred to (home health, SNF, community services...)."""
    service: Code | None = Field(default=None, description="The specific service asked for")
    status: PlanStatus = PlanStatus.ACTIVE
    """The referral's status (draft, active, completed, revoked...)."""
    priority: Priority = Priority.ROUTINE
    """Routine, urgent, asap or stat."""
    performer: PartyRef
    """The provider asked to do it."""
    requester: PartyRef = Field(description="Who refers: the Gravity SDOH pattern requires it")
    authored_on: Instant
    """When the referral was made."""
    due: Instant
    """When the service is needed by."""
    reasons: tuple[Code, ...] = ()
    """Why (coded conditions or needs)."""
    note: str | None = None
    """Free-text detail for the receiving provider."""
    care_plan: LocalId | None = None
    """Id of the plan the referral carries out."""
    fulfilment_status: TaskStatus = TaskStatus.REQUESTED
    """Where the receiving provider stands (the fulfilment Task's status)."""
    fulfilment_business_status: str | None = None
    """The provider's own words for where it stands (e.g. ``bed offered``)."""


class DischargeNeedItem(DomainModel):
    """One post-acute need and how it will be met."""

    need: NeedCode
    """The kind of need (transport, equipment, medication, caregiver...)."""
    detail: str | None = None
    """Free-text detail of the need."""


class DischargePlan(DomainModel):
    """Expected date, disposition, post-acute provider, needs, barriers and follow-up."""

    id: LocalId
    """Case-local id."""
    status: PlanStatus = PlanStatus.DRAFT
    """The plan's status (draft, active, completed...)."""
    expected_discharge: date | None = None
    """The expected discharge date."""
    disposition: DispositionCode | None = None
    """Where the patient goes (home, home health, SNF, IRF, expired...)."""
    post_acute_provider: PartyRef | None = None
    """The post-acute provider chosen, if any."""
    needs: tuple[DischargeNeedItem, ...] = ()
    """What the patient needs to leave safely."""
    barriers: tuple[NonEmptyStr, ...] = ()
    """What stands in the way of discharge."""
    follow_up: tuple[NonEmptyStr, ...] = ()
    """Follow-up arrangements, one per entry."""
    created: Instant
    """When the plan was started."""
    author: PartyRef | None = None
    """Who wrote it."""
