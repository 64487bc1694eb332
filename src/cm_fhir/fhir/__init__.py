"""Case <-> FHIR R4: resources, transaction Bundles and structural validation. Pure.

The public API::

    bundle = map_case(case)                 # validated transaction Bundle (dict)
    data = map_case_json(case)              # the same, as canonical JSON bytes
    data = map_case_json(case, validate=False)   # the fast path, no validation
    case = case_from_bundle(bundle)         # the reverse mapping (lossless)
    parts = split_transaction(bundle, 8)    # for servers that cap transaction size
    model = map_case_model(case)            # typed: a fhir.resources R4B Bundle model

Every function takes an optional ``registry`` (the mappings); None means the bundled ones.
"""

from __future__ import annotations

from typing import Any

from cm_fhir.domain.case import Case
from cm_fhir.fhir.bundle import WriteMode, bundle_resources, dumps, transaction_bundle
from cm_fhir.fhir.context import ReferenceStyle
from cm_fhir.fhir.mapper import case_to_resources, resources_to_case
from cm_fhir.fhir.models import bundle_model, resource_model, validate_bundle, validate_resource
from cm_fhir.fhir.shape import check_shape
from cm_fhir.fhir.split import split_transaction
from cm_fhir.mapping.registry import MappingRegistry, default_registry

Json = dict[str, Any]


def map_case(
    case: Case,
    registry: MappingRegistry | None = None,
    *,
    validate: bool = True,
    mode: WriteMode = WriteMode.CONDITIONAL_UPDATE,
) -> Json:
    """The transaction Bundle for ``case``; structurally validated unless ``validate=False``.

    Validation is the fhir.resources R4B models plus the R4 JSON rules they let through (no empty
    arrays, objects or strings, no stray nulls, ele-1, ext-1); either raises ValidationError.
    """
    bundle = transaction_bundle(case_to_resources(case, registry or default_registry()), mode)
    if validate:
        validate_bundle(bundle)
        check_shape(bundle)
    return bundle


def map_case_json(
    case: Case,
    registry: MappingRegistry | None = None,
    *,
    validate: bool = True,
    mode: WriteMode = WriteMode.CONDITIONAL_UPDATE,
) -> bytes:
    """``map_case`` as canonical JSON bytes: the same case always gives the same bytes."""
    return dumps(map_case(case, registry, validate=validate, mode=mode))


def map_case_model(
    case: Case,
    registry: MappingRegistry | None = None,
    *,
    mode: WriteMode = WriteMode.CONDITIONAL_UPDATE,
) -> Any:
    """``map_case`` as a fhir.resources R4B ``Bundle`` model, for callers who want typed objects:
    ``map_case_model(case).entry[0].resource`` is an ``EpisodeOfCare`` model."""
    bundle = map_case(case, registry, validate=False, mode=mode)
    check_shape(bundle)
    return bundle_model(bundle)


def case_from_bundle(bundle: Json, registry: MappingRegistry | None = None) -> Case:
    """Read a case back from a Bundle (or a list of resources) the mapper made."""
    return resources_to_case(bundle_resources(bundle), registry or default_registry())


__all__ = [
    "ReferenceStyle",
    "WriteMode",
    "case_from_bundle",
    "case_to_resources",
    "dumps",
    "map_case",
    "map_case_json",
    "map_case_model",
    "resource_model",
    "resources_to_case",
    "split_transaction",
    "transaction_bundle",
    "validate_bundle",
    "validate_resource",
]
