"""The case: one episode of case management, and the rules its status follows. Pure.

A case is opened when a patient is identified and found eligible; it moves through
``referred -> screening -> active <-> on-hold -> transition -> closed`` (or ``cancelled``); a
case planned ahead of an admission starts ``planned``. Any open case may become
``entered-in-error`` (it should never have existed). Closed, cancelled and entered-in-error cases
are final: they take no new work. Every change returns a new :class:`Case`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from itertools import pairwise
from typing import Self, TypeVar

from pydantic import Field, model_validator

from cm_fhir.domain.assessment import (
    Assessment,
    OutcomeEvaluation,
    RiskEvaluation,
    Screening,
    Strength,
)
from cm_fhir.domain.codes import CaseStatus, ModelCode, ProgrammeCode, TaskStatus
from cm_fhir.domain.common import (
    Code,
    DomainModel,
    Identifier,
    Instant,
    LocalId,
    PartyRef,
    PatientRef,
)
from cm_fhir.domain.plan import CarePlan, Goal
from cm_fhir.domain.referral import DischargePlan, Referral
from cm_fhir.domain.review import UtilizationReview
from cm_fhir.domain.task import Task
from cm_fhir.errors import DomainError, TransitionError

C = CaseStatus
_VOID = C.ENTERED_IN_ERROR
CASE_TRANSITIONS: dict[CaseStatus, frozenset[CaseStatus]] = {
    C.PLANNED: frozenset({C.ACTIVE, C.TRANSITION, C.CLOSED, C.CANCELLED, _VOID}),
    C.REFERRED: frozenset({C.SCREENING, C.ACTIVE, C.CLOSED, C.CANCELLED, _VOID}),
    C.SCREENING: frozenset({C.ACTIVE, C.CLOSED, C.CANCELLED, _VOID}),
    C.ACTIVE: frozenset({C.ON_HOLD, C.TRANSITION, C.CLOSED, C.CANCELLED, _VOID}),
    C.ON_HOLD: frozenset({C.ACTIVE, C.TRANSITION, C.CLOSED, C.CANCELLED, _VOID}),
    C.TRANSITION: frozenset({C.ACTIVE, C.CLOSED, C.CANCELLED, _VOID}),
    C.CLOSED: frozenset(),
    C.CANCELLED: frozenset(),
    C.ENTERED_IN_ERROR: frozenset(),
}
FINAL_CASE_STATUSES = frozenset({C.CLOSED, C.CANCELLED, C.ENTERED_IN_ERROR})


class StatusChange(DomainModel):
    """One period the case spent in one status."""

    status: CaseStatus
    """The status the case was in."""
    start: Instant
    """When the case entered it."""
    end: Instant | None = None
    """When it left it; None for the current status."""

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.end is not None and self.end < self.start:
            raise ValueError("a status change ends before it starts")
        return self


class CareTeamMember(DomainModel):
    """One member of the case's care team: who (``party``) in which ``role``."""

    role: Code
    """The member's role on the team (a cm-fhir care-team role code)."""
    party: PartyRef
    """Who the member is."""


class CareTeam(DomainModel):
    """The coordinated group of providers around the patient."""

    id: LocalId
    """Case-local id of the team."""
    name: str | None = None
    """The team's name, e.g. ``4 West discharge planning``."""
    members: tuple[CareTeamMember, ...] = ()
    """The people and organisations on the team, with their roles."""


class Coverage(DomainModel):
    """The patient's insurance for this case."""

    payer: PartyRef
    """The insurer or programme that pays."""
    member_id: str = Field(min_length=1)
    """The patient's member id at the payer."""
    plan: str | None = None
    """The plan or product name, if known."""


class ReferralSource(DomainModel):
    """Who referred the patient to case management, when and why (the intake referral)."""

    party: PartyRef | None = Field(default=None, description="None when a data flag found them")
    received: Instant
    """When the referral to case management was received."""
    reasons: tuple[Code, ...] = ()
    """Why the patient was referred (coded)."""
    note: str | None = None
    """Free-text detail of the referral."""


_T = TypeVar("_T", Task, Goal, Referral, Assessment, Strength, UtilizationReview)


def _unique(items: Iterable[_T], what: str) -> None:
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise ValueError(f"{what} id '{item.id}' is used twice")
        seen.add(item.id)


