"""Load and validate the declarative files in ``mappings/``. Pure apart from reading files.

Every file is YAML holding data only (no expressions, no code). Each file has a pydantic model with
``extra="forbid"``; a file that does not fit fails at start-up with a :class:`MappingSpecError` that
names the file, the key path (``status_maps.case.on-hold``) and the reason.

A deployment can override or extend the bundled files from its own folder: a file of the same name
in the override folder is deep-merged over the bundled one (mappings merge key by key, lists
replace), so a site states only what differs. See the README, "Customising mappings".
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pydantic
import yaml

from cm_fhir.bundled import bundled_dir
from cm_fhir.errors import MappingSpecError

M = TypeVar("M", bound=pydantic.BaseModel)

#: Environment variable naming a folder whose files override the bundled ones.
OVERRIDE_ENV = "CM_FHIR_MAPPINGS_DIR"


def bundled_mappings_dir() -> Path:
    """The bundled ``mappings/`` folder."""
    return bundled_dir("mappings")


def read_yaml(path: Path) -> Any:
    """Parse one YAML file; syntax errors name the file and the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MappingSpecError(str(path), "", f"cannot read file ({exc.strerror})") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise MappingSpecError(str(path), where, str(problem)) from exc


def deep_merge(base: Any, override: Any) -> Any:
    """Merge ``override`` over ``base``: mappings key by key, anything else replaced."""
    if isinstance(base, Mapping) and isinstance(override, Mapping):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = deep_merge(base[key], value) if key in base else value
        return merged
    return override


def _key_path(loc: Iterable[int | str]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(f".{item}" if parts else str(item))
    return "".join(parts) or "(top level)"


def validate_data(data: Any, model: type[M], file: str) -> M:
    """Validate parsed data against ``model``; the first error becomes a MappingSpecError."""
    if data is None:
        data = {}
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        reason = first["msg"]
        if first["type"] == "extra_forbidden":
            reason = "unknown key"
        others = exc.error_count() - 1
        if others:
            reason += f" (and {others} more problem{'s' if others > 1 else ''})"
        raise MappingSpecError(file, _key_path(first["loc"]), reason) from exc


def load_yaml_model(path: Path, model: type[M]) -> M:
    """Load one YAML file into ``model``."""
    return validate_data(read_yaml(path), model, str(path))


def load_with_overrides(name: str, model: type[M], override_dir: Path | None = None) -> M:
    """Load bundled ``mappings/<name>``, deep-merged with ``<override_dir>/<name>`` if present."""
    bundled = bundled_mappings_dir() / name
    data = read_yaml(bundled)
    source = str(bundled)
    directory = override_dir if override_dir is not None else _env_override_dir()
    if directory is not None:
        site_file = directory / name
        if site_file.is_file():
            data = deep_merge(data or {}, read_yaml(site_file) or {})
            source = f"{site_file} (over {bundled.name})"
    return validate_data(data, model, source)


def _env_override_dir() -> Path | None:
    value = os.environ.get(OVERRIDE_ENV)
    return Path(value) if value else None
