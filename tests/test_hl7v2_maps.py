"""The ADT concept-map spec: bundled file, site overrides, validation and unmapped policies."""

from __future__ import annotations

from pathlib import Path

import pytest

from cm_fhir.errors import MappingError, MappingSpecError
from cm_fhir.hl7v2.events import MappedCode
from cm_fhir.mapping.adt_maps import (
    ADT_CONCEPT_MAPS_FILE,
    AdtConceptMaps,
    CodeMap,
    load_adt_concept_maps,
)
from cm_fhir.mapping.catalog import check_mappings
from cm_fhir.mapping.loader import bundled_mappings_dir, load_yaml_model
from cm_fhir.mapping.registry import default_registry


def test_bundled_file_loads_and_covers_the_core_codes() -> None:
    maps = load_yaml_model(bundled_mappings_dir() / ADT_CONCEPT_MAPS_FILE, AdtConceptMaps)
    assert maps.patient_class.map["I"] == "IMP"
    assert maps.patient_class.map["E"] == "EMER"
    assert maps.patient_class.map["O"] == "AMB"
    assert maps.discharge_disposition.map["01"] == "home"
    assert maps.discharge_disposition.map["07"] == "against-medical-advice"
    assert maps.discharge_disposition.map["20"] == "expired"
    assert maps.discharge_disposition.unmapped == "report"
    dispositions = default_registry().code_systems["discharge_disposition"].concepts
    assert set(maps.discharge_disposition.map.values()) == set(dispositions)


def test_site_override_is_merged_over_the_bundled_map(tmp_path: Path) -> None:
    (tmp_path / ADT_CONCEPT_MAPS_FILE).write_text(
        "discharge_disposition:\n"
        "  map:\n"
        '    "01": home-health\n'
        '    "HOM": home\n'
        "  unmapped: default\n"
        "  default: other\n",
        encoding="utf-8",
    )
    maps = load_adt_concept_maps(tmp_path)
    disposition = maps.discharge_disposition
    assert disposition.lookup("01", "PV1-36").target == "home-health"
    assert disposition.lookup("HOM", "PV1-36").target == "home"
    assert disposition.lookup("03", "PV1-36").target == "skilled-nursing"
    assert disposition.lookup("XYZ", "PV1-36") == MappedCode(
        source="XYZ", target="other", mapped=False
    )
    assert maps.patient_class.map["I"] == "IMP"


def test_site_override_with_an_unknown_target_names_file_and_key(tmp_path: Path) -> None:
    (tmp_path / ADT_CONCEPT_MAPS_FILE).write_text(
        'discharge_disposition:\n  map:\n    "01": moon-base\n', encoding="utf-8"
    )
    load_adt_concept_maps(tmp_path)  # the file alone is well formed; the code is unknown
    [problem] = check_mappings(tmp_path).problems
    assert problem.file.startswith(str(tmp_path / ADT_CONCEPT_MAPS_FILE))
    assert problem.key == "discharge_disposition.map.01"
    assert "unknown code 'moon-base'" in problem.reason


def test_unknown_key_is_refused(tmp_path: Path) -> None:
    (tmp_path / ADT_CONCEPT_MAPS_FILE).write_text("patient_class:\n  mapp: {}\n", encoding="utf-8")
    with pytest.raises(MappingSpecError) as caught:
        load_adt_concept_maps(tmp_path)
    assert caught.value.key == "patient_class.mapp"
    assert caught.value.reason == "unknown key"


def test_patient_class_target_must_be_an_act_code(tmp_path: Path) -> None:
    (tmp_path / ADT_CONCEPT_MAPS_FILE).write_text(
        "patient_class:\n  map:\n    I: inpatient\n", encoding="utf-8"
    )
    with pytest.raises(MappingSpecError) as caught:
        load_adt_concept_maps(tmp_path)
    assert caught.value.key == "patient_class"


@pytest.mark.parametrize(
    ("unmapped", "default"), [("default", None), ("report", "other"), ("error", "other")]
)
def test_default_goes_with_the_default_policy_only(unmapped: str, default: str | None) -> None:
    with pytest.raises(ValueError, match="default"):
        CodeMap.model_validate({"map": {}, "unmapped": unmapped, "default": default})


def test_lookup_policies() -> None:
    report = CodeMap(map={"A": "IMP"})
    assert report.lookup(" a ", "PV1-2") == MappedCode(source="a", target="IMP", mapped=True)
    assert report.lookup("B", "PV1-2") == MappedCode(source="B", target=None, mapped=False)
    strict = CodeMap(map={"A": "IMP"}, unmapped="error", case_sensitive=True)
    with pytest.raises(MappingError) as caught:
        strict.lookup("a", "PV1-2")
    assert caught.value.path == "PV1-2"
    assert str(caught.value) == "PV1-2: code is not in the concept map"
