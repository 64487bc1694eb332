"""The closed vocabularies of case management: statuses, programmes, models and kinds. Pure.

Enum values are the codes used on the wire (FHIR style, kebab-case), so a status in the domain is
the same word a FHIR server or a case manager sees. Coding systems for each vocabulary live in
``mappings/code-systems.yaml``, not here.
"""

from __future__ import annotations

from enum import StrEnum


class Programme(StrEnum):
    """The programme or setting a case belongs to."""

    HOSPITAL_DISCHARGE_PLANNING = "hospital-discharge-planning"
    HOSPITAL_UTILIZATION_REVIEW = "hospital-utilization-review"
    PAYER_CASE_MANAGEMENT = "payer-case-management"
    HOME_HEALTH = "home-health"
    WORKERS_COMPENSATION = "workers-compensation"
    TARGETED_PROGRAMME = "targeted-programme"


class CaseManagementModel(StrEnum):
    """How the case manager works with the client; several can be combined."""

    BROKERAGE = "brokerage"
    CLINICAL = "clinical"
    STRENGTHS_BASED = "strengths-based"
    INTENSIVE = "intensive"


class CaseStatus(StrEnum):
    """Where a case is in the case-management process."""

    PLANNED = "planned"
    REFERRED = "referred"
    SCREENING = "screening"
    ACTIVE = "active"
    ON_HOLD = "on-hold"
    TRANSITION = "transition"
    CLOSED = "closed"
    CANCELLED = "cancelled"
    ENTERED_IN_ERROR = "entered-in-error"


class ClosingReason(StrEnum):
    """Why a case ended."""

    DECEASED = "deceased"
    NOT_ELIGIBLE = "not-eligible"


class AssessmentKind(StrEnum):
    """The needs an assessment looks at."""

    MEDICAL = "medical"
    SOCIAL = "social"
    PSYCHOLOGICAL = "psychological"
    FUNCTIONAL = "functional"
    FINANCIAL = "financial"


class AssessmentStatus(StrEnum):
    """Assessment progress, in Task terms."""

    REQUESTED = "requested"
    IN_PROGRESS = "in-progress"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class RiskLevel(StrEnum):
    """Qualitative risk (FHIR risk-probability)."""

    NEGLIGIBLE = "negligible"
    LOW = "low"
    MODERATE = "moderate"
    HIGH = "high"
    CERTAIN = "certain"


class GoalCategory(StrEnum):
    """What a goal is about."""

    CLINICAL = "clinical"
    SELF_CARE = "self-care"
    FUNCTIONAL = "functional"
    SOCIAL = "social"
    FINANCIAL = "financial"
    ADHERENCE = "adherence"
    RETURN_TO_WORK = "return-to-work"
    BEHAVIORAL = "behavioral"


class GoalLifecycle(StrEnum):
    """FHIR goal-status."""

    PROPOSED = "proposed"
    PLANNED = "planned"
    ACCEPTED = "accepted"
    ACTIVE = "active"
    ON_HOLD = "on-hold"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    ENTERED_IN_ERROR = "entered-in-error"
    REJECTED = "rejected"


class GoalAchievement(StrEnum):
    """FHIR goal-achievement."""

    IN_PROGRESS = "in-progress"
    IMPROVING = "improving"
    WORSENING = "worsening"
    NO_CHANGE = "no-change"
    ACHIEVED = "achieved"
    SUSTAINING = "sustaining"
    NOT_ACHIEVED = "not-achieved"
    NO_PROGRESS = "no-progress"
    NOT_ATTAINABLE = "not-attainable"


class GoalPriority(StrEnum):
    """FHIR goal-priority."""

    HIGH = "high-priority"
    MEDIUM = "medium-priority"
    LOW = "low-priority"


class PlanStatus(StrEnum):
    """FHIR request-status, used for care plans and referrals."""

    DRAFT = "draft"
    ACTIVE = "active"
    ON_HOLD = "on-hold"
    REVOKED = "revoked"
    COMPLETED = "completed"
    ENTERED_IN_ERROR = "entered-in-error"


class TaskStatus(StrEnum):
    """FHIR task-status; transitions are in :mod:`cm_fhir.domain.task`."""

    DRAFT = "draft"
    REQUESTED = "requested"
    RECEIVED = "received"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    READY = "ready"
    CANCELLED = "cancelled"
    IN_PROGRESS = "in-progress"
    ON_HOLD = "on-hold"
    FAILED = "failed"
    COMPLETED = "completed"
    ENTERED_IN_ERROR = "entered-in-error"


class TaskIntent(StrEnum):
    """FHIR task-intent (the subset case management uses)."""

    PROPOSAL = "proposal"
    PLAN = "plan"
    ORDER = "order"


class Priority(StrEnum):
    """FHIR request-priority."""

    ROUTINE = "routine"
    URGENT = "urgent"
    ASAP = "asap"
    STAT = "stat"