class Case(DomainModel):
    """An episode of case management for one patient."""

    id: LocalId = Field(description="The case number")
    patient: PatientRef
    """The patient, by business identifiers."""
    programme: ProgrammeCode
    """The case-management programme (discharge planning, utilization review, HIV adherence...)."""
    models: tuple[ModelCode, ...] = ()
    """Case-management models in use: brokerage, clinical, strengths-based, intensive."""
    status: CaseStatus
    """Current status; always the last entry of ``status_history``."""
    status_history: tuple[StatusChange, ...] = Field(min_length=1)
    """Every status the case has been in, in order, the last one open."""
    closed: Instant | None = None
    """When the case reached a final status (closed, cancelled, entered-in-error)."""
    case_manager: PartyRef | None = None
    """The accountable case manager."""
    care_team: CareTeam | None = None
    """The coordinated group of providers around the patient."""
    managing_organization: PartyRef | None = None
    """The organisation responsible for the case."""
    referral_source: ReferralSource | None = None
    """Who referred the patient to case management, when and why."""
    reasons: tuple[Code, ...] = Field(default=(), description="Conditions, in rank order")
    encounters: tuple[Identifier, ...] = Field(default=(), description="Visit numbers")
    coverage: tuple[Coverage, ...] = ()
    """The patient's insurance coverage relevant to this case."""
    screening: Screening | None = None
    """The screening and eligibility decision that opened (or declined) the case."""
    assessments: tuple[Assessment, ...] = ()
    """Assessments requested or done (initial, psychosocial, functional...)."""
    risk: RiskEvaluation | None = None
    """The latest risk evaluation (e.g. readmission risk)."""
    goals: tuple[Goal, ...] = ()
    """The patient's SMART goals."""
    care_plan: CarePlan | None = None
    """The care plan that carries out the goals."""
    tasks: tuple[Task, ...] = ()
    """Work to be done by the team: assessments, calls, reconciliations, follow-ups."""
    referrals: tuple[Referral, ...] = ()
    """Referrals to services and providers (post-acute care, community services)."""
    discharge_plan: DischargePlan | None = None
    """The discharge plan: expected date, disposition, needs and barriers."""
    outcome: OutcomeEvaluation | None = None
    """The outcome evaluation, once made."""
    utilization_reviews: tuple[UtilizationReview, ...] = ()
    """Utilization reviews asked of the payer for this stay, with their decisions, oldest first."""
    next_review: date | None = None
    """Payer case management: when the stay is next reviewed (the concurrent-review schedule an
    admission starts and a discharge ends)."""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        history = self.status_history
        if history[-1].status != self.status or history[-1].end is not None:
            raise ValueError("the last status_history entry must be the current, open status")
        for before, after in pairwise(history):
            if before.end is None or before.end > after.start:
                raise ValueError("status_history periods must be closed and in order")
        if (self.closed is not None) != (self.status in FINAL_CASE_STATUSES):
            raise ValueError("'closed' is set exactly when the case is closed or cancelled")
        if self.closed is not None and self.closed < history[0].start:
            raise ValueError("the case is closed before it was opened")
        _unique(self.tasks, "task")
        _unique(self.goals, "goal")
        _unique(self.referrals, "referral")
        _unique(self.assessments, "assessment")
        _unique(self.utilization_reviews, "utilization review")
        if self.care_plan and self.discharge_plan and self.care_plan.id == self.discharge_plan.id:
            raise ValueError("the care plan and the discharge plan need different ids")
        plans = {p.id for p in (self.care_plan, self.discharge_plan) if p is not None}
        goal_ids = {g.id for g in self.goals}
        named = [(t.id, t.care_plan) for t in self.tasks] + [
            (r.id, r.care_plan) for r in self.referrals
        ]
        for item_id, plan_id in named:
            if plan_id is not None and plan_id not in plans:
                raise ValueError(f"'{item_id}' names care plan '{plan_id}', which is absent")
        for task in self.tasks:
            if task.focus_goal is not None and task.focus_goal not in goal_ids:
                raise ValueError(f"task '{task.id}' focuses on goal '{task.focus_goal}', absent")
        if self.care_plan is not None:
            missing = set(self.care_plan.goals) - goal_ids
            if missing:
                raise ValueError(f"the care plan names absent goals: {sorted(missing)}")
        strengths = [s for a in self.assessments for s in a.strengths]
        _unique(strengths, "strength")
        known = {s.id for s in strengths}
        for goal in self.goals:
            absent = sorted(set(goal.builds_on) - known)
            if absent:
                raise ValueError(f"goal '{goal.id}' builds on absent strengths: {absent}")
        return self

    def strength(self, strength_id: str) -> Strength:
        """The strength with this id, from whichever assessment found it."""
        for assessment in self.assessments:
            for found in assessment.strengths:
                if found.id == strength_id:
                    return found
        raise DomainError(f"case '{self.id}' has no strength '{strength_id}'")

    @property
    def opened(self) -> Instant:
        return self.status_history[0].start

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_CASE_STATUSES

    def transition(self, target: CaseStatus, at: Instant) -> Case:
        """Move the case to ``target`` at ``at``; TransitionError if the process forbids it."""
        if target == self.status:
            return self
        allowed = CASE_TRANSITIONS[self.status]
        if target not in allowed:
            raise TransitionError(
                f"case '{self.id}'", self.status, target, frozenset(a.value for a in allowed)
            )
        current = self.status_history[-1]
        if at < current.start:
            raise DomainError(f"case '{self.id}': a status change cannot predate the current one")
        history = (*self.status_history[:-1], current.model_copy(update={"end": at}))
        return self._changed(
            status=target,
            status_history=(*history, StatusChange(status=target, start=at)),
            closed=at if target in FINAL_CASE_STATUSES else None,
        )

    def _require_open(self, what: str) -> None:
        if self.is_final:
            raise DomainError(f"case '{self.id}' is {self.status.value}: it takes no new {what}")

    def add_task(self, task: Task) -> Case:
        """A copy with ``task`` added; raises DomainError when the case is closed."""
        self._require_open("tasks")
        return self._changed(tasks=(*self.tasks, task))

    def add_goal(self, goal: Goal) -> Case:
        """A copy with ``goal`` added; raises DomainError when the case is closed."""
        self._require_open("goals")
        return self._changed(goals=(*self.goals, goal))

    def add_referral(self, referral: Referral) -> Case:
        """A copy with ``referral`` added; raises DomainError when the case is closed."""
        self._require_open("referrals")
        return self._changed(referrals=(*self.referrals, referral))

    def add_assessment(self, assessment: Assessment) -> Case:
        """A copy with ``assessment`` added; raises DomainError when the case is closed."""
        self._require_open("assessments")
        return self._changed(assessments=(*self.assessments, assessment))

    def add_utilization_review(self, review: UtilizationReview) -> Case:
        """A copy with ``review`` added; raises DomainError when the case is closed."""
        self._require_open("utilization reviews")
        return self._changed(utilization_reviews=(*self.utilization_reviews, review))

    def utilization_review(self, review_id: str) -> UtilizationReview:
        """The utilization review with this id; raises DomainError when the case has none."""
        for review in self.utilization_reviews:
            if review.id == review_id:
                return review
        raise DomainError(f"case '{self.id}' has no utilization review '{review_id}'")

    def with_utilization_review(self, review: UtilizationReview) -> Case:
        """A copy with the review of the same id replaced by ``review`` (e.g. once decided).

        A decision may arrive after the case closed (retrospective review), so a final case
        still takes it; only a review the case does not have is refused."""
        self.utilization_review(review.id)
        reviews = tuple(review if r.id == review.id else r for r in self.utilization_reviews)
        return self._changed(utilization_reviews=reviews)

    def task(self, task_id: str) -> Task:
        """The task with this id; raises DomainError when the case has none."""
        for task in self.tasks:
            if task.id == task_id:
                return task
        raise DomainError(f"case '{self.id}' has no task '{task_id}'")

    def update_task_status(self, task_id: str, target: TaskStatus) -> Case:
        """Move one task through the Task state machine."""
        changed = self.task(task_id).transition(target)
        return self._changed(tasks=tuple(changed if t.id == task_id else t for t in self.tasks))

    def with_encounter(self, encounter: Identifier) -> Case:
        """A copy that names ``encounter`` among its visits (unchanged when it already does)."""
        if encounter in self.encounters:
            return self
        self._require_open("encounters")
        return self._changed(encounters=(*self.encounters, encounter))

    def with_next_review(self, day: date | None) -> Case:
        """A copy whose next review is ``day`` (None: no review scheduled)."""
        if day == self.next_review:
            return self
        if day is not None:
            self._require_open("review schedule")
        return self._changed(next_review=day)

    def _changed(self, **update: object) -> Case:
        # Re-validate the whole aggregate so no change can break an invariant.
        return Case.model_validate({**dict(self), **update})
