"""Nothing the mapper writes has an empty element: R4 JSON rules, ele-1 and ext-1.

A property test maps arbitrary cases (``strategies.cases``) and walks every resource; small cases
pin the two shapes that used to come out empty (a discharge plan without specifics, a care team
without members); and the guard in ``dumps`` refuses a document that breaks the rules.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from cm_fhir.domain import CareTeam, Case, DischargePlan, PlanStatus
from cm_fhir.errors import MappingError
from cm_fhir.fhir import ReferenceStyle, case_to_resources, dumps, map_case
from cm_fhir.fhir.shape import check_shape, might_be_empty, shape_problems
from cm_fhir.mapping.registry import default_registry
from strategies import cases

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "stroke-inpatient-rehab.json"
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
Json = dict[str, Any]


def _stroke(**changes: Any) -> Case:
    return Case.model_validate_json(EXAMPLE.read_text(encoding="utf-8")).model_copy(update=changes)


@PROPERTY
@given(cases())
def test_no_resource_of_any_case_has_an_empty_element(case: Case) -> None:
    registry = default_registry()
    bundle = map_case(case, validate=False)
    assert shape_problems(bundle) == []
    for resource in case_to_resources(case, registry, ReferenceStyle.RELATIVE):
        assert shape_problems(resource) == []
    dumps(bundle)  # the guard agrees


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


def test_the_serialiser_refuses_an_empty_element_and_names_only_its_position() -> None:
    document = {"resourceType": "Task", "note": [{"text": "MRN123 said"}], "input": []}
    with pytest.raises(MappingError) as caught:
        dumps(document)
    assert caught.value.path == "Task.input"
    assert "MRN123" not in str(caught.value)
    assert might_be_empty(json.dumps(document).encode())
    assert not might_be_empty(b'{"resourceType":"Task","status":"ready"}')
    check_shape({"resourceType": "Task", "status": "ready"})  # nothing to say
