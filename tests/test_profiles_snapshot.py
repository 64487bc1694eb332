"""Snapshot generation from differentials, and the shape of the bundled profiles."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from cm_fhir.errors import ProfileError
from cm_fhir.profiles import ConformanceRegistry, bundled_profiles_dir, generate_snapshot
from cm_fhir.profiles.snapshot import generate_snapshots
from cm_fhir.profiles.terminology import Terminology

B = "http://cm-fhir.org/fhir"


@pytest.fixture(scope="module")
def registry() -> ConformanceRegistry:
    return ConformanceRegistry.from_directory(bundled_profiles_dir())


def task_profile(elements: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "StructureDefinition",
        "url": "http://example.org/StructureDefinition/t",
        "type": "Task",
        "baseDefinition": "http://hl7.org/fhir/StructureDefinition/Task",
        "derivation": "constraint",
        "differential": {"element": elements},
    }


def by_id(elements: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["id"]: e for e in elements}


def test_committed_snapshots_are_current(registry: ConformanceRegistry) -> None:
    own = registry.own_profiles()
    fresh = generate_snapshots(own, registry.structure_definition)
    assert len(own) == 17
    for sd in own:
        assert sd["snapshot"]["element"] == fresh[sd["url"]], sd["url"]


def test_nested_datatype_element_is_unfolded_in_place(registry: ConformanceRegistry) -> None:
    diff = [{"id": "Task.restriction.period.end", "path": "Task.restriction.period.end", "min": 1}]
    elements = generate_snapshot(task_profile(diff), registry.structure_definition)
    ids = [e["id"] for e in elements]
    at = ids.index("Task.restriction.period")
    assert ids[at + 1 : at + 5] == [
        "Task.restriction.period.id",
        "Task.restriction.period.extension",
        "Task.restriction.period.start",
        "Task.restriction.period.end",
    ]
    assert ids[at + 5] == "Task.restriction.recipient"
    end = by_id(elements)["Task.restriction.period.end"]
    assert (end["min"], end["base"]["path"]) == (1, "Period.end")


def test_slice_is_placed_after_its_sliced_element(registry: ConformanceRegistry) -> None:
    diff = [
        {
            "id": "Task.identifier",
            "path": "Task.identifier",
            "slicing": {"discriminator": [{"type": "value", "path": "system"}], "rules": "open"},
        },
        {"id": "Task.identifier:a", "path": "Task.identifier", "sliceName": "a", "max": "1"},
        {"id": "Task.identifier:a.system", "path": "Task.identifier.system", "fixedUri": "urn:x"},
    ]
    elements = generate_snapshot(task_profile(diff), registry.structure_definition)
    ids = [e["id"] for e in elements]
    at = ids.index("Task.identifier:a")
    assert ids[at - 1] == "Task.identifier"
    assert by_id(elements)["Task.identifier:a.system"]["fixedUri"] == "urn:x"
    assert by_id(elements)["Task.identifier:a.system"]["path"] == "Task.identifier.system"
    assert "slicing" not in by_id(elements)["Task.identifier:a"]


def test_constraints_are_appended_with_their_source(registry: ConformanceRegistry) -> None:
    rule = {"key": "x-1", "severity": "error", "human": "h", "expression": "status.exists()"}
    elements = generate_snapshot(
        task_profile([{"id": "Task", "path": "Task", "constraint": [rule]}]),
        registry.structure_definition,
    )
    keys = [c["key"] for c in elements[0]["constraint"]]
    assert keys[-1] == "x-1"
    assert "inv-1" in keys
    assert elements[0]["constraint"][-1]["source"] == "http://example.org/StructureDefinition/t"


@pytest.mark.parametrize(
    ("element", "message"),
    [
        ({"id": "Task.status", "path": "Task.status", "min": 0}, "below the base min"),
        ({"id": "Task.for", "path": "Task.for", "max": "2"}, "widens the base max"),
        ({"id": "Task.nothing", "path": "Task.nothing"}, "not in the base definition"),
        ({"id": "Task.input.value[x].id", "path": "Task.input.value[x].id"}, "types"),
    ],
)
def test_bad_differentials_are_refused(
    registry: ConformanceRegistry, element: dict[str, Any], message: str
) -> None:
    with pytest.raises(ProfileError, match=message):
        generate_snapshot(task_profile([element]), registry.structure_definition)


def test_profiles_are_valid_constraint_definitions(registry: ConformanceRegistry) -> None:
    for sd in registry.own_profiles():
        assert sd["derivation"] == "constraint"
        assert sd["fhirVersion"] == "4.0.1"
        assert sd["url"] == f"{B}/StructureDefinition/{sd['id']}"
        ids = [e["id"] for e in sd["snapshot"]["element"]]
        assert len(ids) == len(set(ids)), sd["id"]
        assert all(
            e["path"] == e["id"].split(":")[0] or ":" in e["id"] for e in sd["snapshot"]["element"]
        )


def test_code_systems_match_the_mapping_files(registry: ConformanceRegistry) -> None:
    spec = yaml.safe_load(
        (bundled_profiles_dir().parent / "mappings" / "code-systems.yaml").read_text()
    )
    terminology = Terminology(registry)
    for entry in spec.values():
        url = f"{B}/{entry['url']}"
        assert terminology.system_codes(url) == frozenset(entry["concepts"]), url
        name = entry["url"].rpartition("/")[2]
        assert terminology.codes(f"{B}/ValueSet/{name}") == frozenset(entry["concepts"])


def test_value_set_expansion_rules(registry: ConformanceRegistry) -> None:
    terminology = Terminology(registry)
    assert terminology.codes("http://hl7.org/fhir/ValueSet/task-status|4.0.1") is not None
    assert "ready" in (terminology.codes("http://hl7.org/fhir/ValueSet/task-status") or set())
    assert terminology.expand("http://example.org/ValueSet/unknown") is None
    local = copy.deepcopy(registry)
    local.add(
        {
            "resourceType": "ValueSet",
            "url": "http://example.org/vs",
            "compose": {
                "include": [{"valueSet": ["http://hl7.org/fhir/ValueSet/task-status"]}],
                "exclude": [
                    {"system": "http://hl7.org/fhir/task-status", "concept": [{"code": "ready"}]}
                ],
            },
        },
        source="test",
    )
    codes = Terminology(local).codes("http://example.org/vs") or set()
    assert "draft" in codes
    assert "ready" not in codes
