"""The offline profile validator: each kind of rule, broken once in a hand-made resource."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from cm_fhir.errors import ValidationError
from cm_fhir.profiles import ProfileValidator, default_validator, error_issues

B = "http://cm-fhir.org/fhir"
SD = f"{B}/StructureDefinition"
EOC_EXT = "http://hl7.org/fhir/StructureDefinition/workflow-episodeOfCare"
PATIENT = {"type": "Patient", "identifier": {"system": "urn:oid:1.2.3.4", "value": "MRN-1"}}
NARRATIVE = {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">Plan</div>'}


@pytest.fixture(scope="module")
def validator() -> ProfileValidator:
    return default_validator()


def task() -> dict[str, Any]:
    return {
        "resourceType": "Task",
        "id": "task-1",
        "meta": {"profile": [f"{SD}/cm-task"]},
        "extension": [{"url": EOC_EXT, "valueReference": {"reference": "EpisodeOfCare/case-1"}}],
        "identifier": [{"system": f"{B}/sid/task", "value": "T-1"}],
        "status": "requested",
        "intent": "order",
        "code": {"coding": [{"system": f"{B}/CodeSystem/cm-task-code", "code": "home-visit"}]},
        "for": PATIENT,
        "authoredOn": "2024-03-01T09:00:00Z",
        "owner": {"display": "Case manager"},
        "restriction": {"period": {"end": "2024-03-08"}},
    }


def goal() -> dict[str, Any]:
    return {
        "resourceType": "Goal",
        "meta": {"profile": [f"{SD}/cm-goal"]},
        "identifier": [{"system": f"{B}/sid/goal", "value": "G-1"}],
        "lifecycleStatus": "active",
        "description": {"text": "HbA1c below 7%"},
        "subject": PATIENT,
        "target": [
            {
                "measure": {"text": "HbA1c"},
                "detailQuantity": {"value": 7, "unit": "%"},
                "dueDate": "2024-06-01",
            }
        ],
    }


def careplan() -> dict[str, Any]:
    return {
        "resourceType": "CarePlan",
        "meta": {"profile": [f"{SD}/cm-careplan"]},
        "extension": [{"url": EOC_EXT, "valueReference": {"reference": "EpisodeOfCare/case-1"}}],
        "identifier": [{"system": f"{B}/sid/careplan", "value": "P-1"}],
        "text": NARRATIVE,
        "status": "active",
        "intent": "plan",
        "category": [
            {
                "coding": [
                    {"system": f"{B}/CodeSystem/cm-careplan-category", "code": "case-management"}
                ]
            }
        ],
        "subject": PATIENT,
        "activity": [{"reference": {"reference": "Task/task-1"}}],
    }


def errors_of(outcome: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(i["code"], i["expression"][0], i["details"]["text"]) for i in error_issues(outcome)]


@pytest.mark.parametrize("make", [task, goal, careplan])
def test_valid_resources_have_no_errors(validator: ProfileValidator, make: Any) -> None:
    assert errors_of(validator.validate(make())) == []


def test_missing_nested_required_element(validator: ProfileValidator) -> None:
    resource = task()
    resource["restriction"]["period"] = {"start": "2024-03-01"}
    assert errors_of(validator.validate(resource)) == [
        (
            "required",
            "Task.restriction.period.end",
            "required element end is missing; at least 1 needed",
        )
    ]


def test_wrong_fixed_code(validator: ProfileValidator) -> None:
    resource = careplan()
    resource["intent"] = "order"
    assert errors_of(validator.validate(resource)) == [
        ("value", "CarePlan.intent", 'must be exactly the fixed value "plan"')
    ]


def test_wrong_pattern_code(validator: ProfileValidator) -> None:
    resource = task()
    resource["meta"]["profile"] = [f"{SD}/cm-referral-task"]
    resource["focus"] = {"reference": "ServiceRequest/sr-1"}
    resource["requester"] = {"display": "Case manager"}
    resource["code"] = {
        "coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "abort"}]
    }
    [issue] = errors_of(validator.validate(resource))
    assert issue[:2] == ("value", "Task.code")
    assert issue[2].startswith("must match the pattern")
    assert '"code":"fulfill"' in issue[2]


def test_status_outside_its_required_value_set(validator: ProfileValidator) -> None:
    resource = task()
    resource["status"] = "finished"
    [issue] = errors_of(validator.validate(resource))
    assert issue[:2] == ("code-invalid", "Task.status")
    assert (
        "not in value set http://hl7.org/fhir/ValueSet/task-status (required binding)" in issue[2]
    )


def test_goal_violating_gol_1(validator: ProfileValidator) -> None:
    resource = goal()
    del resource["target"][0]["measure"]
    assert ("invariant", "Goal.target[0]") in [
        e[:2] for e in errors_of(validator.validate(resource))
    ]
    gol = [e for e in errors_of(validator.validate(resource)) if e[2].startswith("gol-1")]
    assert gol == [
        (
            "invariant",
            "Goal.target[0]",
            "gol-1: Goal.target.measure is required if Goal.target.detail is populated",
        )
    ]


def test_smart_goal_needs_measurable_target_or_reason(validator: ProfileValidator) -> None:
    resource = goal()
    resource["target"] = [{"dueDate": "2024-06-01"}]
    [issue] = errors_of(validator.validate(resource))
    assert issue[:2] == ("invariant", "Goal")
    assert issue[2].startswith("cm-goal-1:")
    resource["extension"] = [
        {"url": f"{SD}/cm-goal-qualitative-reason", "valueString": "Self-reported wellbeing"}
    ]
    assert errors_of(validator.validate(resource)) == []


def test_smart_goal_needs_a_due_date(validator: ProfileValidator) -> None:
    resource = goal()
    del resource["target"][0]["dueDate"]
    assert errors_of(validator.validate(resource)) == [
        ("required", "Goal.target[0].due", "required element due is missing; at least 1 needed")
    ]


def test_careplan_activity_with_detail_and_reference_breaks_cpl_3(
    validator: ProfileValidator,
) -> None:
    resource = careplan()
    del resource["meta"]  # the base CarePlan allows detail; our profile forbids it outright
    resource["activity"][0]["detail"] = {"status": "scheduled"}
    assert errors_of(validator.validate(resource)) == [
        (
            "invariant",
            "CarePlan.activity[0]",
            "cpl-3: Provide a reference or detail, not both",
        )
    ]


def test_profile_forbids_activity_detail(validator: ProfileValidator) -> None:
    resource = careplan()
    resource["activity"] = [{"detail": {"status": "scheduled"}}]
    assert errors_of(validator.validate(resource)) == [
        ("structure", "CarePlan.activity[0].detail", "detail is not allowed by the profile (max 0)")
    ]


def test_wrong_reference_target_type(validator: ProfileValidator) -> None:
    resource = task()
    resource["for"] = {"reference": "Practitioner/p-1"}
    assert errors_of(validator.validate(resource)) == [
        (
            "structure",
            "Task.for",
            "a reference to a Practitioner is not allowed here; allowed: Patient",
        )
    ]


def test_logical_reference_type_is_checked(validator: ProfileValidator) -> None:
    resource = task()
    resource["for"] = {"type": "Group", "identifier": {"value": "G-1"}}
    assert errors_of(validator.validate(resource)) == [
        ("structure", "Task.for", "a reference to a Group is not allowed here; allowed: Patient")
    ]


def test_slice_cardinality(validator: ProfileValidator) -> None:
    resource = careplan()
    resource["category"].append(copy.deepcopy(resource["category"][0]))
    assert errors_of(validator.validate(resource)) == [
        (
            "structure",
            "CarePlan.category",
            "slice 'cmCategory' of category allows at most 1; found 2",
        )
    ]
    resource["category"] = [{"text": "no coding"}]
    assert errors_of(validator.validate(resource)) == [
        (
            "required",
            "CarePlan.category",
            "slice 'cmCategory' of category needs at least 1 entry; found 0",
        )
    ]


def test_identifier_slice_by_system_value(validator: ProfileValidator) -> None:
    resource = goal()
    resource["identifier"] = [{"system": f"{B}/sid/other", "value": "G-1"}]
    assert errors_of(validator.validate(resource)) == [
        (
            "required",
            "Goal.identifier",
            "slice 'goalId' of identifier needs at least 1 entry; found 0",
        )
    ]


def test_extension_slice_missing(validator: ProfileValidator) -> None:
    resource = task()
    del resource["extension"]
    assert errors_of(validator.validate(resource)) == [
        (
            "required",
            f"Task.extension('{EOC_EXT}')",
            "slice 'episodeOfCare' of extension needs at least 1 entry; found 0",
        )
    ]


def test_unknown_element(validator: ProfileValidator) -> None:
    resource = task()
    resource["restriction"]["dueDate"] = "2024-03-08"
    assert errors_of(validator.validate(resource)) == [
        (
            "structure",
            "Task.restriction.dueDate",
            "unknown element 'dueDate': not defined in Task.restriction",
        )
    ]


def test_choice_type_not_allowed(validator: ProfileValidator) -> None:
    resource = goal()
    target = resource["target"][0]
    target["dueDuration"] = {"value": 3, "unit": "mo"}
    del target["dueDate"]
    codes = errors_of(validator.validate(resource))
    assert (
        "structure",
        "Goal.target[0].dueDuration",
        "'dueDuration' is not an allowed type for due[x] here; use one of: dueDate",
    ) in codes


def test_bad_datetime(validator: ProfileValidator) -> None:
    resource = task()
    resource["authoredOn"] = "2024-03-01 09:00"
    [issue] = errors_of(validator.validate(resource))
    assert issue[:2] == ("value", "Task.authoredOn")
    assert issue[2].startswith("authoredOn is not a dateTime")
    assert "2024-03-01" not in issue[2]  # values are never echoed: they may be PHI


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("authoredOn", "2023-02-30", "is not an existing calendar date"),
        ("lastModified", "2024-03-01T09:00:00", "is not a dateTime"),
        ("id", "has space", "is not an id"),
        ("implicitRules", "a b", "is not a URI"),
        ("language", 12, "must be a JSON string"),
        ("priority", "urgent ", "is not a code"),
    ],
)
def test_primitive_formats(
    validator: ProfileValidator, field: str, value: Any, expected: str
) -> None:
    resource = task()
    resource[field] = value
    [issue] = [e for e in errors_of(validator.validate(resource)) if e[1] == f"Task.{field}"]
    assert issue[0] == "value"
    assert expected in issue[2]


def test_boolean_must_be_json_boolean(validator: ProfileValidator) -> None:
    resource = {
        "resourceType": "Patient",
        "active": "true",
    }
    assert errors_of(validator.validate(resource)) == [
        ("value", "Patient.active", "active must be a JSON boolean (true or false)")
    ]


def test_task_inv_1_last_modified_before_authored(validator: ProfileValidator) -> None:
    resource = task()
    resource["lastModified"] = "2024-02-01T09:00:00Z"
    assert errors_of(validator.validate(resource)) == [
        (
            "invariant",
            "Task",
            "inv-1: Last modified date must be greater than or equal to authored-on date.",
        )
    ]


def test_must_support_missing_is_information(validator: ProfileValidator) -> None:
    outcome = validator.validate(task())
    info = [i for i in outcome["issue"] if i["severity"] == "information"]
    assert {"Task.requester", "Task.basedOn"} <= {i["expression"][0] for i in info}


def test_bundle_entries_and_urn_uuid_references(validator: ProfileValidator) -> None:
    plan = careplan()
    plan["activity"][0]["reference"] = {
        "reference": "urn:uuid:3f1c1c1e-0000-5000-8000-000000000001"
    }
    bad = task()
    bad["status"] = "finished"
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"urn:uuid:3f1c1c1e-0000-5000-8000-00000000000{i}",
                "resource": resource,
                "request": {"method": "POST", "url": resource["resourceType"]},
            }
            for i, resource in enumerate([plan, task(), bad])
        ],
    }
    [issue] = errors_of(validator.validate(bundle))
    assert issue[:2] == ("code-invalid", "Bundle.entry[2].resource.status")
    plan["activity"][0]["reference"] = {
        "reference": "urn:uuid:3f1c1c1e-0000-5000-8000-000000000000"
    }
    codes = errors_of(validator.validate(bundle))
    assert (
        "structure",
        "Bundle.entry[0].resource.activity[0].reference",
        "a reference to a CarePlan is not allowed here; allowed: ServiceRequest, Task",
    ) in codes
    plan["activity"][0]["reference"] = {
        "reference": "urn:uuid:3f1c1c1e-0000-5000-8000-00000000000f"
    }
    assert (
        "not-found",
        "Bundle.entry[0].resource.activity[0].reference.reference",
        "no entry of this Bundle has this fullUrl",
    ) in errors_of(validator.validate(bundle))


def test_contained_reference_resolves_and_unreferenced_contained_fails(
    validator: ProfileValidator,
) -> None:
    resource = goal()
    resource["contained"] = [
        {"resourceType": "Condition", "id": "c1", "code": {"text": "Diabetes"}, "subject": PATIENT}
    ]
    resource["addresses"] = [{"reference": "#c1"}]
    assert errors_of(validator.validate(resource)) == []
    resource["addresses"] = [{"reference": "#c2"}]
    codes = errors_of(validator.validate(resource))
    assert (
        "not-found",
        "Goal.addresses[0].reference",
        "points to a contained resource that does not exist",
    ) in codes
    assert (
        "invariant",
        "Goal.contained[0]",
        "dom-3: a contained resource must be referenced from the resource that holds it",
    ) in codes


def test_unknown_code_in_our_code_system(validator: ProfileValidator) -> None:
    resource = task()
    resource["code"]["coding"][0]["code"] = "home-vist"
    codes = errors_of(validator.validate(resource))
    assert (
        "code-invalid",
        "Task.code.coding[0].code",
        f"the code is not defined in code system {B}/CodeSystem/cm-task-code",
    ) in codes


def test_explicit_profile_and_assert_valid(validator: ProfileValidator) -> None:
    resource = task()
    del resource["meta"]
    assert errors_of(validator.validate(resource)) == []  # the base Task is satisfied
    del resource["owner"]
    with pytest.raises(ValidationError) as caught:
        validator.assert_valid(resource, profile=f"{SD}/cm-task")
    assert errors_of(caught.value.outcome) == [
        ("required", "Task.owner", "required element owner is missing; at least 1 needed")
    ]


def test_not_a_resource(validator: ProfileValidator) -> None:
    assert errors_of(validator.validate({"status": "draft"})) == [
        ("structure", "$this", "resourceType is missing: not a FHIR resource")
    ]
    assert errors_of(validator.validate({"resourceType": "Tusk"})) == [
        ("structure", "Tusk", "'Tusk' is not an R4 resource type")
    ]


def test_skipped_constraints_are_listed(validator: ProfileValidator) -> None:
    assert {"ele-1", "ext-1", "dom-3", "ctm-1"} <= set(validator.skipped_constraints)


def _errors_at(validator: ProfileValidator, resource: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (i["expression"][0], i["details"]["text"].split(":")[0])
        for i in error_issues(validator.validate(resource))
    ]


def test_ext_1_an_empty_sub_extension_array_is_no_sub_extension(
    validator: ProfileValidator,
) -> None:
    t = task()
    t["extension"].append({"url": f"{SD}/cm-discharge-plan", "extension": []})
    found = _errors_at(validator, t)
    assert ("Task.extension[1]", "ext-1") in found
    assert ("Task.extension[1].extension", "an empty array is not valid R4 JSON") in found


def test_ext_1_value_and_sub_extensions_together(validator: ProfileValidator) -> None:
    t = task()
    t["extension"].append(
        {
            "url": "http://example.org/x",
            "valueString": "a",
            "extension": [{"url": "y", "valueString": "b"}],
        }
    )
    assert ("Task.extension[1]", "ext-1") in _errors_at(validator, t)


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (
            {"restriction": {"period": {"end": "2024-03-08"}, "recipient": [{}]}},
            "Task.restriction.recipient[0]",
        ),
        ({"businessStatus": {"coding": []}}, "Task.businessStatus"),
        ({"_description": {}}, "Task.description"),
        ({"note": [{"extension": []}]}, "Task.note[0]"),
    ],
)
def test_ele_1_on_every_element(
    validator: ProfileValidator, change: dict[str, Any], where: str
) -> None:
    t = task()
    t.update(change)
    assert (where, "ele-1") in _errors_at(validator, t)


def test_empty_arrays_are_refused_wherever_they_are(validator: ProfileValidator) -> None:
    t = task()
    t["note"] = []
    t["owner"] = {"display": "Case manager", "extension": []}
    found = _errors_at(validator, t)
    assert ("Task.note", "an empty array is not valid R4 JSON") in found
    assert ("Task.owner.extension", "an empty array is not valid R4 JSON") in found
