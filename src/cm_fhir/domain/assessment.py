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
    eligible: bool
    criteria: tuple[Code, ...] = Field(default=(), description="Criteria that were met")
    note: str | None = None


class Assessment(DomainModel):
    """A medical, social, psychological, functional or financial assessment of needs."""

    id: LocalId
    kind: AssessmentKind
    status: AssessmentStatus = AssessmentStatus.REQUESTED
    requested: Instant
    due: Instant
    performer: PartyRef
    summary: str | None = None
    findings: tuple[NonEmptyStr, ...] = ()

    @model_validator(mode="after")
    def _completed_has_summary(self) -> Self:
        if self.status == AssessmentStatus.COMPLETED and not self.summary:
            raise ValueError("a completed assessment needs a summary")
        return self


class RiskEvaluation(DomainModel):
    """Level of risk and its drivers; drives priority and intensity."""

    id: LocalId
    evaluated: Instant
    level: RiskLevel
    score: Decimal | None = Field(default=None, ge=0, le=1, description="Probability 0..1")
    drivers: tuple[Code, ...] = ()
    performer: PartyRef | None = None
    note: str | None = None


class OutcomeEvaluation(DomainModel):
    """Were the goals met? Readmissions and ED visits since the case opened; why it ended."""

    evaluated_on: date
    goals_met: int = Field(ge=0)
    goals_total: int = Field(ge=0)
    readmissions: int = Field(default=0, ge=0)
    ed_visits: int = Field(default=0, ge=0)
    summary: str | None = None
    closing_reason: ClosingReason | None = Field(
        default=None, description="Why the case ended, when not by its plan (e.g. deceased)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.goals_met > self.goals_total:
            raise ValueError("goals_met cannot exceed goals_total")
        return self
