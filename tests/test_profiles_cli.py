"""`cm-fhir validate` and `cm-fhir profiles snapshot`: output and exit status."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from cm_fhir.cli import app
from cm_fhir.domain import Case
from cm_fhir.fhir import map_case_json
from cm_fhir.profiles import bundled_profiles_dir

runner = CliRunner()
PATIENT = {"resourceType": "Patient", "id": "p1", "active": True}


def write(tmp_path: Path, name: str, document: Any) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(document))
    return path


def test_valid_file_exits_0(tmp_path: Path) -> None:
    result = runner.invoke(app, ["validate", str(write(tmp_path, "ok.json", PATIENT))])
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith("ok.json: OK")


def test_errors_exit_1_and_are_printed(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.json", {**PATIENT, "active": "yes", "gender": "unknownish"})
    result = runner.invoke(app, ["validate", str(bad)])
    assert result.exit_code == 1
    assert "error Patient.active: active must be a JSON boolean" in result.output
    assert "error Patient.gender:" in result.output
    assert result.output.strip().endswith("bad.json: 2 errors")


def test_profile_option_applies_a_profile(tmp_path: Path) -> None:
    task = {"resourceType": "Task", "status": "draft", "intent": "order"}
    path = write(tmp_path, "task.json", task)
    assert runner.invoke(app, ["validate", str(path)]).exit_code == 0
    url = "http://cm-fhir.org/fhir/StructureDefinition/cm-task"
    result = runner.invoke(app, ["validate", str(path), "--profile", url, "--json"])
    assert result.exit_code == 1
    outcome = json.loads(result.output)["outcome"]
    assert "Task.owner" in [i["expression"][0] for i in outcome["issue"]]


def test_unreadable_input_exits_2_naming_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    result = runner.invoke(app, ["validate", str(broken)])
    assert result.exit_code == 2
    assert "broken.json:1:2: not valid JSON" in result.output
    assert "JSONDecodeError" not in result.output
    missing = runner.invoke(app, ["validate", str(tmp_path / "absent.json")])
    assert missing.exit_code == 2
    assert "absent.json" in missing.output


def test_snapshot_check_and_regenerate(tmp_path: Path) -> None:
    folder = tmp_path / "profiles"
    shutil.copytree(bundled_profiles_dir(), folder)
    assert (
        runner.invoke(app, ["profiles", "snapshot", "--dir", str(folder), "--check"]).exit_code == 0
    )
    target = folder / "StructureDefinition-cm-task.json"
    sd = json.loads(target.read_text())
    sd["differential"]["element"].append({"id": "Task.note", "path": "Task.note", "min": 1})
    target.write_text(json.dumps(sd))
    stale = runner.invoke(app, ["profiles", "snapshot", "--dir", str(folder), "--check"])
    assert stale.exit_code == 1
    assert "StructureDefinition-cm-task.json" in stale.output
    assert runner.invoke(app, ["profiles", "snapshot", "--dir", str(folder)]).exit_code == 0
    regenerated = json.loads(target.read_text())["snapshot"]["element"]
    assert next(e for e in regenerated if e["id"] == "Task.note")["min"] == 1
    result = runner.invoke(
        app, ["validate", "--profiles-dir", str(folder), str(write(tmp_path, "t.json", {}))]
    )
    assert result.exit_code == 1  # {} is not a resource


def test_broken_profile_folder_exits_2(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("[1, 2]")
    path = write(tmp_path / "..", "p.json", PATIENT)
    result = runner.invoke(app, ["validate", "--profiles-dir", str(tmp_path), str(path)])
    assert result.exit_code == 2
    assert "bad.json" in result.output


def _example_bundle(tmp_path: Path) -> Path:
    """A mapped example with warnings and no errors (must-support and extension context)."""
    example = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.json"))[0]
    case = Case.model_validate(json.loads(example.read_text(encoding="utf-8")))
    path = tmp_path / "bundle.json"
    path.write_bytes(map_case_json(case, validate=False))
    return path


def test_warnings_are_counted_in_the_summary_and_shown_only_with_v(tmp_path: Path) -> None:
    path = _example_bundle(tmp_path)
    plain = runner.invoke(app, ["validate", str(path)])
    assert plain.exit_code == 0, plain.output
    lines = plain.output.strip().splitlines()
    assert len(lines) == 1, "without -v only the summary line"
    assert "warning" in lines[0]
    assert "-v shows warnings" in lines[0]
    verbose = runner.invoke(app, ["validate", "-v", str(path)])
    shown = [line for line in verbose.output.splitlines() if ": warning " in line]
    warnings = int(lines[0].split(" warning")[0].rsplit(" ", 1)[-1])
    assert len(shown) == warnings > 0
    assert "information" not in verbose.output
    assert ": information " in runner.invoke(app, ["validate", "-vv", str(path)]).output


def test_quiet_prints_only_summaries(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.json", {**PATIENT, "active": "yes"})
    good = write(tmp_path, "good.json", PATIENT)
    result = runner.invoke(app, ["validate", "-q", str(bad), str(good)])
    assert result.exit_code == 1
    assert result.output.splitlines() == [f"{bad}: 1 error", f"{good}: OK"]


def test_a_profile_folder_without_structure_definitions_is_a_clear_error(tmp_path: Path) -> None:
    folder = tmp_path / "profiles"
    folder.mkdir()
    (folder / "vs.json").write_text(
        json.dumps({"resourceType": "ValueSet", "url": "http://example.org/vs", "status": "draft"})
    )
    result = runner.invoke(
        app, ["validate", "--profiles-dir", str(folder), str(write(tmp_path, "p.json", PATIENT))]
    )
    assert result.exit_code == 2
    assert "holds no StructureDefinition" in result.output
    assert str(folder) in result.output
