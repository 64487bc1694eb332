"""The case-management domain model, in the words case managers use. Pure: no I/O.

A :class:`Case` (an episode of case management) holds its patient, programme and models, status
with history, screening, assessments, risk, SMART goals, the care plan, tasks, referrals, the
discharge plan and the outcome evaluation. Forbidden changes raise
:class:`cm_fhir.errors.DomainError`.
"""

from cm_fhir.domain.assessment import Assessment, OutcomeEvaluation, RiskEvaluation, Screening
from cm_fhir.domain.case import (
    CASE_TRANSITIONS,
    CareTeam,
    CareTeamMember,
    Case,
    Coverage,
    ReferralSource,
    StatusChange,
)
from cm_fhir.domain.codes import (
    ActivityKind,
    AssessmentKind,
    AssessmentStatus,
    CaseManagementModel,
    CaseStatus,
    ClosingReason,
    DischargeNeed,
    Disposition,
    GoalAchievement,
    GoalCategory,
    GoalLifecycle,
    GoalPriority,
    IdentifierKind,
    PartyKind,
    PlanStatus,
    Priority,
    Programme,
    ReferralType,
    RiskLevel,
    TaskIntent,
    TaskStatus,
)
from cm_fhir.domain.common import (
    Code,
    Identifier,
    PartyRef,
    PatientRef,
    Period,
    Quantity,
    Range,
)
from cm_fhir.domain.plan import CarePlan, Goal, GoalTarget
from cm_fhir.domain.referral import DischargeNeedItem, DischargePlan, Referral
from cm_fhir.domain.task import TASK_TRANSITIONS, Task

__all__ = [
    "CASE_TRANSITIONS",
    "TASK_TRANSITIONS",
    "ActivityKind",
    "Assessment",
    "AssessmentKind",
    "AssessmentStatus",
    "CarePlan",
    "CareTeam",
    "CareTeamMember",
    "Case",
    "CaseManagementModel",
    "CaseStatus",
    "ClosingReason",
    "Code",
    "Coverage",
    "DischargeNeed",
    "DischargeNeedItem",
    "DischargePlan",
    "Disposition",
    "Goal",
    "GoalAchievement",
    "GoalCategory",
    "GoalLifecycle",
    "GoalPriority",
    "GoalTarget",
    "Identifier",
    "IdentifierKind",
    "OutcomeEvaluation",
    "PartyKind",
    "PartyRef",
    "PatientRef",
    "Period",
    "PlanStatus",
    "Priority",
    "Programme",
    "Quantity",
    "Range",
    "Referral",
    "ReferralSource",
    "ReferralType",
    "RiskEvaluation",
    "RiskLevel",
    "Screening",
    "StatusChange",
    "Task",
    "TaskIntent",
    "TaskStatus",
]
