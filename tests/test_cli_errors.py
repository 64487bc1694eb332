"""Failures at run time reach the user as one line: ports in use, databases that are not there or
cannot be reached, listeners that refuse, mapping folders with problems. Exit 2 for unusable
input, 1 for a failed check; never a traceback or an exception class name."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cm_fhir.cli import app
from hl7v2_samples import ADT_A01_V251

CLASS_NAME = re.compile(r"\b[A-Z][A-Za-z]+(Error|Exception)\b")


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    for name in list(os.environ):
        if name.startswith("CM_FHIR_") or name == "DATABASE_URL":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return CliRunner()


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port on 127.0.0.1 that something else is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield sock.getsockname()[1]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _one_error(result: object, status: int) -> str:
    stderr: str = result.stderr  # type: ignore[attr-defined]
    assert getattr(result, "exit_code", None) == status, stderr
    exception = getattr(result, "exception", None)
    assert exception is None or isinstance(exception, SystemExit), repr(exception)
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    assert not CLASS_NAME.search(stderr + result.output), stderr  # type: ignore[attr-defined]
    return lines[0]


def test_serve_names_the_api_address_in_use(runner: CliRunner, busy_port: int) -> None:
    result = runner.invoke(app, ["serve", "--role", "api", "--http-port", str(busy_port)])
    line = _one_error(result, 2)
    assert f"127.0.0.1:{busy_port}" in line
    assert "http.port" in line


def test_serve_and_listen_name_the_mllp_address_in_use(runner: CliRunner, busy_port: int) -> None:
    for args in (
        ["serve", "--http-port", "0", "--mllp-port", str(busy_port)],
        ["listen", "--port", str(busy_port)],
    ):
        line = _one_error(runner.invoke(app, args), 2)
        assert f"127.0.0.1:{busy_port}" in line
        assert "mllp.port" in line


@pytest.mark.parametrize(
    "args", [["replay", "--all"], ["replay", "--dead-letter", "1"], ["db", "current"]]
)
def test_commands_on_a_database_that_is_not_there_name_it_and_create_nothing(
    runner: CliRunner, tmp_path: Path, args: list[str]
) -> None:
    line = _one_error(runner.invoke(app, args), 2)
    assert str(tmp_path / "cm-fhir-data" / "cm-fhir.sqlite3") in line
    assert "cm-fhir db upgrade" in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "args", [["db", "upgrade"], ["db", "current"], ["db", "history"], ["replay", "--all"]]
)
def test_an_unreachable_postgresql_server_is_named(runner: CliRunner, args: list[str]) -> None:
    url = f"postgresql://cm:secret-password@127.0.0.1:{_closed_port()}/cm"
    line = _one_error(runner.invoke(app, [*args, "--database-url", url]), 2)
    assert "127.0.0.1" in line
    assert "secret-password" not in line


def test_replay_of_a_row_that_is_not_a_dead_letter_is_a_failed_check(runner: CliRunner) -> None:
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    line = _one_error(runner.invoke(app, ["replay", "--dead-letter", "7"]), 1)
    assert "inbox row 7 is not a dead letter" in line
    assert runner.invoke(app, ["replay", "--all"]).output == "0 row(s) back in the queue\n"


def test_adt_send_to_a_closed_port_names_it(runner: CliRunner, tmp_path: Path) -> None:
    message = tmp_path / "a01.hl7"
    message.write_text(ADT_A01_V251)
    port = _closed_port()
    line = _one_error(runner.invoke(app, ["adt", "send", str(message), "--port", str(port)]), 1)
    assert f"cannot reach 127.0.0.1:{port}" in line
    assert "Connection refused" in line


def test_adt_send_takes_the_listener_address_from_the_config_file(
    runner: CliRunner, tmp_path: Path
) -> None:
    port = _closed_port()
    config = tmp_path / "site.toml"
    config.write_text(f'[mllp]\nhost = "0.0.0.0"\nport = {port}\nallow_public_bind = true\n')
    message = tmp_path / "a01.hl7"
    message.write_text(ADT_A01_V251)
    line = _one_error(runner.invoke(app, ["adt", "send", str(message), "--config", str(config)]), 1)
    assert f"127.0.0.1:{port}" in line  # a bind-all address is reached on loopback


def test_mappings_check_exit_statuses(runner: CliRunner, tmp_path: Path) -> None:
    missing = _one_error(runner.invoke(app, ["mappings", "check", "no-such-folder"]), 2)
    assert "no-such-folder" in missing
    site = tmp_path / "site"
    site.mkdir()
    (site / "discharge-rules.yaml").write_text("case_id_prefix: 7\n")
    result = runner.invoke(app, ["mappings", "check", "--mappings", str(site)])
    assert result.exit_code == 1  # read, but has problems: a failed check
    assert "discharge-rules.yaml" in result.stderr
    assert "case_id_prefix" in result.stderr
    ok = runner.invoke(app, ["mappings", "check"])
    assert ok.exit_code == 0
    assert ok.output.startswith("ok: ")


def test_validate_names_the_file_and_position_of_bad_json(
    runner: CliRunner, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"resourceType": "Patient",\n  oops}')
    line = _one_error(runner.invoke(app, ["validate", str(bad)]), 2)
    assert f"{bad}:2:3: not valid JSON" in line


def test_an_unexpected_failure_is_one_line_without_a_traceback(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cm_fhir.store import engine

    def broken() -> list[tuple[str, str]]:
        raise RuntimeError("the revision list is broken")

    monkeypatch.setattr(engine, "revision_history", broken)
    line = _one_error(runner.invoke(app, ["db", "history"]), 1)
    assert "unexpected failure: the revision list is broken" in line
