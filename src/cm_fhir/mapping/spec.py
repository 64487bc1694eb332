"""Typed models of the mapping files (``fhir-identity.yaml``, ``code-systems.yaml``,
``status-maps.yaml``). Pure.

Each model forbids unknown keys, so a typo in a site's override fails at start-up instead of being
silently ignored. Cross-file rules (every domain code has a display) live in
:mod:`cm_fhir.mapping.registry`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from cm_fhir.domain.codes import AssessmentStatus, CaseStatus, TaskStatus, VocabularyCode

UriOrPath = Annotated[str, StringConstraints(min_length=1, pattern=r"^\S+$")]


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IdentifierSystems(Spec):
    case: UriOrPath
    care_plan: UriOrPath
    goal: UriOrPath
    task: UriOrPath
    assessment: UriOrPath
    care_team: UriOrPath
    referral: UriOrPath
    risk_assessment: UriOrPath


class Profiles(Spec):
    episode_of_care: UriOrPath
    care_plan: UriOrPath
    goal: UriOrPath
    task: UriOrPath
    care_team: UriOrPath
    referral_service_request: UriOrPath
    referral_task: UriOrPath
    risk_assessment: UriOrPath


class Extensions(Spec):
    case_status: UriOrPath
    screening: UriOrPath
    outcome_evaluation: UriOrPath
    coverage: UriOrPath
    patient_identifier: UriOrPath
    encounter: UriOrPath
    discharge_plan: UriOrPath
    goal_qualitative_reason: UriOrPath
    next_review: UriOrPath
    episode_of_care: UriOrPath


class FhirIdentitySpec(Spec):
    """``fhir-identity.yaml``."""

    canonical_base: Annotated[str, StringConstraints(pattern=r"^(https?|urn):\S+[^/]$")]
    identifier_systems: IdentifierSystems
    profiles: Profiles
    extensions: Extensions


#: A concept's display: required, and not blank.
Display = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class CodeSystemSpec(Spec):
    """One code system: its URL, title, and every code with its display."""

    url: UriOrPath
    title: Display
    description: Display | None = Field(
        default=None, description="For the CodeSystem resource; defaults to the title"
    )
    concepts: dict[VocabularyCode, Display] = Field(min_length=1)


class CodeSystemsSpec(Spec):
    """``code-systems.yaml``."""

    programme: CodeSystemSpec
    case_management_model: CodeSystemSpec
    case_status: CodeSystemSpec
    closing_reason: CodeSystemSpec
    task_code: CodeSystemSpec
    goal_category: CodeSystemSpec
    referral_type: CodeSystemSpec
    care_plan_category: CodeSystemSpec
    discharge_need: CodeSystemSpec
    discharge_disposition: CodeSystemSpec
    screening_criterion: CodeSystemSpec
    goal_measure: CodeSystemSpec
    care_team_role: CodeSystemSpec


EpisodeOfCareStatus = Literal[
    "planned", "waitlist", "active", "onhold", "finished", "cancelled", "entered-in-error"
]


class StatusMapsSpec(Spec):
    """``status-maps.yaml``."""

    case_to_episode_of_care: dict[CaseStatus, EpisodeOfCareStatus]
    assessment_to_task: dict[AssessmentStatus, TaskStatus]
