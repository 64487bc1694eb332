"""`cm-fhir validate` and `cm-fhir profiles snapshot`: output and exit status."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from cm_fhir.cli import app
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
    assert "0 error(s), 0 warning(s)" in result.output


def test_errors_exit_1_and_are_printed(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.json", {**PATIENT, "active": "yes", "gender": "unknownish"})
    result = runner.invoke(app, ["validate", str(bad)])
    assert result.exit_code == 1
    assert "error Patient.active: active must be a JSON boolean" in result.output
    assert "error Patient.gender:" in result.output
    assert "2 error(s)" in result.output


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
    assert "broken.json" in result.output
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
