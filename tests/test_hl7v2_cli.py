"""``cm-fhir adt inspect``: text and JSON output, error positions and exit statuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cm_fhir.cli import app
from hl7v2_samples import ADT_A01_V251, ADT_A03_V28, BATCH, NOT_HL7, adt_message


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.delenv("CM_FHIR_MAPPINGS_DIR", raising=False)
    return CliRunner()


def _write(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def test_text_output_one_block_per_message(runner: CliRunner, tmp_path: Path) -> None:
    batch = _write(tmp_path, "batch.hl7", BATCH.replace("\r", "\n"))
    discharge = _write(tmp_path, "a03.hl7", ADT_A03_V28)
    result = runner.invoke(app, ["adt", "inspect", str(batch), str(discharge)])
    assert result.exit_code == 0, result.output
    assert result.stdout.count("== ") == 3
    assert f"== {batch} message 2/2" in result.stdout
    assert "control id CTRL-0002" in result.stdout
    assert "disposition 03 -> skilled-nursing" in result.stdout


def test_json_output_holds_the_events(runner: CliRunner, tmp_path: Path) -> None:
    path = _write(tmp_path, "a01.hl7", ADT_A01_V251)
    result = runner.invoke(app, ["adt", "inspect", "--json", str(path)])
    assert result.exit_code == 0, result.output
    [entry] = json.loads(result.stdout)
    [message] = entry["messages"]
    event = message["result"]
    assert (event["event"], event["structure"]) == ("A01", "ADT_A01")
    assert event["visit"]["patient_class"] == {
        "source": "I",
        "target": "IMP",
        "mapped": True,
        "display": None,
    }
    assert event["patient"]["identifiers"][1]["value"] == "ENT5550"


def test_parse_error_exits_1_and_names_the_position(runner: CliRunner, tmp_path: Path) -> None:
    good = _write(tmp_path, "good.hl7", ADT_A01_V251)
    bad = _write(tmp_path, "bad.hl7", ADT_A01_V251.replace("20240305093000+0100", "2024133"))
    result = runner.invoke(app, ["adt", "inspect", "--json", str(good), str(bad)])
    assert result.exit_code == 1
    entries = json.loads(result.stdout)
    assert entries[1]["messages"][0]["error"]["location"] == "PV1-44"
    assert entries[1]["messages"][0]["error"]["type"] == "Hl7ParseError"
    assert "result" in entries[0]["messages"][0]


def test_text_error_goes_to_stderr_with_its_position(runner: CliRunner, tmp_path: Path) -> None:
    bad = _write(tmp_path, "not.hl7", NOT_HL7)
    result = runner.invoke(app, ["adt", "inspect", str(bad)])
    assert result.exit_code == 1
    assert "ERROR at MSH" in result.stderr
    assert result.stdout == ""


def test_unreadable_file_exits_2(runner: CliRunner, tmp_path: Path) -> None:
    good = _write(tmp_path, "good.hl7", ADT_A01_V251)
    result = runner.invoke(app, ["adt", "inspect", str(good), str(tmp_path / "missing.hl7")])
    assert result.exit_code == 2
    assert "cannot read file" in result.stderr
    assert "control id CTRL-0001" in result.stdout


def test_unsupported_event_is_shown_as_ignored(runner: CliRunner, tmp_path: Path) -> None:
    path = _write(tmp_path, "a09.hl7", adt_message("A09", "2.5"))
    result = runner.invoke(app, ["adt", "inspect", str(path)])
    assert result.exit_code == 0
    assert "ignored ADT^A09 (ADT event not supported)" in result.stdout


def test_timezone_option_makes_naive_times_aware(runner: CliRunner, tmp_path: Path) -> None:
    path = _write(
        tmp_path, "a01.hl7", ADT_A01_V251.replace("20240305093000+0100", "20240305093000")
    )
    result = runner.invoke(app, ["adt", "inspect", "--json", "--timezone", "UTC", str(path)])
    assert result.exit_code == 0, result.output
    event = json.loads(result.stdout)[0]["messages"][0]["result"]
    assert event["visit"]["admit_time"] == "2024-03-05T09:30:00Z"


def test_bad_timezone_exits_2(runner: CliRunner, tmp_path: Path) -> None:
    path = _write(tmp_path, "a01.hl7", ADT_A01_V251)
    result = runner.invoke(app, ["adt", "inspect", "--timezone", "Mars/Olympus", str(path)])
    assert result.exit_code == 2
    assert "unknown time zone" in result.stderr
