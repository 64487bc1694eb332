"""The mapping registry: every mapping file loaded, checked across files, with URLs resolved. Pure
apart from reading the files once.

The registry is what the FHIR mapper consults for identifier systems, profile and extension URLs,
codings and status maps. Build it once at start-up with :func:`load_registry`; it is immutable.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Any

from cm_fhir.domain.codes import (
    ActivityKind,
    AssessmentKind,
    AssessmentStatus,
    CaseManagementModel,
    CaseStatus,
    ClosingReason,
    DischargeNeed,
    Disposition,
    GoalCategory,
    Programme,
    ReferralType,
)
from cm_fhir.errors import MappingSpecError
from cm_fhir.mapping.loader import bundled_mappings_dir, load_with_overrides
from cm_fhir.mapping.spec import (
    CodeSystemSpec,
    CodeSystemsSpec,
    FhirIdentitySpec,
    StatusMapsSpec,
)

IDENTITY_FILE = "fhir-identity.yaml"
CODE_SYSTEMS_FILE = "code-systems.yaml"
STATUS_MAPS_FILE = "status-maps.yaml"

#: Which domain vocabulary each code system must cover completely.
_COVERAGE: dict[str, tuple[type[StrEnum], ...]] = {
    "programme": (Programme,),
    "case_management_model": (CaseManagementModel,),
    "case_status": (CaseStatus,),
    "closing_reason": (ClosingReason,),
    "task_code": (ActivityKind,),
    "goal_category": (GoalCategory,),
    "referral_type": (ReferralType,),
    "discharge_need": (DischargeNeed,),
    "discharge_disposition": (Disposition,),
}


def assessment_task_code(kind: AssessmentKind) -> str:
    """The task code an assessment of this kind is carried under."""
    return f"{kind.value}-assessment"


@dataclass(frozen=True, slots=True)
class CodeSystem:
    """A resolved code system: absolute URL and code -> display."""

    key: str
    url: str
    title: str
    concepts: dict[str, str]

    def coding(self, code: str) -> dict[str, Any]:
        return {"system": self.url, "code": code, "display": self.concepts[code]}


@dataclass(frozen=True, slots=True)
class MappingRegistry:
    """Everything the FHIR mapper needs from ``mappings/``."""

    canonical_base: str
    identifier_systems: dict[str, str]
    profiles: dict[str, str]
    extensions: dict[str, str]
    code_systems: dict[str, CodeSystem]
    case_status_to_fhir: dict[CaseStatus, str]
    assessment_status_to_task: dict[AssessmentStatus, str]

    def system(self, key: str) -> str:
        return self.identifier_systems[key]

    def profile(self, key: str) -> str:
        return self.profiles[key]

    def extension(self, key: str) -> str:
        return self.extensions[key]

    def coding(self, system_key: str, code: str) -> dict[str, Any]:
        return self.code_systems[system_key].coding(code)


def absolute_uri(base: str, value: str) -> str:
    """``value`` as an absolute URI: as it is when absolute, else relative to ``base``."""
    if "://" in value or value.startswith("urn:"):
        return value
    return f"{base}/{value.lstrip('/')}"


def build_registry(
    identity: FhirIdentitySpec,
    code_systems: CodeSystemsSpec,
    status_maps: StatusMapsSpec,
    sources: dict[str, str] | None = None,
) -> MappingRegistry:
    """Check the specs against each other and the domain, and resolve URLs."""
    src = sources or {}
    base = identity.canonical_base

    def resolve(section: Any) -> dict[str, str]:
        return {key: absolute_uri(base, value) for key, value in dict(section).items()}

    systems: dict[str, CodeSystem] = {}
    for key in CodeSystemsSpec.model_fields:
        spec: CodeSystemSpec = getattr(code_systems, key)
        systems[key] = CodeSystem(
            key, absolute_uri(base, spec.url), spec.title, dict(spec.concepts)
        )
    cs_file = src.get(CODE_SYSTEMS_FILE, CODE_SYSTEMS_FILE)
    for key, enums in _COVERAGE.items():
        needed = {member.value for enum in enums for member in enum}
        if key == "task_code":
            needed |= {assessment_task_code(kind) for kind in AssessmentKind}
        missing = needed - systems[key].concepts.keys()
        if missing:
            raise MappingSpecError(
                cs_file, f"{key}.concepts", f"missing codes the domain uses: {sorted(missing)}"
            )
    sm_file = src.get(STATUS_MAPS_FILE, STATUS_MAPS_FILE)
    for field, enum in (
        ("case_to_episode_of_care", CaseStatus),
        ("assessment_to_task", AssessmentStatus),
    ):
        missing = {m.value for m in enum} - {k.value for k in getattr(status_maps, field)}
        if missing:
            raise MappingSpecError(sm_file, field, f"no mapping for {sorted(missing)}")
    return MappingRegistry(
        canonical_base=base,
        identifier_systems=resolve(identity.identifier_systems),
        profiles=resolve(identity.profiles),
        extensions=resolve(identity.extensions),
        code_systems=systems,
        case_status_to_fhir=dict(status_maps.case_to_episode_of_care),
        assessment_status_to_task={k: v.value for k, v in status_maps.assessment_to_task.items()},
    )


def load_registry(override_dir: Path | None = None) -> MappingRegistry:
    """Load every mapping file (bundled, merged with ``override_dir``) and build the registry."""
    identity = load_with_overrides(IDENTITY_FILE, FhirIdentitySpec, override_dir)
    code_systems = load_with_overrides(CODE_SYSTEMS_FILE, CodeSystemsSpec, override_dir)
    status_maps = load_with_overrides(STATUS_MAPS_FILE, StatusMapsSpec, override_dir)
    base = override_dir if override_dir is not None else bundled_mappings_dir()
    sources = {name: str(base / name) for name in (CODE_SYSTEMS_FILE, STATUS_MAPS_FILE)}
    return build_registry(identity, code_systems, status_maps, sources)


@cache
def default_registry() -> MappingRegistry:
    """The registry from the bundled files plus ``CM_FHIR_MAPPINGS_DIR`` overrides, loaded once."""
    return load_registry()
