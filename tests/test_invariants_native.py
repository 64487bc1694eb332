"""The native invariants agree with fhirpathpy, and the validator's verdicts do not change.

For every invariant in :data:`cm_fhir.profiles.invariants.NATIVE`, hypothesis generates JSON
values around it (satisfying, violating, odd shapes); wherever the native function decides
(returns True or False), fhirpathpy must give the same verdict on the same value. Then whole
resources (the examples and what the worker writes for the scenario feeds) are validated with
and without the native path, and the issue lists must be identical.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cm_fhir.domain import Case
from cm_fhir.fhir import map_case_json
from cm_fhir.profiles import ProfileValidator, default_validator
from cm_fhir.profiles.constraints import ConstraintEngine
from cm_fhir.profiles.invariants import NATIVE
from cm_fhir.profiles.validator import bundled_profiles_dir

ROOT = Path(__file__).resolve().parents[1]
Json = dict[str, Any]

# The FHIRPath type each invariant is evaluated on (as the validator passes it).
_TYPES = {
    "dom-2": "Task",
    "dom-4": "Task",
    "dom-5": "Task",
    "ref-1": "Reference",
    "qty-3": "Quantity",
    "sqty-1": "Quantity",
    "per-1": "Period",
    "inv-1": "Task",
    "rng-2": "Range",
    "cpl-3": "CarePlan.activity",
    "gol-1": "Goal.target",
    "prr-1": "ServiceRequest",
    "ras-2": "RiskAssessment.prediction",
    "con-4": "Condition",
    "con-5": "Condition",
    "cm-task-1": "Task",
    "cm-goal-1": "Goal",
}

_DATETIMES = st.sampled_from(
    [
        "2025-09-08",
        "2025-09-09",
        "2025-09",
        "2025",
        "2025-09-08T06:00:00-04:00",
        "2025-09-08T10:00:00Z",
        "2025-09-08T10:00:00+00:00",
        "2025-09-08T09:59:59.5Z",
        "2025-09-08T11:00:00+01:00",
        "2025-09-08T10:00:00",
        "2025-09-08T10:00Z",
    ]
)
_CODES = st.sampled_from(["resolved", "remission", "inactive", "active", "entered-in-error", "x"])
_SYSTEMS = st.sampled_from(
    [
        "http://terminology.hl7.org/CodeSystem/condition-clinical",
        "http://terminology.hl7.org/CodeSystem/condition-ver-status",
        "http://cm-fhir.org/fhir/sid/task",
        "http://cm-fhir.org/fhir/sid/assessment",
        "http://example.org/other",
    ]
)
_CODING = st.fixed_dictionaries({}, optional={"system": _SYSTEMS, "code": _CODES})
_CONCEPT = st.fixed_dictionaries({}, optional={"coding": st.lists(_CODING, max_size=3)})
_EXT = st.fixed_dictionaries({"id": st.just("e")})
_QUANTITY = st.fixed_dictionaries(
    {},
    optional={
        "value": st.integers(-5, 200),
        "unit": st.just("d"),
        "system": st.just("http://unitsofmeasure.org"),
        "code": st.sampled_from(["d", "h"]),
        "comparator": st.just("<"),
        "_code": _EXT,
    },
)
_META = st.fixed_dictionaries(
    {},
    optional={
        "versionId": st.just("1"),
        "lastUpdated": _DATETIMES,
        "security": st.lists(_CODING, max_size=1),
        "_versionId": _EXT,
    },
)
_CONTAINED = st.fixed_dictionaries(
    {"resourceType": st.just("Patient"), "id": st.sampled_from(["p1", "p2"])},
    optional={"meta": _META, "contained": st.just([{"resourceType": "Patient", "id": "x"}])},
)
_REFERENCE = st.fixed_dictionaries(
    {},
    optional={
        "reference": st.sampled_from(["#p1", "#p2", "#", "#zz", "Patient/1", "urn:uuid:1"]),
        "display": st.just("d"),
    },
)

_VALUES: dict[str, st.SearchStrategy[Json]] = {
    "dom": st.fixed_dictionaries(
        {"resourceType": st.just("Task")},
        optional={"contained": st.lists(_CONTAINED, max_size=3)},
    ),
    "ref-1": _REFERENCE,
    "qty-3": _QUANTITY,
    "sqty-1": _QUANTITY,
    "per-1": st.fixed_dictionaries(
        {}, optional={"start": _DATETIMES, "end": _DATETIMES, "_start": _EXT}
    ),
    "inv-1": st.fixed_dictionaries(
        {"resourceType": st.just("Task")},
        optional={"lastModified": _DATETIMES, "authoredOn": _DATETIMES, "_authoredOn": _EXT},
    ),
    "rng-2": st.fixed_dictionaries({}, optional={"low": _QUANTITY, "high": _QUANTITY}),
    "cpl-3": st.fixed_dictionaries(
        {},
        optional={
            "detail": st.just({"status": "scheduled"}),
            "reference": st.just({"reference": "Task/1"}),
        },
    ),
    "gol-1": st.fixed_dictionaries(
        {},
        optional={
            "measure": _CONCEPT,
            "detailQuantity": _QUANTITY,
            "detailString": st.just("walk"),
            "_detailString": _EXT,
            "dueDate": st.just("2025-10-01"),
        },
    ),
    "prr-1": st.fixed_dictionaries(
        {"resourceType": st.just("ServiceRequest")},
        optional={"orderDetail": st.lists(_CONCEPT, max_size=2), "code": _CONCEPT},
    ),
    "ras-2": st.fixed_dictionaries(
        {},
        optional={
            "probabilityDecimal": st.one_of(st.integers(0, 150), st.floats(0, 150)),
            "probabilityRange": st.just({"low": {"value": 1}}),
        },
    ),
    "con": st.fixed_dictionaries(
        {"resourceType": st.just("Condition")},
        optional={
            "abatementDateTime": _DATETIMES,
            "abatementString": st.just("gone"),
            "clinicalStatus": _CONCEPT,
            "verificationStatus": _CONCEPT,
        },
    ),
    "cm-task-1": st.fixed_dictionaries(
        {"resourceType": st.just("Task")},
        optional={
            "identifier": st.lists(
                st.fixed_dictionaries({}, optional={"system": _SYSTEMS, "value": st.just("1")}),
                max_size=3,
            )
        },
    ),
    "cm-goal-1": st.fixed_dictionaries(
        {"resourceType": st.just("Goal")},
        optional={
            "target": st.lists(
                st.fixed_dictionaries(
                    {},
                    optional={"measure": _CONCEPT, "detailQuantity": _QUANTITY},
                ),
                max_size=2,
            ),
            "extension": st.lists(
                st.fixed_dictionaries(
                    {
                        "url": st.sampled_from(
                            [
                                "http://cm-fhir.org/fhir/StructureDefinition/"
                                "cm-goal-qualitative-reason",
                                "http://example.org/x",
                            ]
                        ),
                        "valueString": st.just("r"),
                    }
                ),
                max_size=2,
            ),
        },
    ),
}


def _strategy(key: str) -> st.SearchStrategy[Json]:
    if key.startswith("dom-"):
        return _VALUES["dom"]
    if key.startswith("con-"):
        return _VALUES["con"]
    return _VALUES[key]


def test_every_native_invariant_has_a_generator_and_a_type() -> None:
    for key, _expression in NATIVE:
        assert key in _TYPES
        assert _strategy(key) is not None


@pytest.mark.parametrize(("key", "expression"), sorted(NATIVE), ids=[k for k, _ in sorted(NATIVE)])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_native_verdicts_agree_with_fhirpathpy(key: str, expression: str, data: Any) -> None:
    engine = ConstraintEngine(native=False)
    value = data.draw(_strategy(key))
    resource = value if "resourceType" in value else {"resourceType": "Task", **_root(data)}
    native = NATIVE[(key, expression)](value, resource)
    if native is None:
        return
    expected = engine.evaluate_fhirpath(key, expression, value, _TYPES[key], resource)
    assert expected is not None, engine.failures
    assert native is expected, (value, resource)


def _root(data: Any) -> Json:
    contained = data.draw(st.lists(_CONTAINED, max_size=2))
    return {"contained": contained} if contained else {}


def _issues(validator: ProfileValidator, resource: Json) -> list[Any]:
    outcome = validator.validate(resource)
    return sorted(json.dumps(issue, sort_keys=True) for issue in outcome.get("issue", []))


def _example_resources() -> list[Json]:
    resources: list[Json] = []
    for path in sorted((ROOT / "examples").glob("*.json")):
        case = Case.model_validate(json.loads(path.read_text(encoding="utf-8")))
        resources.append(json.loads(map_case_json(case, validate=False)))
    return resources


def test_validator_issues_are_the_same_with_and_without_native_invariants() -> None:
    fast = default_validator()
    slow = ProfileValidator.load(bundled_profiles_dir(), native_invariants=False)
    bundles = _example_resources()
    assert bundles
    for bundle in bundles:
        assert _issues(fast, bundle) == _issues(slow, bundle)
        for entry in bundle["entry"]:
            assert _issues(fast, entry["resource"]) == _issues(slow, entry["resource"])


def _broken(resource: Json) -> Json:
    """The resource with the invariants the native path decides violated where it can."""
    broken = json.loads(json.dumps(resource))
    if "authoredOn" in broken:
        broken["lastModified"] = "2000-01-01T00:00:00Z"
        broken["authoredOn"] = "2001-01-01T00:00:00Z"
    for key in ("period", "executionPeriod"):
        if isinstance(broken.get(key), dict):
            broken[key] = {"start": "2025-02-01", "end": "2025-01-01"}
    if broken.get("resourceType") == "Task":
        broken["identifier"] = [{"system": "http://example.org/other", "value": "1"}]
    if broken.get("resourceType") == "Goal":
        for target in broken.get("target", []):
            target.pop("measure", None)
        broken.pop("extension", None)
    return broken


def test_violations_are_reported_the_same_with_and_without_native_invariants() -> None:
    fast = default_validator()
    slow = ProfileValidator.load(bundled_profiles_dir(), native_invariants=False)
    violated = 0
    for bundle in _example_resources():
        for entry in bundle["entry"]:
            broken = _broken(entry["resource"])
            fast_issues = _issues(fast, broken)
            assert fast_issues == _issues(slow, broken)
            violated += sum('"invariant"' in issue for issue in fast_issues)
    assert violated > 10, "the mutations must break invariants the native path decides"
