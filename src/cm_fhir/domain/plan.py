"""SMART goals and the care plan. Pure.

A SMART goal is specific (a description), measurable (a measure with a target value or range, or a
stated reason why it is qualitative), and time-bound (a due date). The care plan holds objectives
and the schedule; its activities are the case's tasks and referrals that name it
(``care_plan``), so an activity is never written twice.
"""

from __future__ import annotations

from datetime import date
from typing import Self

from pydantic import Field, model_validator

from cm_fhir.domain.codes import (
    GoalAchievement,
    GoalCategory,
    GoalLifecycle,
    GoalPriority,
    PlanStatus,
)
from cm_fhir.domain.common import (
    Code,
    DomainModel,
    LocalId,
    NonEmptyStr,
    PartyRef,
    Period,
    Quantity,
    Range,
)


class GoalTarget(DomainModel):
    """What "achieved" means: a measure and a value or range."""

    measure: Code
    value: Quantity | None = None
    range: Range | None = None
    text: str | None = Field(default=None, description="A coded or textual target, e.g. 'yes'")

    @model_validator(mode="after")
    def _one_detail(self) -> Self:
        given = [x for x in (self.value, self.range, self.text) if x is not None]
        if len(given) != 1:
            raise ValueError("a goal target needs exactly one of value, range or text")
        return self


class Goal(DomainModel):
    """A SMART goal set with the patient and family."""

    id: LocalId
    description: NonEmptyStr
    category: GoalCategory
    target: GoalTarget | None = None
    qualitative_reason: str | None = Field(
        default=None, description="Why the goal has no measurable target (SMART exception)"
    )
    start: date | None = None
    due: date
    lifecycle: GoalLifecycle = GoalLifecycle.ACTIVE
    achievement: GoalAchievement | None = None
    priority: GoalPriority = GoalPriority.MEDIUM
    expressed_by: PartyRef | None = None
    addresses: tuple[Code, ...] = ()

    @model_validator(mode="after")
    def _smart(self) -> Self:
        if self.target is None and not self.qualitative_reason:
            raise ValueError(
                "a SMART goal needs a measurable target, or a qualitative_reason saying why not"
            )
        if self.start is not None and self.due < self.start:
            raise ValueError("the goal is due before it starts")
        return self

    @property
    def achieved(self) -> bool:
        return self.achievement in (GoalAchievement.ACHIEVED, GoalAchievement.SUSTAINING)


class CarePlan(DomainModel):
    """Health objectives, services, schedule and resources for the case."""

    id: LocalId
    title: NonEmptyStr
    description: str | None = None
    status: PlanStatus = PlanStatus.DRAFT
    period: Period | None = None
    author: PartyRef | None = None
    goals: tuple[LocalId, ...] = Field(default=(), description="Ids of the goals this plan serves")
