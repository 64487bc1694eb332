"""The mapping files: bundled ones load; bad files fail naming file, key path and reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from cm_fhir.domain import AssessmentKind, CaseStatus
from cm_fhir.errors import MappingSpecError
from cm_fhir.mapping.catalog import check_mappings
from cm_fhir.mapping.loader import OVERRIDE_ENV, bundled_mappings_dir, deep_merge, read_yaml
from cm_fhir.mapping.registry import assessment_task_code, build_registry, load_registry
from cm_fhir.mapping.spec import CodeSystemsSpec, FhirIdentitySpec, StatusMapsSpec


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_bundled_mappings_load_and_resolve_relative_urls() -> None:
    registry = load_registry()
    base = registry.canonical_base
    assert registry.system("case") == f"{base}/sid/case"
    assert registry.profile("task") == f"{base}/StructureDefinition/cm-task"
    # absolute URLs stay as they are
    assert registry.extension("episode_of_care").startswith("http://hl7.org/fhir/")
    assert registry.case_status_to_fhir[CaseStatus.TRANSITION] == "active"
    for kind in AssessmentKind:
        assert assessment_task_code(kind) in registry.code_systems["task_code"].concepts


def test_check_reports_every_bundled_file_ok() -> None:
    report = check_mappings()
    assert report.ok, report.problems
    bundled = {p.name for p in bundled_mappings_dir().glob("*.yaml")}
    assert set(report.checked) == bundled


def test_unknown_key_names_file_and_key_path(tmp_path: Path) -> None:
    write(tmp_path, "fhir-identity.yaml", "identifier_systems:\n  casee: sid/x\n")
    with pytest.raises(MappingSpecError) as info:
        load_registry(tmp_path)
    err = info.value
    assert err.file.endswith("fhir-identity.yaml (over fhir-identity.yaml)")
    assert err.key == "identifier_systems.casee"
    assert err.reason == "unknown key"


def test_wrong_type_is_reported_with_reason(tmp_path: Path) -> None:
    write(tmp_path, "status-maps.yaml", "case_to_episode_of_care:\n  active: running\n")
    with pytest.raises(MappingSpecError) as info:
        load_registry(tmp_path)
    assert info.value.key == "case_to_episode_of_care.active"
    assert "planned" in info.value.reason  # the allowed values are listed


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "code-systems.yaml", "programme:\n  url: [unclosed\n  title: x\n")
    with pytest.raises(MappingSpecError) as info:
        read_yaml(path)
    assert str(path) in str(info.value)
    assert "line" in info.value.key


def test_a_code_the_domain_relies_on_must_be_listed() -> None:
    folder = bundled_mappings_dir()
    code_systems = read_yaml(folder / "code-systems.yaml")
    del code_systems["discharge_disposition"]["concepts"]["expired"]
    with pytest.raises(MappingSpecError) as info:
        build_registry(
            FhirIdentitySpec.model_validate(read_yaml(folder / "fhir-identity.yaml")),
            CodeSystemsSpec.model_validate(code_systems),
            StatusMapsSpec.model_validate(read_yaml(folder / "status-maps.yaml")),
        )
    assert info.value.key == "discharge_disposition.concepts"
    assert info.value.reason == "missing codes the domain uses: ['expired']"


def test_deep_merge_merges_mappings_and_replaces_lists() -> None:
    base = {"a": {"x": 1, "y": [1, 2]}, "b": 2}
    assert deep_merge(base, {"a": {"y": [3]}, "c": 4}) == {"a": {"x": 1, "y": [3]}, "b": 2, "c": 4}


def test_site_override_merges_over_bundled(tmp_path: Path) -> None:
    write(tmp_path, "fhir-identity.yaml", "canonical_base: https://fhir.example-hospital.org/cm\n")
    registry = load_registry(tmp_path)
    assert registry.system("task") == "https://fhir.example-hospital.org/cm/sid/task"
    # untouched keys still come from the bundled file
    assert registry.extension("episode_of_care").startswith("http://hl7.org/fhir/")


def test_override_folder_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "code-systems.yaml", "programme:\n  title: Site programmes\n")
    monkeypatch.setenv(OVERRIDE_ENV, str(tmp_path))
    assert load_registry().code_systems["programme"].title == "Site programmes"


def test_check_collects_problems_from_a_site_folder(tmp_path: Path) -> None:
    write(tmp_path, "status-maps.yaml", "case_to_episode_of_care:\n  closed: done\n")
    write(tmp_path, "typo-maps.yaml", "x: 1\n")
    report = check_mappings(tmp_path)
    assert not report.ok
    messages = [str(p) for p in report.problems]
    assert any("typo-maps.yaml" in m and "unknown file" in m for m in messages)
    assert any("case_to_episode_of_care.closed" in m for m in messages)


def test_check_of_a_missing_folder(tmp_path: Path) -> None:
    report = check_mappings(tmp_path / "absent")
    assert [p.reason for p in report.problems] == ["not a folder"]
