"""The offline profile validator: resources and Bundles in, an OperationOutcome (dict) out.

Pure apart from reading the profile files once, at load. A :class:`ProfileValidator` compiles the
StructureDefinitions it is given (cm-fhir's own eagerly, so a broken profile fails at start-up;
base definitions lazily) and keeps them, so repeated validation is fast. A resource is checked
against each profile in its ``meta.profile`` (or one named by the caller); a resource with no
known profile is checked against the R4 base definition of its type. For a Bundle every entry's
resource is checked too, with ``urn:uuid:`` references resolved between entries.

:func:`default_validator` returns a cached validator over the bundled profiles, found in a source
checkout (``profiles/`` at the repository root) or in an installed wheel (``cm_fhir/_profiles``).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from cm_fhir.errors import ProfileError, ValidationError
from cm_fhir.profiles.checker import InstanceChecker
from cm_fhir.profiles.constraints import SKIPPED, ConstraintEngine
from cm_fhir.profiles.model import CompiledProfile, compile_profile
from cm_fhir.profiles.registry import ConformanceRegistry, canonical
from cm_fhir.profiles.rules import Run
from cm_fhir.profiles.terminology import Terminology

_RESOURCE_TYPES_CS = "http://hl7.org/fhir/resource-types"


class ProfileValidator:
    """Checks resources against StructureDefinitions; see the module docstring."""

    def __init__(self, registry: ConformanceRegistry, *, native_invariants: bool = True) -> None:
        """``native_invariants=False`` evaluates every invariant with fhirpathpy (the reference
        path the native versions are tested against; slower)."""
        self.registry = registry
        self.terminology = Terminology(registry)
        self._compiled: dict[str, CompiledProfile | None] = {}
        self._engine = ConstraintEngine(native=native_invariants)
        self._checker = InstanceChecker(self, self._engine)
        types = self.terminology.system_codes(_RESOURCE_TYPES_CS) or frozenset()
        self._resource_types = types | {
            str(sd["type"])
            for sd in registry.structure_definitions.values()
            if sd.get("kind") == "resource"
        }
        for sd in registry.own_profiles():
            self.profile(str(sd["url"]))

    @classmethod
    def load(cls, profiles_dir: Path, *, native_invariants: bool = True) -> ProfileValidator:
        """Read every JSON resource below ``profiles_dir`` (raises ProfileError)."""
        registry = ConformanceRegistry.from_directory(profiles_dir)
        return cls(registry, native_invariants=native_invariants)

    # -- Catalog protocol -------------------------------------------------------------------
    def profile(self, url: str) -> CompiledProfile | None:
        """The compiled StructureDefinition with this canonical URL, or None if not loaded."""
        key = canonical(url)
        if key not in self._compiled:
            sd = self.registry.structure_definition(key)
            self._compiled[key] = None if sd is None else compile_profile(sd, self.registry)
        return self._compiled[key]

    def is_resource_type(self, name: str) -> bool:
        """Whether ``name`` is an R4 resource type (or a resource a loaded profile defines)."""
        return name in self._resource_types

    # -- public API -------------------------------------------------------------------------
    @property
    def skipped_constraints(self) -> dict[str, str]:
        """Invariants that are not evaluated, with the reason (fixed list plus any that failed)."""
        return {**SKIPPED, **self._engine.failures}

    def validate(self, resource: Any, profile: str | None = None) -> dict[str, Any]:
        """An OperationOutcome for ``resource`` (a resource or a Bundle, as a JSON dict).

        ``profile`` adds a profile to check against, for the top-level resource only.
        """
        run = Run()
        if not isinstance(resource, dict):
            run.error("structure", "$this", "not a JSON object: a resource was expected")
            return _outcome(run.issues)
        rtype = resource.get("resourceType")
        if rtype == "Bundle":
            run.bundle_types = {
                str(e["fullUrl"]): str(e["resource"].get("resourceType"))
                for e in resource.get("entry", [])
                if isinstance(e, dict) and isinstance(e.get("resource"), dict) and e.get("fullUrl")
            }
        expr = rtype if isinstance(rtype, str) and rtype.isalpha() else "$this"
        if profile is not None and self.profile(profile) is None:
            run.error("not-found", expr, f"profile {profile} is not loaded")
            return _outcome(run.issues)
        self._checker.check_resource(resource, expr, run, [profile] if profile else None)
        return _outcome(run.issues)

    def assert_valid(self, resource: dict[str, Any], profile: str | None = None) -> None:
        """Raise :class:`~cm_fhir.errors.ValidationError` (carrying the outcome) on any error."""
        outcome = self.validate(resource, profile)
        errors = error_issues(outcome)
        if errors:
            where = ", ".join(e["expression"][0] for e in errors[:3])
            more = f" and {len(errors) - 3} more" if len(errors) > 3 else ""
            raise ValidationError(f"{len(errors)} profile error(s) at {where}{more}", outcome)


def error_issues(outcome: dict[str, Any]) -> list[dict[str, Any]]:
    """The issues of an OperationOutcome with severity error or fatal."""
    return [i for i in outcome.get("issue", []) if i.get("severity") in ("error", "fatal")]


def _outcome(issues: list[dict[str, Any]]) -> dict[str, Any]:
    unique: list[dict[str, Any]] = []
    seen: set[tuple[str, str, str, str]] = set()
    for issue in issues:
        key = (issue["severity"], issue["code"], issue["expression"][0], issue["details"]["text"])
        if key not in seen:
            seen.add(key)
            unique.append(issue)
    if not unique:
        unique = [
            {"severity": "information", "code": "informational", "details": {"text": "no issues"}}
        ]
    return {"resourceType": "OperationOutcome", "issue": unique}


def bundled_profiles_dir() -> Path:
    """Where the bundled profiles are: the wheel's ``cm_fhir/_profiles`` or the checkout's."""
    package_dir = Path(__file__).resolve().parent.parent
    for candidate in (package_dir / "_profiles", package_dir.parent.parent / "profiles"):
        if candidate.is_dir():
            return candidate
    raise ProfileError("the bundled profiles are missing from this installation")


@functools.cache
def default_validator() -> ProfileValidator:
    """A validator over the bundled profiles, loaded once per process."""
    return ProfileValidator.load(bundled_profiles_dir())
