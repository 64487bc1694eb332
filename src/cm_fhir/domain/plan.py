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
    GoalCategoryCode,
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
    """What is measured (a LOINC or cm-fhir goal-measure code)."""
    value: Quantity | None = None
    """The target amount, when one number is the target."""
    range: Range | None = None
    """The target range, when the target is a band."""
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
    """Case-local id."""
    description: NonEmptyStr
    """The goal in words the patient and team use."""
    category: GoalCategoryCode
    """The kind of goal (clinical, functional, social, behavioural...)."""
    target: GoalTarget | None = None
    """The measurable target, when there is one."""
    qualitative_reason: str | None = Field(
        default=None, description="Why the goal has no measurable target (SMART exception)"
    )
    start: date | None = None
    """When work on the goal starts."""
    due: date
    """When the goal should be reached."""
    lifecycle: GoalLifecycle = GoalLifecycle.ACTIVE
    """Where the goal stands (proposed, active, completed, cancelled...)."""
    achievement: GoalAchievement | None = None
    """How far it is achieved (in progress, improving, achieved...)."""
    priority: GoalPriority = GoalPriority.MEDIUM
    """How much the goal matters relative to the others."""
    expressed_by: PartyRef | None = None
    """Who set the goal (the patient, a clinician)."""
    addresses: tuple[Code, ...] = ()
    """Conditions or needs the goal addresses (coded)."""
    builds_on: tuple[LocalId, ...] = ()
    """Strengths (ids of the case's assessments' strengths) the goal builds on."""

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
    """Case-local id."""
    title: NonEmptyStr
    """The plan's title."""
    description: str | None = None
    """What the plan does, in words."""
    status: PlanStatus = PlanStatus.DRAFT
    """The plan's status (draft, active, completed...)."""
    period: Period | None = None
    """The time the plan covers."""
    author: PartyRef | None = None
    """Who wrote the plan."""
    goals: tuple[LocalId, ...] = Field(default=(), description="Ids of the goals this plan serves")