class ActivityKind(StrEnum):
    """Interventions and care-plan activities; the task code."""

    INITIAL_ASSESSMENT = "initial-assessment"
    APPOINTMENT = "appointment"
    FOLLOW_UP_APPOINTMENT = "follow-up-appointment"
    REFERRAL_FOLLOW_UP = "referral-follow-up"
    EDUCATION = "education"
    MEDICATION_ADHERENCE = "medication-adherence"
    MEDICATION_RECONCILIATION = "medication-reconciliation"
    FOLLOW_UP_CALL = "follow-up-call"
    HOME_VISIT = "home-visit"
    TRANSPORT = "transport"
    DISCHARGE_PLANNING = "discharge-planning"
    DME_ORDER = "dme-order"
    PAYER_NOTIFICATION = "payer-notification"
    UTILIZATION_REVIEW = "utilization-review"
    CARE_CONFERENCE = "care-conference"
    FINANCIAL_COUNSELLING = "financial-counselling"
    RETURN_TO_WORK_REVIEW = "return-to-work-review"


class ReferralType(StrEnum):
    """The kind of service a referral asks for."""

    MEDICAL = "medical"
    SOCIAL = "social"
    COMMUNITY = "community"
    LEGAL_FINANCIAL = "legal-financial"
    HOME_HEALTH = "home-health"
    REHABILITATION = "rehabilitation"
    SKILLED_NURSING = "skilled-nursing"
    HOSPICE = "hospice"
    BEHAVIORAL_HEALTH = "behavioral-health"
    CASE_MANAGEMENT = "case-management"


class Disposition(StrEnum):
    """Where the patient goes at discharge."""

    HOME = "home"
    HOME_HEALTH = "home-health"
    SKILLED_NURSING = "skilled-nursing"
    INPATIENT_REHAB = "inpatient-rehab"
    LONG_TERM_CARE = "long-term-care"
    HOSPICE = "hospice"
    AGAINST_MEDICAL_ADVICE = "against-medical-advice"
    EXPIRED = "expired"
    OTHER = "other"


class DischargeNeed(StrEnum):
    """Post-acute needs a discharge plan arranges."""

    DME = "dme"
    HOME_IV = "home-iv"
    OXYGEN = "oxygen"
    HOME_HEALTH_VISITS = "home-health-visits"
    WOUND_CARE = "wound-care"
    TRANSPORT = "transport"
    MEDICATION_ACCESS = "medication-access"
    CAREGIVER_TRAINING = "caregiver-training"
    PHYSICAL_THERAPY = "physical-therapy"
    OCCUPATIONAL_THERAPY = "occupational-therapy"


class IdentifierKind(StrEnum):
    """What a business identifier is (HL7 table 0203 codes)."""

    MRN = "MR"
    MEMBER_ID = "MB"
    NPI = "NPI"
    EMPLOYEE = "EN"
    VISIT = "VN"
    OTHER = "U"


class PartyKind(StrEnum):
    """The FHIR resource type a party reference points at."""

    PATIENT = "Patient"
    PRACTITIONER = "Practitioner"
    RELATED_PERSON = "RelatedPerson"
    ORGANIZATION = "Organization"
    CARE_TEAM = "CareTeam"
    PRACTITIONER_ROLE = "PractitionerRole"


class ReviewType(StrEnum):
    """When a utilization review looks at the stay."""

    ADMISSION = "admission"
    """Admission (prospective) review: before or at admission, is this level of care justified?"""
    CONCURRENT = "concurrent"
    """Concurrent review: during the stay, are more days at this level justified?"""
    RETROSPECTIVE = "retrospective"
    """Retrospective review: after discharge, was the stay justified?"""


class ReviewUrgency(StrEnum):
    """How fast the payer must decide (CMS-0057-F: 72 hours expedited, 7 days standard)."""

    EXPEDITED = "expedited"
    STANDARD = "standard"


class LevelOfCare(StrEnum):
    """The level of care requested or authorized."""

    INPATIENT = "inpatient"
    OBSERVATION = "observation"
    SKILLED_NURSING = "snf"
    INPATIENT_REHABILITATION = "irf"
    HOME_HEALTH = "home-health"


class ServiceUnit(StrEnum):
    """What a requested or authorized quantity counts."""

    DAY = "day"
    VISIT = "visit"


class CriteriaSet(StrEnum):
    """A medical-necessity criteria set, by name only (its content is licensed)."""

    INTERQUAL = "interqual"
    MCG = "mcg"
    LOCAL = "local"


class ReviewDecision(StrEnum):
    """The payer's decision on a utilization review."""

    PENDED = "pended"
    APPROVED = "approved"
    PARTIALLY_APPROVED = "partially-approved"
    DENIED = "denied"
