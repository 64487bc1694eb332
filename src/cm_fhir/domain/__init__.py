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
    DEFAULT_PROGRAMME,
    DISPOSITION_EXPIRED,
    AssessmentKind,
    AssessmentStatus,
    CaseStatus,
    ClosingReason,
    DispositionCode,
    GoalAchievement,
    GoalCategoryCode,
    GoalLifecycle,
    GoalPriority,
    IdentifierKind,
    ModelCode,
    NeedCode,
    PartyKind,
    PlanStatus,
    Priority,
    ProgrammeCode,
    ReferralTypeCode,
    RiskLevel,
    TaskIntent,
    TaskKind,
    TaskStatus,
    VocabularyCode,
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
    "DEFAULT_PROGRAMME",
    "DISPOSITION_EXPIRED",
    "TASK_TRANSITIONS",
    "Assessment",
    "AssessmentKind",
    "AssessmentStatus",
    "CarePlan",
    "CareTeam",
    "CareTeamMember",
    "Case",
    "CaseStatus",
    "ClosingReason",
    "Code",
    "Coverage",
    "DischargeNeedItem",
    "DischargePlan",
    "DispositionCode",
    "Goal",
    "GoalAchievement",
    "GoalCategoryCode",
    "GoalLifecycle",
    "GoalPriority",
    "GoalTarget",
    "Identifier",
    "IdentifierKind",
    "ModelCode",
    "NeedCode",
    "OutcomeEvaluation",
    "PartyKind",
    "PartyRef",
    "PatientRef",
    "Period",
    "PlanStatus",
    "Priority",
    "ProgrammeCode",
    "Quantity",
    "Range",
    "Referral",
    "ReferralSource",
    "ReferralTypeCode",
    "RiskEvaluation",
    "RiskLevel",
    "Screening",
    "StatusChange",
    "Task",
    "TaskIntent",
    "TaskKind",
    "TaskStatus",
    "VocabularyCode",
]
