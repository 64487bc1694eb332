"""Service referrals and the discharge plan. Pure.

A referral follows the Gravity SDOH closed-loop pattern: a request (what is asked, of whom) and a
fulfilment task the performer works on, whose status closes the loop. The discharge plan predicts
what the patient needs after the hospital and puts it in place.
"""

from __future__ import annotations

from datetime import date

from pydantic import Field

from cm_fhir.domain.codes import (
    DischargeNeed,
    Disposition,
    PlanStatus,
    Priority,
    ReferralType,
    TaskStatus,
)
from cm_fhir.domain.common import Code, DomainModel, Instant, LocalId, NonEmptyStr, PartyRef


class Referral(DomainModel):
    """A referral to a medical, social, community, legal/financial, home health or rehab service."""

    id: LocalId
    type: ReferralType
    service: Code | None = Field(default=None, description="The specific service asked for")
    status: PlanStatus = PlanStatus.ACTIVE
    priority: Priority = Priority.ROUTINE
    performer: PartyRef
    requester: PartyRef = Field(description="Who refers: the Gravity SDOH pattern requires it")
    authored_on: Instant
    due: Instant
    reasons: tuple[Code, ...] = ()
    note: str | None = None
    care_plan: LocalId | None = None
    fulfilment_status: TaskStatus = TaskStatus.REQUESTED
    fulfilment_business_status: str | None = None


class DischargeNeedItem(DomainModel):
    """One post-acute need and how it will be met."""

    need: DischargeNeed
    detail: str | None = None


class DischargePlan(DomainModel):
    """Expected date, disposition, post-acute provider, needs, barriers and follow-up."""

    id: LocalId
    status: PlanStatus = PlanStatus.DRAFT
    expected_discharge: date | None = None
    disposition: Disposition | None = None
    post_acute_provider: PartyRef | None = None
    needs: tuple[DischargeNeedItem, ...] = ()
    barriers: tuple[NonEmptyStr, ...] = ()
    follow_up: tuple[NonEmptyStr, ...] = ()
    created: Instant
    author: PartyRef | None = None
