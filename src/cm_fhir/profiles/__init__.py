"""Offline FHIR R4 profile validation and snapshot generation. Pure (reads profile files at load).

``ProfileValidator.load(folder).validate(resource)`` returns an OperationOutcome as a dict;
``default_validator()`` is a cached validator over the profiles bundled with cm-fhir.
``generate_snapshots`` rebuilds profile snapshots from their differentials.
"""

from __future__ import annotations

from cm_fhir.profiles.registry import ConformanceRegistry
from cm_fhir.profiles.snapshot import generate_snapshot, generate_snapshots
from cm_fhir.profiles.validator import (
    ProfileValidator,
    bundled_profiles_dir,
    default_validator,
    error_issues,
)

__all__ = [
    "ConformanceRegistry",
    "ProfileValidator",
    "bundled_profiles_dir",
    "default_validator",
    "error_issues",
    "generate_snapshot",
    "generate_snapshots",
]
