"""The library's public API documents itself: every exported class and function of the pure core,
and every public method of an exported class, has a docstring (the API reference is built from
them by ``make docs``), and every field of the case document has a description."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from typing import Any

import pytest

from cm_fhir.domain import Case

CORE = ["cm_fhir.domain", "cm_fhir.fhir", "cm_fhir.mapping", "cm_fhir.profiles", "cm_fhir.hl7v2"]


def _modules(package: str) -> list[Any]:
    """The package, if it re-exports its API (``__all__``), else its submodules that declare one."""
    module = importlib.import_module(package)
    if getattr(module, "__all__", None):
        return [module]
    found = [
        importlib.import_module(f"{package}.{info.name}")
        for info in pkgutil.iter_modules(module.__path__)
        if not info.name.startswith("_")
    ]
    return [m for m in found if getattr(m, "__all__", None)]


def _public(package: str) -> list[tuple[str, Any]]:
    found = []
    for module in _modules(package):
        for name in module.__all__:
            obj = getattr(module, name)
            where = f"{module.__name__}.{name}"
            if inspect.isfunction(obj) or inspect.isclass(obj):
                found.append((where, obj))
            if inspect.isclass(obj):
                for member, value in vars(obj).items():
                    if not member.startswith("_") and inspect.isfunction(value):
                        found.append((f"{where}.{member}", value))
    assert found, f"{package} exports nothing"
    return found


@pytest.mark.parametrize("package", CORE)
def test_every_public_function_and_class_has_a_docstring(package: str) -> None:
    undocumented = [name for name, obj in _public(package) if not (obj.__doc__ or "").strip()]
    assert undocumented == []


def _fields_without_description(schema: dict[str, Any]) -> list[str]:
    missing = []
    for model, definition in {"Case": schema, **schema.get("$defs", {})}.items():
        for field, spec in definition.get("properties", {}).items():
            if not spec.get("description"):
                missing.append(f"{model}.{field}")
    return missing


def test_every_field_of_the_case_document_has_a_description() -> None:
    assert _fields_without_description(Case.model_json_schema()) == []
