"""Nothing the mapper writes has an empty element: R4 JSON rules, ele-1 and ext-1.

A property test maps arbitrary cases (``strategies.cases``) and walks every resource; small cases
pin the two shapes that used to come out empty (a discharge plan without specifics, a care team
without members); and validation (``map_case``) refuses what fhir.resources lets through.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

import cm_fhir.fhir as fhir_api
from cm_fhir.domain import CareTeam, Case, DischargePlan, PlanStatus
from cm_fhir.errors import ValidationError
from cm_fhir.fhir import ReferenceStyle, case_to_resources, map_case, validate_bundle
from cm_fhir.fhir.shape import check_shape, shape_problems
from cm_fhir.mapping.registry import default_registry
from strategies import cases

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "stroke-inpatient-rehab.json"
BASE = "http://cm-fhir.org/fhir/StructureDefinition"
PROPERTY = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SOAK = settings(PROPERTY, max_examples=300)  # `make soak`
Json = dict[str, Any]


def _stroke(**changes: Any) -> Case:
    return Case.model_validate_json(EXAMPLE.read_text(encoding="utf-8")).model_copy(update=changes)


@PROPERTY
@given(cases())
def test_no_resource_of_any_case_has_an_empty_element(case: Case) -> None:
    _no_empty_element(case)


@pytest.mark.slow
@SOAK
@given(cases())
def test_no_resource_of_any_case_has_an_empty_element_soak(case: Case) -> None:
    _no_empty_element(case)


def _no_empty_element(case: Case) -> None:
    registry = default_registry()
    bundle = map_case(case, validate=False)
    assert shape_problems(bundle) == []
    for resource in case_to_resources(case, registry, ReferenceStyle.RELATIVE):
        assert shape_problems(resource) == []
    check_shape(bundle)  # the validated path's check agrees


def test_a_discharge_plan_without_specifics_has_no_empty_extension() -> None:
    bare = DischargePlan(
        id="discharge", status=PlanStatus.DRAFT, created=datetime(2026, 3, 3, tzinfo=UTC)
    )
    bundle = map_case(_stroke(discharge_plan=bare), validate=False)
    plan = next(
        e["resource"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "CarePlan"
        and e["resource"]["title"] == "Discharge plan"
    )
    assert [e["url"].rsplit("/", 1)[-1] for e in plan["extension"]] == ["workflow-episodeOfCare"]
    assert shape_problems(bundle) == []


def test_a_care_team_without_members_has_no_empty_participant() -> None:
    bundle = map_case(_stroke(care_team=CareTeam(id="team")), validate=False)
    team = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "CareTeam"
    )
    assert "participant" not in team
    assert shape_problems(bundle) == []


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ({"resourceType": "Task", "note": []}, "Task.note: empty array"),
        ({"resourceType": "Task", "note": [{}]}, "Task.note[0]: ele-1"),
        ({"resourceType": "Task", "description": " "}, "Task.description: empty"),
        ({"resourceType": "Task", "description": None}, "Task.description: null"),
        (
            {"resourceType": "Task", "extension": [{"url": "http://x", "extension": []}]},
            "Task.extension[0].extension: empty array",
        ),
        (
            {"resourceType": "Task", "extension": [{"url": "http://x", "extension": []}]},
            "Task.extension[0]: ext-1",
        ),
        (
            {"resourceType": "Task", "extension": [{"url": "http://x"}]},
            "Task.extension[0]: ext-1",
        ),
        (
            {
                "resourceType": "Task",
                "extension": [
                    {
                        "url": "http://x",
                        "valueString": "a",
                        "extension": [{"url": "y", "valueString": "b"}],
                    }
                ],
            },
            "Task.extension[0]: ext-1",
        ),
    ],
)
def test_each_rule_is_found_by_position(document: Json, problem: str) -> None:
    assert any(p.startswith(problem) for p in shape_problems(document)), shape_problems(document)


def test_primitive_arrays_may_hold_null_placeholders() -> None:
    patient = {
        "resourceType": "Patient",
        "name": [
            {
                "given": ["A", None],
                "_given": [None, {"extension": [{"url": "u", "valueCode": "x"}]}],
            }
        ],
    }
    assert shape_problems(patient) == []


def test_check_shape_names_positions_only() -> None:
    document = {"resourceType": "Task", "note": [{"text": "MRN123 said"}], "input": []}
    with pytest.raises(ValidationError) as caught:
        check_shape(document)
    issues = caught.value.outcome["issue"]
    assert [i["expression"] for i in issues] == [["Task.input"]]
    assert "MRN123" not in json.dumps(caught.value.outcome) + str(caught.value)
    check_shape({"resourceType": "Task", "status": "ready"})  # nothing to say


def test_validation_refuses_the_empty_extension_fhir_resources_accepts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The original bug: ``{"url": ..., "extension": []}`` passed the R4B models."""
    real = fhir_api.case_to_resources

    def with_empty_extension(case: Case, registry: Any) -> list[Json]:
        resources = real(case, registry)
        resources[0]["extension"].append({"url": f"{BASE}/cm-discharge-plan", "extension": []})
        return resources

    monkeypatch.setattr(fhir_api, "case_to_resources", with_empty_extension)
    bundle = map_case(_stroke(), validate=False)
    validate_bundle(bundle)  # fhir.resources alone lets it through
    with pytest.raises(ValidationError) as caught:
        map_case(_stroke())
    last = len(bundle["entry"][0]["resource"]["extension"]) - 1
    expressions = [i["expression"][0] for i in caught.value.outcome["issue"]]
    assert f"Bundle.entry[0].resource.extension[{last}]" in expressions
