"""The flags that find the database are declared once (:func:`cm_fhir.cli.options.store_options`):
every command that takes one of them takes all four, and a command receives them as one
:class:`~cm_fhir.cli.options.StoreOptions` whose settings honour each flag. The CLI starts without
importing the heavy libraries; the commands import them when they run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from cm_fhir.cli import app
from cm_fhir.cli.cases import CliWriteMode
from cm_fhir.cli.options import StoreOptions, store_options
from cm_fhir.fhir import WriteMode

STORE_FLAGS = {"--config", "--database-url", "--data-dir", "--database-schema"}
_NO_FLAGS = StoreOptions()


def _leaves(command: object, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], object]:
    children = getattr(command, "commands", None)
    if children is None:
        return {path: command}
    found: dict[tuple[str, ...], object] = {}
    for name, child in children.items():
        found.update(_leaves(child, (*path, name)))
    return found


def test_every_command_that_opens_the_database_takes_all_four_flags() -> None:
    leaves = _leaves(typer.main.get_command(app))
    with_store = []
    for path, command in leaves.items():
        flags = {o for p in getattr(command, "params", []) for o in getattr(p, "opts", [])}
        if flags & (STORE_FLAGS - {"--config"}):
            assert flags >= STORE_FLAGS, (path, sorted(STORE_FLAGS - flags))
            with_store.append(path)
    for expected in (("serve",), ("worker",), ("replay",), ("outbox", "resend"), ("db", "upgrade")):
        assert expected in with_store


def test_store_options_settings_honour_each_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith("CM_FHIR_") or name == "DATABASE_URL":
            monkeypatch.delenv(name)
    config = tmp_path / "cm-fhir.toml"
    config.write_text('timezone = "Europe/Paris"\ndatabase_schema = "from_file"\n')
    store = StoreOptions(config=config, data_dir=tmp_path / "data", database_schema="flagged")
    settings = store.settings(timezone=None)
    assert settings.timezone == "Europe/Paris"  # from the file
    assert settings.database_schema == "flagged"  # the flag wins over the file
    assert settings.data_dir == tmp_path / "data"
    url = "postgresql://app@db.example.org/cm"
    assert StoreOptions(database_url=url).settings().database_url == url


def test_a_command_receives_the_flags_as_one_value() -> None:
    seen: list[StoreOptions] = []
    cli = typer.Typer()

    @cli.command()
    @store_options
    def probe(
        name: str = typer.Argument(...), store: StoreOptions = _NO_FLAGS, loud: bool = False
    ) -> None:
        seen.append(store)
        typer.echo(f"{name} {loud}")

    result = CliRunner().invoke(
        cli, ["x", "--database-url", "sqlite:///a.db", "--database-schema", "s", "--loud"]
    )
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "x True"
    assert seen == [StoreOptions(database_url="sqlite:///a.db", database_schema="s")]


def test_a_command_without_a_store_parameter_is_refused() -> None:
    def plain(name: str) -> None:
        del name

    with pytest.raises(TypeError, match="no `store` parameter"):
        store_options(plain)


def test_the_cli_starts_without_the_heavy_libraries() -> None:
    """``cm-fhir --help`` loads no FHIR model, database, web or HL7 library: the commands
    import them when they run."""
    code = (
        "import sys, cm_fhir.cli; print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    for heavy in ("fhir", "sqlalchemy", "fastapi", "hl7apy", "httpx", "alembic", "uvicorn"):
        assert heavy not in loaded, heavy
    help_screen = subprocess.run(
        [sys.executable, "-m", "cm_fhir.cli", "map", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "conditional-create" in help_screen


def test_the_write_modes_on_the_command_line_are_those_of_the_mapper() -> None:
    assert [m.value for m in CliWriteMode] == [m.value for m in WriteMode]


def test_the_help_screens_show_the_defaults_in_brackets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("TERMINAL_WIDTH", "200")
    shown = CliRunner().invoke(app, ["serve", "--help"]).output
    for default in (
        "[cm-fhir.sqlite3 in the data dir]",
        "[cm-fhir-data]",
        "[the server's search_path]",
        "[discharge-rules.yaml: UTC]",
    ):
        assert default in shown, default
