"""The mapping library's calling convention and its typed output.

Every public mapping function takes the registry as optional (the bundled one by default), and
``map_case_model`` gives fhir.resources R4B models for users who want objects, equal to the dicts.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cm_fhir.domain import Case
from cm_fhir.errors import ValidationError
from cm_fhir.fhir import (
    case_from_bundle,
    case_to_resources,
    map_case,
    map_case_model,
    resource_model,
    resources_to_case,
)
from cm_fhir.mapping.registry import default_registry

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.json"))


@pytest.fixture(params=EXAMPLES, ids=lambda p: p.stem)
def case(request: pytest.FixtureRequest) -> Case:
    return Case.model_validate(json.loads(request.param.read_text(encoding="utf-8")))


def test_registry_is_optional_and_defaults_to_the_bundled_one(case: Case) -> None:
    registry = default_registry()
    assert case_to_resources(case) == case_to_resources(case, registry)
    resources = case_to_resources(case)
    assert resources_to_case(resources) == resources_to_case(resources, registry) == case
    assert case_from_bundle(map_case(case)) == case


def test_typed_output_holds_the_same_resources_as_the_dicts(case: Case) -> None:
    bundle = map_case(case)
    model = map_case_model(case)
    assert type(model).__name__ == "Bundle"
    assert len(model.entry) == len(bundle["entry"])
    for entry, typed in zip(bundle["entry"], model.entry, strict=True):
        resource = entry["resource"]
        assert type(typed.resource).__name__ == resource["resourceType"]
        dumped = json.loads(typed.resource.model_dump_json(exclude_none=True))
        assert dumped["identifier"] == resource["identifier"]


def test_resource_model_refuses_invalid_r4() -> None:
    with pytest.raises(ValidationError) as raised:
        resource_model(
            {"resourceType": "Task", "status": "draft", "intent": "order", "authoredOn": "soon"}
        )
    assert raised.value.outcome["issue"][0]["expression"] == ["Task.authoredOn"]
