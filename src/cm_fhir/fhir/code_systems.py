"""The FHIR CodeSystem resources of our vocabularies, made from ``code-systems.yaml``. Pure.

``code-systems.yaml`` is the one source of every code and display we invent: the mapper codes
with it, and the CodeSystems shipped in ``profiles/`` are this module's output for the bundled
file (a test keeps them equal). A site that extends a vocabulary writes its own CodeSystems with
``cm-fhir mappings code-systems`` and validates against them.
"""

from __future__ import annotations

import json
from typing import Any

from cm_fhir.mapping.registry import CodeSystem, MappingRegistry

__all__ = ["code_system_json", "code_system_resource", "code_system_resources"]

Json = dict[str, Any]

#: Metadata every cm-fhir CodeSystem carries.
_VERSION = "0.1.0"
_DATE = "2025-01-01"
_PUBLISHER = "cm-fhir contributors"
_WORLD = {
    "system": "http://unstats.un.org/unsd/methods/m49/m49.htm",
    "code": "001",
    "display": "World",
}


def _name(resource_id: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in resource_id.split("-"))


def code_system_resource(system: CodeSystem) -> Json:
    """The complete CodeSystem resource of one code system (id: the URL's last segment)."""
    resource_id = system.url.rstrip("/").rsplit("/", 1)[-1]
    return {
        "resourceType": "CodeSystem",
        "id": resource_id,
        "url": system.url,
        "name": _name(resource_id),
        "title": system.title,
        "version": _VERSION,
        "status": "draft",
        "experimental": False,
        "date": _DATE,
        "publisher": _PUBLISHER,
        "jurisdiction": [{"coding": [dict(_WORLD)]}],
        "description": f"{system.description} (cm-fhir).",
        "caseSensitive": True,
        "valueSet": system.url.replace("/CodeSystem/", "/ValueSet/"),
        "content": "complete",
        "count": len(system.concepts),
        "concept": [{"code": code, "display": text} for code, text in system.concepts.items()],
    }


def code_system_resources(registry: MappingRegistry) -> list[Json]:
    """The CodeSystem of every code system in ``registry`` under its canonical base."""
    base = registry.canonical_base + "/"
    return [
        code_system_resource(system)
        for system in registry.code_systems.values()
        if system.url.startswith(base)
    ]


def code_system_json(resource: Json) -> str:
    """A CodeSystem as the text of its ``profiles/CodeSystem-<id>.json`` file."""
    return json.dumps(resource, indent=2, ensure_ascii=False) + "\n"
