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
    DISPOSITION_EXPIRED,
    AssessmentKind,
    AssessmentStatus,
    CaseStatus,
    ClosingReason,
)
from cm_fhir.errors import MappingError, MappingSpecError
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


def assessment_task_code(kind: AssessmentKind) -> str:
    """The task code an assessment of this kind is carried under."""
    return f"{kind.value}-assessment"


def _values(*enums: type[StrEnum]) -> frozenset[str]:
    return frozenset(member.value for enum in enums for member in enum)


#: The codes each code system must hold because the code relies on them: the closed vocabularies
#: (enums) completely, and the few open codes with behaviour. Every other code is the site's data.
REQUIRED_CODES: dict[str, frozenset[str]] = {
    "case_status": _values(CaseStatus),
    "closing_reason": _values(ClosingReason),
    "task_code": frozenset(assessment_task_code(kind) for kind in AssessmentKind),
    "discharge_disposition": frozenset({DISPOSITION_EXPIRED}),
}


@dataclass(frozen=True, slots=True)
class CodeSystem:
    """A resolved code system: absolute URL and code -> display."""

    key: str
    url: str
    title: str
    concepts: dict[str, str]
    description: str

    def coding(self, code: str) -> dict[str, Any]:
        """The FHIR Coding of ``code``.

        Raises:
            MappingError: the code is not in this code system (the active ``code-systems.yaml``).
        """
        display = self.concepts.get(code)
        if display is None:
            raise MappingError(
                f"unknown code '{code}': not listed in code-systems.yaml ({self.key})"
            )
        return {"system": self.url, "code": code, "display": display}

    def knows(self, code: str) -> bool:
        """Whether ``code`` is listed in this code system."""
        return code in self.concepts


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
        """The FHIR Coding of ``code`` in code system ``system_key`` (MappingError if unknown)."""
        return self.code_systems[system_key].coding(code)

    def knows(self, system_key: str, code: str) -> bool:
        """Whether ``code`` is listed in code system ``system_key``."""
        return self.code_systems[system_key].knows(code)


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
        url = absolute_uri(base, spec.url)
        text = spec.description or spec.title
        systems[key] = CodeSystem(key, url, spec.title, dict(spec.concepts), text)
    cs_file = src.get(CODE_SYSTEMS_FILE, CODE_SYSTEMS_FILE)
    for key, needed in REQUIRED_CODES.items():
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
        unmapped = {m.value for m in enum} - {k.value for k in getattr(status_maps, field)}
        if unmapped:
            raise MappingSpecError(sm_file, field, f"no mapping for {sorted(unmapped)}")
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
