"""The vocabularies of case management: a typed core of closed codes, and open codes. Pure.

Two kinds of vocabulary:

- **Closed** (enums): the codes whose behaviour the code itself relies on, such as case status,
  task status, intent, priority and goal lifecycle. Enum values are the codes used on the wire
  (FHIR style, kebab-case), so a status in the domain is the same word a FHIR server sees.
- **Open** (:data:`VocabularyCode` strings): programmes, case-management models, task kinds,
  referral types, dispositions, discharge needs and goal categories. Their codes are data, listed in
  ``mappings/code-systems.yaml`` (bundled, and extended by a site's override), so a site adds a
  task kind without a code change. The domain only checks their shape; whether a code exists is
  checked against the mapping registry in use, at the edge (ADR 0015).

The few open codes with behaviour are named here as constants (:data:`DISPOSITION_EXPIRED`), and
the registry refuses a code-systems file that lacks them.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Final

from pydantic import StringConstraints

#: A code of an open vocabulary: a FHIR ``code`` without spaces, at most 64 characters.
VocabularyCode = Annotated[str, StringConstraints(pattern=r"^[^\s]+$", min_length=1, max_length=64)]

#: The programme or setting a case belongs to (code system ``programme``).
ProgrammeCode = VocabularyCode
#: How the case manager works with the client (code system ``case_management_model``).
ModelCode = VocabularyCode
#: An intervention or care-plan activity; the task code (code system ``task_code``).
TaskKind = VocabularyCode
#: The kind of service a referral asks for (code system ``referral_type``).
ReferralTypeCode = VocabularyCode
#: Where the patient goes at discharge (code system ``discharge_disposition``).
DispositionCode = VocabularyCode
#: A post-acute need a discharge plan arranges (code system ``discharge_need``).
NeedCode = VocabularyCode
#: What a goal is about (code system ``goal_category``).
GoalCategoryCode = VocabularyCode

#: The disposition that means the patient died: the lifecycle closes the case as deceased.
DISPOSITION_EXPIRED: Final = "expired"
#: The programme a discharge-rules file runs when it names none.
DEFAULT_PROGRAMME: Final = "hospital-discharge-planning"


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
