"""``cm-fhir map``, ``schema``, ``mappings check`` and ``demo`` through the real command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cm_fhir.cli import app
from cm_fhir.domain import Case
from cm_fhir.fhir import case_from_bundle, validate_bundle

ROOT = Path(__file__).resolve().parents[1]
STROKE = ROOT / "examples" / "stroke-inpatient-rehab.json"
runner = CliRunner()


def test_map_prints_a_valid_transaction_bundle_that_reads_back() -> None:
    result = runner.invoke(app, ["map", str(STROKE)])
    assert result.exit_code == 0, result.output
    bundle = json.loads(result.stdout)
    assert bundle["type"] == "transaction"
    validate_bundle(bundle)
    assert case_from_bundle(bundle) == Case.model_validate_json(STROKE.read_bytes())


def test_map_to_a_file_is_byte_identical_across_runs(tmp_path: Path) -> None:
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    assert runner.invoke(app, ["map", str(STROKE), "-o", str(first)]).exit_code == 0
    assert runner.invoke(app, ["map", str(STROKE), "-o", str(second)]).exit_code == 0
    assert first.read_bytes() == second.read_bytes()


def test_map_conditional_create_mode() -> None:
    result = runner.invoke(app, ["map", str(STROKE), "--mode", "conditional-create"])
    entry = json.loads(result.stdout)["entry"][0]
    assert entry["request"]["method"] == "POST"
    assert entry["request"]["ifNoneExist"].startswith("identifier=")


def test_bad_case_document_names_json_paths_and_exits_2(tmp_path: Path) -> None:
    doc = json.loads(STROKE.read_text())
    doc["tasks"][1]["status"] = "finished"
    del doc["programme"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    result = runner.invoke(app, ["map", str(bad)])
    assert result.exit_code == 2
    assert f"{bad}: $.programme: Field required" in result.stderr
    assert f"{bad}: $.tasks[1].status: Input should be" in result.stderr
    assert "Traceback" not in result.output


def test_a_forbidden_state_is_a_clear_error(tmp_path: Path) -> None:
    doc = json.loads(STROKE.read_text())
    doc["tasks"][0]["care_plan"] = "no-such-plan"
    bad = tmp_path / "dangling.json"
    bad.write_text(json.dumps(doc))
    result = runner.invoke(app, ["map", str(bad)])
    assert result.exit_code == 2
    assert "names care plan 'no-such-plan', which is absent" in result.stderr


def test_invalid_json_names_line_and_column(tmp_path: Path) -> None:
    bad = tmp_path / "broken.json"
    bad.write_text('{\n  "id": "C-1",\n  "status": \n}')
    result = runner.invoke(app, ["map", str(bad)])
    assert result.exit_code == 2
    assert f"{bad}:4:1: not valid JSON" in result.stderr


def test_missing_file_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["map", str(tmp_path / "absent.json")])
    assert result.exit_code == 2
    assert "cannot read" in result.stderr


def test_schema_describes_the_case_document() -> None:
    result = runner.invoke(app, ["schema", "case"])
    schema = json.loads(result.stdout)
    assert schema["title"] == "Case"
    assert {"id", "patient", "programme", "status", "status_history"} <= set(schema["required"])
    assert "Task" in schema["$defs"]


def test_mappings_check_reports_a_bad_site_folder(tmp_path: Path) -> None:
    (tmp_path / "fhir-identity.yaml").write_text("profiles:\n  task: 42 is not a url\n")
    result = runner.invoke(app, ["mappings", "check", str(tmp_path)])
    assert result.exit_code == 1
    assert "fhir-identity.yaml" in result.stderr
    assert "profiles.task" in result.stderr
    assert runner.invoke(app, ["mappings", "check"]).exit_code == 0


def test_demo_maps_every_example(tmp_path: Path) -> None:
    result = runner.invoke(app, ["demo", "--once", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    examples = sorted((ROOT / "examples").glob("*.json"))
    assert len(list(tmp_path.glob("*.bundle.json"))) == len(examples)
    assert result.output.count("round trip ok") == len(examples)


@pytest.mark.parametrize("args", [["--help"], ["map", "--help"]])
def test_console_script_runs(args: list[str]) -> None:
    """The installed entry point works as a real process."""
    exe = Path(sys.executable).parent / "cm-fhir"
    proc = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Usage" in proc.stdout


def test_map_refuses_output_that_breaks_a_profile(tmp_path: Path) -> None:
    """A site override that moves the programme code system breaks cm-episodeofcare's type slice."""
    (tmp_path / "code-systems.yaml").write_text(
        "programme:\n  url: http://example.org/CodeSystem/local-programmes\n"
    )
    result = runner.invoke(app, ["map", str(STROKE), "--mappings", str(tmp_path)])
    assert result.exit_code == 1
    assert "error: " in result.stderr
    assert "Bundle.entry[0].resource.type" in result.stderr
    assert result.stdout == ""
    # without validation the Bundle is printed as it is
    unchecked = runner.invoke(
        app, ["map", str(STROKE), "--mappings", str(tmp_path), "--no-validate"]
    )
    assert unchecked.exit_code == 0
