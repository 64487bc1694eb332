"""Every example case in examples/ maps to a valid R4 Bundle and reads back unchanged."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from cm_fhir.domain import Case
from cm_fhir.fhir import case_from_bundle, map_case, map_case_json, validate_bundle
from cm_fhir.fhir.bundle import bundle_resources

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.json"))


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 5


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_maps_validates_and_round_trips(path: Path) -> None:
    case = Case.model_validate_json(path.read_text(encoding="utf-8"))
    bundle = map_case(case)
    validate_bundle(bundle)
    kinds = Counter(r["resourceType"] for r in bundle_resources(bundle))
    assert {"EpisodeOfCare", "CarePlan", "Goal", "Task"} <= kinds.keys()
    assert kinds["EpisodeOfCare"] == 1
    back = case_from_bundle(bundle)
    assert back == case
    assert map_case_json(back) == map_case_json(case)
