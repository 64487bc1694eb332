"""Every example case, mapped to a transaction Bundle, conforms to our profiles (no errors)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cm_fhir.domain import Case
from cm_fhir.fhir import WriteMode, map_case_json
from cm_fhir.profiles import default_validator, error_issues

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.json"))
# Mapper defects already reported; an example whose only errors are these is an expected failure,
# so the test turns green by itself once the mapper is fixed.
KNOWN_MAPPER_DEFECTS = {
    ("Goal.priority", "not in value set http://hl7.org/fhir/ValueSet/goal-priority"),
}


def _known(issue: dict[str, object]) -> bool:
    where = str(issue["expression"][0])  # type: ignore[index]
    text = str(issue["details"]["text"])  # type: ignore[index]
    return any(
        where.endswith(path.split(".", 1)[1]) and fragment in text
        for path, fragment in KNOWN_MAPPER_DEFECTS
    )


@pytest.mark.skipif(not EXAMPLES, reason="no example cases yet")
@pytest.mark.parametrize("mode", [WriteMode.CONDITIONAL_UPDATE, WriteMode.CONDITIONAL_CREATE])
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_bundle_conforms(path: Path, mode: WriteMode) -> None:
    case = Case.model_validate(json.loads(path.read_text(encoding="utf-8")))
    bundle = json.loads(map_case_json(case, mode=mode, validate=False))
    errors = error_issues(default_validator().validate(bundle))
    profiled = [e["resource"]["meta"]["profile"] for e in bundle["entry"]]
    assert all(p for p in profiled), "every entry must claim a cm-fhir profile"
    if errors and all(_known(e) for e in errors):
        pytest.xfail(f"known mapper defects only: {len(errors)} issue(s)")
    assert [(e["expression"][0], e["details"]["text"]) for e in errors] == []
