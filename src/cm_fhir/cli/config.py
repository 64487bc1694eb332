"""``cm-fhir config example`` and ``cm-fhir config show``. I/O edge: prints.

``example`` prints a TOML config file with every setting, its default and its description, written
from the :class:`~cm_fhir.settings.Settings` model itself, so a new setting or section appears
without editing this module. ``show`` prints the settings a command would use (flags, environment,
config file and defaults resolved), API keys masked.
"""

from __future__ import annotations

import json
from typing import Any

import typer
from pydantic import BaseModel, SecretStr

from cm_fhir.cli._app import app
from cm_fhir.cli.options import (
    StoreOptions,
    database_label,
    store_options,
)
from cm_fhir.settings import Settings

__all__ = ["config_app", "example_config"]

config_app = typer.Typer(help="Service configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")

_HEADER = """\
# cm-fhir configuration (TOML; YAML with the same keys works too): `cm-fhir <command> --config FILE`
# or CM_FHIR_CONFIG=FILE. Precedence: command-line flags > environment (CM_FHIR_<KEY>, sections
# joined with __, e.g. CM_FHIR_HTTP__PORT=8081) > this file > built-in defaults.
# Commented keys have no default. Secrets (api_keys) belong in the environment:
# CM_FHIR_API_KEYS=key1,key2
"""


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(str(value))


def _lines(model: type[BaseModel], defaults: BaseModel) -> list[str]:
    lines: list[str] = []
    for name, field in model.model_fields.items():
        value = getattr(defaults, name)
        if isinstance(value, BaseModel):
            continue
        note = f"  # {field.description}" if field.description else ""
        secret = isinstance(value, tuple) and any(isinstance(v, SecretStr) for v in value)
        if value is None or secret or name == "api_keys":
            lines.append(f"# {name} = ...{note}")
        else:
            lines.append(f"{name} = {_toml(value)}{note}")
    return lines


def example_config() -> str:
    """A TOML file with every setting at its default (None-valued ones commented out)."""
    defaults = Settings.model_construct()
    out = [_HEADER, *_lines(Settings, defaults)]
    for name in Settings.model_fields:
        section = getattr(defaults, name)
        if isinstance(section, BaseModel):
            doc = (type(section).__doc__ or "").strip().splitlines()
            out += ["", f"[{name}]" + (f"  # {doc[0]}" if doc else "")]
            out += _lines(type(section), section)
    return "\n".join(out) + "\n"


@config_app.command("example")
def config_example() -> None:
    """Print an example config file (TOML) with every setting and its default."""
    typer.echo(example_config(), nl=False)


@config_app.command("show")
@store_options
def config_show(
    store: StoreOptions = StoreOptions(),
) -> None:
    """Print the settings in effect (flags, environment, config file, defaults) as JSON."""
    settings = store.settings()
    shown = settings.model_dump(mode="json")
    shown["api_keys"] = ["**********" for _ in settings.api_keys]
    if settings.database_url is not None:
        shown["database_url"] = database_label(settings)
    shown["effective_database"] = database_label(settings)
    typer.echo(json.dumps(shown, indent=2, default=str))
