"""The conformance resources a validator works from: StructureDefinitions, ValueSets, CodeSystems.

Reads files only when told to (:meth:`ConformanceRegistry.from_directory` reads every ``*.json``
below a folder: single resources or Bundles of them); otherwise pure. Resources are indexed by
canonical URL (a ``|version`` suffix is ignored on lookup). Where two files define the same URL the
later one in sorted path order wins, so a project file can shadow a base definition on purpose.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cm_fhir.errors import ProfileError

CORE_SD = "http://hl7.org/fhir/StructureDefinition/"
_KINDS = ("StructureDefinition", "ValueSet", "CodeSystem")


def canonical(url: str) -> str:
    """A canonical URL without its ``|version`` suffix."""
    return url.split("|", 1)[0]


@dataclass
class ConformanceRegistry:
    """StructureDefinitions, ValueSets and CodeSystems by canonical URL."""

    structure_definitions: dict[str, dict[str, Any]] = field(default_factory=dict)
    value_sets: dict[str, dict[str, Any]] = field(default_factory=dict)
    code_systems: dict[str, dict[str, Any]] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_resources(cls, resources: Iterable[dict[str, Any]]) -> ConformanceRegistry:
        registry = cls()
        for resource in resources:
            registry.add(resource, source="memory")
        return registry

    @classmethod
    def from_directory(cls, folder: Path) -> ConformanceRegistry:
        """Load every JSON resource below ``folder``; raise ProfileError naming a bad file."""
        if not folder.is_dir():
            raise ProfileError(f"profile folder {folder} does not exist")
        registry = cls()
        for path in sorted(folder.rglob("*.json")):
            try:
                document = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ProfileError(f"{path.name}: cannot be read as JSON ({exc})") from exc
            if not isinstance(document, dict) or "resourceType" not in document:
                raise ProfileError(f"{path.name}: not a FHIR resource")
            for resource in _unbundle(document):
                registry.add(resource, source=str(path.relative_to(folder)))
        if not registry.structure_definitions:
            raise ProfileError(
                f"profile folder {folder} holds no StructureDefinition "
                "(expected JSON files with the R4 base definitions and the profiles to check)"
            )
        return registry

    def add(self, resource: dict[str, Any], *, source: str) -> None:
        """Index a StructureDefinition, ValueSet or CodeSystem (others are ignored)."""
        kind = resource.get("resourceType")
        if kind not in _KINDS:
            return
        url = resource.get("url")
        if not isinstance(url, str):
            raise ProfileError(f"{source}: a {kind} without url")
        index = {
            "StructureDefinition": self.structure_definitions,
            "ValueSet": self.value_sets,
            "CodeSystem": self.code_systems,
        }[str(kind)]
        index[url] = resource
        self.sources[url] = source

    def structure_definition(self, url: str) -> dict[str, Any] | None:
        """The StructureDefinition with this canonical URL (version suffix ignored), if loaded."""
        return self.structure_definitions.get(canonical(url))

    def base_definition(self, type_name: str) -> dict[str, Any] | None:
        """The core definition of a resource or datatype, e.g. ``Task`` or ``Period``."""
        return self.structure_definitions.get(CORE_SD + type_name)

    def own_profiles(self, base_folder: str = "base") -> list[dict[str, Any]]:
        """Definitions loaded from outside ``base_folder``: the project's own."""
        return [
            sd
            for url, sd in self.structure_definitions.items()
            if not self.sources.get(url, "").startswith(base_folder)
        ]


def _unbundle(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if document.get("resourceType") == "Bundle":
        for entry in document.get("entry", []):
            resource = entry.get("resource")
            if isinstance(resource, dict):
                yield resource
    else:
        yield document
