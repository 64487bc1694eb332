"""Structural validation with the fhir.resources R4B models. Pure.

This is the only module that imports fhir.resources (an import-linter contract keeps it so). We use
the R4B package because the library's default models are R5 and reject R4 JSON; R4B is compatible
with R4 4.0.1 for every resource cm-fhir emits (EpisodeOfCare, CarePlan, Goal, Task, CareTeam,
ServiceRequest, RiskAssessment, Bundle). Validation failures become a
:class:`~cm_fhir.errors.ValidationError` carrying an OperationOutcome.
"""

from __future__ import annotations

from typing import Any

import pydantic
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle

from cm_fhir.errors import ValidationError
from cm_fhir.fhir.outcome import Issue, operation_outcome

Json = dict[str, Any]


def _expression(root: str, loc: tuple[int | str, ...]) -> str:
    out = root
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not part.startswith("function-") and "[" not in part:
            out += f".{part}"
    return out


def _raise(root: str, exc: pydantic.ValidationError) -> None:
    issues = [
        Issue("error", "structure", e["msg"], _expression(root, tuple(e["loc"])))
        for e in exc.errors()
    ]
    text = f"{root} is not valid FHIR R4: {len(issues)} problem(s)"
    raise ValidationError(text, operation_outcome(issues)) from exc


def validate_resource(resource: Json) -> None:
    """Check one resource against the R4B model of its type."""
    rtype = str(resource.get("resourceType", ""))
    try:
        model = get_fhir_model_class(rtype)
    except (KeyError, ValueError) as exc:
        issue = Issue("error", "not-supported", f"unknown resourceType '{rtype}'", "resourceType")
        raise ValidationError("unknown resource type", operation_outcome([issue])) from exc
    try:
        model.model_validate(resource)
    except pydantic.ValidationError as exc:
        _raise(rtype, exc)


def validate_bundle(bundle: Json) -> None:
    """Check a whole Bundle (and every entry's resource) against the R4B models."""
    try:
        Bundle.model_validate(bundle)
    except pydantic.ValidationError as exc:
        _raise("Bundle", exc)


def bundle_model(bundle: Json) -> Any:
    """The Bundle as a fhir.resources R4B ``Bundle`` model (typed objects, each entry's resource
    its own model class); raises ValidationError when it is not valid R4."""
    try:
        return Bundle.model_validate(bundle)
    except pydantic.ValidationError as exc:
        _raise("Bundle", exc)
        raise  # unreachable: _raise always raises


def resource_model(resource: Json) -> Any:
    """One resource as its fhir.resources R4B model (``Task``, ``EpisodeOfCare``...)."""
    validate_resource(resource)
    return get_fhir_model_class(str(resource["resourceType"])).model_validate(resource)


def bundle_model_roundtrip(bundle: Json) -> str:
    """fhir.resources' own validate + serialise of a Bundle (the benchmark's baseline)."""
    return str(Bundle.model_validate(bundle).model_dump_json(exclude_none=True))
