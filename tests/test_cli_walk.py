"""Every ``cm-fhir`` command, found by walking the typer app, given bad input: no traceback, no
exception class name, one ``error:`` line naming the file or setting, exit 2, nothing created.

A command added later is walked too; the shared settings flags it declares (``--config``,
``--database-url``, ``--log-level``, ``--timezone``, ``--mappings``) are each given a bad value.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from cm_fhir.cli import app

CLASS_NAME = re.compile(r"\b[A-Z][A-Za-z]+(Error|Exception|Refused|NotFound)\b")
# Arguments a command needs before it looks at anything else.
BASE_ARGS: dict[tuple[str, ...], list[str]] = {("replay",): ["--all"]}


def _commands() -> Iterator[tuple[tuple[str, ...], object]]:
    def walk(command: object, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], object]]:
        children = getattr(command, "commands", None)
        if children is None:
            yield path, command
            return
        for name, child in sorted(children.items()):
            yield from walk(child, (*path, name))

    yield from walk(typer.main.get_command(app), ())


COMMANDS = dict(_commands())


def _options(command: object) -> set[str]:
    return {opt for param in getattr(command, "params", []) for opt in getattr(param, "opts", [])}


def _required_args(command: object, tmp_path: Path) -> list[str]:
    params = getattr(command, "params", [])
    return [
        str(tmp_path / "missing-input.file")
        for param in params
        if param.param_type_name == "argument" and param.required
    ]


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    for name in list(os.environ):
        if name.startswith("CM_FHIR_") or name == "DATABASE_URL":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return CliRunner()


def _check(result: object, status: int, named: str | None = None) -> None:
    output = getattr(result, "output", "") + getattr(result, "stderr", "")
    exception = getattr(result, "exception", None)
    assert exception is None or isinstance(exception, SystemExit), repr(exception)
    assert "Traceback" not in output
    assert not CLASS_NAME.search(output), output
    assert getattr(result, "exit_code", None) == status, output
    if named is not None:
        errors = [line for line in result.stderr.splitlines() if line.strip()]  # type: ignore[attr-defined]
        assert len(errors) == 1, errors
        assert errors[0].startswith("error: "), errors
        assert named in errors[0], errors


def test_the_walk_finds_every_command() -> None:
    expected = {
        ("serve",), ("listen",), ("worker",), ("replay",), ("demo",), ("map",), ("validate",),
        ("db", "upgrade"), ("db", "current"), ("db", "history"), ("adt", "inspect"),
        ("adt", "send"), ("mappings", "check"), ("config", "example"), ("config", "show"),
    }  # fmt: skip
    assert expected <= set(COMMANDS)


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=" ".join)
def test_an_unknown_option_is_a_usage_error(
    runner: CliRunner, tmp_path: Path, path: tuple[str, ...]
) -> None:
    result = runner.invoke(app, [*path, "--no-such-option"])
    _check(result, 2)
    assert "No such option" in result.output + result.stderr
    assert list(tmp_path.iterdir()) == []


SETTINGS_COMMANDS = sorted(p for p, c in COMMANDS.items() if "--config" in _options(c))


def test_the_commands_that_use_settings_take_the_shared_flags() -> None:
    names = {p[0] if len(p) == 1 else " ".join(p) for p in SETTINGS_COMMANDS}
    assert {
        "serve",
        "listen",
        "worker",
        "replay",
        "db upgrade",
        "db current",
        "db history",
    } <= names
    assert {"adt inspect", "adt send", "map", "mappings check", "config show"} <= names
    for path in SETTINGS_COMMANDS:
        options = _options(COMMANDS[path])
        if path[0] in ("serve", "listen", "worker", "replay", "db") or path == ("adt", "inspect"):
            assert {"--database-url", "--data-dir", "--database-schema"} <= options, path


@pytest.mark.parametrize("path", SETTINGS_COMMANDS, ids=" ".join)
def test_a_missing_or_broken_config_file_is_named(
    runner: CliRunner, tmp_path: Path, path: tuple[str, ...]
) -> None:
    args = [*path, *BASE_ARGS.get(path, []), *_required_args(COMMANDS[path], tmp_path)]
    _check(runner.invoke(app, [*args, "--config", "absent.toml"]), 2, "absent.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[http\n")
    _check(runner.invoke(app, [*args, "--config", str(broken)]), 2, "broken.toml")
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[http]\nprot = 8080\n")
    _check(runner.invoke(app, [*args, "--config", str(unknown)]), 2, "http.prot")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.toml", "unknown.toml"]


BAD_VALUES = {
    "--database-url": ("mysql://db/cm", "database_url"),
    "--log-level": ("loud", "log.level"),
    "--timezone": ("Mars/Olympus", "timezone"),
    "--mappings": ("no-such-folder", "no-such-folder"),
    "--database-schema": ("two, schemas", "database_schema"),
}
BAD_FLAG_CASES = [
    (path, flag) for path, command in sorted(COMMANDS.items()) for flag in sorted(BAD_VALUES)
    if flag in _options(command)
]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "flag"), BAD_FLAG_CASES, ids=lambda v: "-".join(v) if isinstance(v, tuple) else v
)
def test_a_bad_setting_flag_is_named(
    runner: CliRunner, tmp_path: Path, path: tuple[str, ...], flag: str
) -> None:
    value, named = BAD_VALUES[flag]
    args = [*path, *BASE_ARGS.get(path, []), *_required_args(COMMANDS[path], tmp_path)]
    _check(runner.invoke(app, [*args, flag, value]), 2, named)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "path", sorted(p for p, c in COMMANDS.items() if _required_args(c, Path())), ids=" ".join
)
def test_a_missing_input_file_is_named(
    runner: CliRunner, tmp_path: Path, path: tuple[str, ...]
) -> None:
    result = runner.invoke(app, [*path, *_required_args(COMMANDS[path], tmp_path)])
    _check(result, 2)
    assert "missing-input.file" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_version(runner: CliRunner) -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert re.fullmatch(r"cm-fhir \d+\.\d+\.\d+\S*\n", result.output)


def test_help_screens_show_no_bool_placeholder(runner: CliRunner) -> None:
    for path in COMMANDS:
        result = runner.invoke(app, [*path, "--help"], terminal_width=120)
        assert result.exit_code == 0, path
        assert "<bool>" not in result.output, path
