"""Screening and eligibility, assessments, risk evaluation and outcome evaluation. Pure.

These are the process steps around the plan: who is identified and eligible (screening), what they
need (assessment), how urgent it is (risk), and whether the plan worked (outcome evaluation).
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Self

from pydantic import Field, model_validator

from cm_fhir.domain.codes import AssessmentKind, AssessmentStatus, ClosingReason, RiskLevel
from cm_fhir.domain.common import Code, DomainModel, Instant, LocalId, NonEmptyStr, PartyRef


class Screening(DomainModel):
    """Patient identification and eligibility: which criteria matched, and the verdict."""

    performed: Instant
    """When the screening was done."""
    eligible: bool
    """Whether the patient qualifies for the programme."""
    criteria: tuple[Code, ...] = Field(default=(), description="Criteria that were met")
    note: str | None = None
    """Free-text detail of the decision."""


class Strength(DomainModel):
    """A strength of the patient an assessment found (strengths-based case management): a
    resource, skill or support that goals can build on."""

    id: LocalId
    """Case-local id, unique across the case's assessments; goals name it in ``builds_on``."""
    description: NonEmptyStr
    """The strength, in the patient's or assessor's words."""


class Assessment(DomainModel):
    """A medical, social, psychological, functional or financial assessment of needs."""

    id: LocalId
    """Case-local id."""
    kind: AssessmentKind
    """What is assessed (initial, psychosocial, functional, caregiver...)."""
    status: AssessmentStatus = AssessmentStatus.REQUESTED
    """Where the assessment stands (requested, in progress, completed...)."""
    requested: Instant
    """When it was asked for."""
    due: Instant
    """When it must be done."""
    performer: PartyRef
    """Who does it."""
    summary: str | None = None
    """The assessor's summary."""
    findings: tuple[NonEmptyStr, ...] = ()
    """Findings, one per entry (needs, risks)."""
    strengths: tuple[Strength, ...] = ()
    """The patient's strengths this assessment found; goals can build on them."""

    @model_validator(mode="after")
    def _completed_has_summary(self) -> Self:
        if self.status == AssessmentStatus.COMPLETED and not self.summary:
            raise ValueError("a completed assessment needs a summary")
        return self


class RiskEvaluation(DomainModel):
    """Level of risk and its drivers; drives priority and intensity."""

    id: LocalId
    """Case-local id."""
    evaluated: Instant
    """When the risk was evaluated."""
    level: RiskLevel
    """The risk level (low, moderate, high)."""
    score: Decimal | None = Field(default=None, ge=0, le=1, description="Probability 0..1")
    drivers: tuple[Code, ...] = ()
    """What drives the risk (coded conditions or factors)."""
    performer: PartyRef | None = None
    """Who evaluated it."""
    note: str | None = None
    """Free-text detail."""


class OutcomeEvaluation(DomainModel):
    """Were the goals met? Readmissions and ED visits since the case opened; why it ended."""

    evaluated_on: date
    """The day the outcome was evaluated."""
    goals_met: int = Field(ge=0)
    """How many goals were met."""
    goals_total: int = Field(ge=0)
    """How many goals there were."""
    readmissions: int = Field(default=0, ge=0)
    """Readmissions seen after discharge."""
    ed_visits: int = Field(default=0, ge=0)
    """Emergency department visits seen after discharge."""
    summary: str | None = None
    """Free-text summary of the outcome."""
    closing_reason: ClosingReason | None = Field(
        default=None, description="Why the case ended, when not by its plan (e.g. deceased)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.goals_met > self.goals_total:
            raise ValueError("goals_met cannot exceed goals_total")
        return self
