"""The per-case mapping context: identifiers, ids and references for one case. Pure.

References between resources of one case are ``urn:uuid:<id>`` inside a transaction Bundle (the
server resolves them) or ``Type/<id>`` when resources are served one by one; both carry the same
deterministic id, so the reverse mapping resolves either.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cm_fhir.domain.common import PatientRef
from cm_fhir.fhir import datatypes as dt
from cm_fhir.fhir.ids import local_value, resource_id
from cm_fhir.mapping.registry import MappingRegistry

Json = dict[str, Any]


class ReferenceStyle(StrEnum):
    """How resources of one case point at each other."""

    URN_UUID = "urn-uuid"  # inside a transaction Bundle
    RELATIVE = "relative"  # Type/id, for resources served or stored one by one


@dataclass(frozen=True, slots=True)
class CaseContext:
    """What every resource of one case shares."""

    registry: MappingRegistry
    case_id: str
    patient: PatientRef
    style: ReferenceStyle = ReferenceStyle.URN_UUID
    _ids: dict[tuple[str, ...], str] = field(default_factory=dict, repr=False, compare=False)

    def identifier(self, system_key: str, *local_ids: str) -> Json:
        return {
            "system": self.registry.system(system_key),
            "value": local_value(self.case_id, *local_ids),
        }

    def id_for(self, resource_type: str, system_key: str, *local_ids: str) -> str:
        key = (resource_type, system_key, *local_ids)
        rid = self._ids.get(key)
        if rid is None:
            rid = self._ids[key] = resource_id(
                self.registry.canonical_base,
                resource_type,
                self.registry.system(system_key),
                local_value(self.case_id, *local_ids),
            )
        return rid

    def ref(self, resource_type: str, system_key: str, *local_ids: str) -> Json:
        rid = self.id_for(resource_type, system_key, *local_ids)
        if self.style is ReferenceStyle.URN_UUID:
            return {"reference": f"urn:uuid:{rid}"}
        return {"reference": f"{resource_type}/{rid}"}

    def episode_ref(self) -> Json:
        return self.ref("EpisodeOfCare", "case")

    def episode_extension(self) -> Json:
        return {
            "url": self.registry.extension("episode_of_care"),
            "valueReference": self.episode_ref(),
        }

    def patient_ref(self) -> Json:
        return {"type": "Patient", "identifier": dt.identifier(self.patient.primary)}

    def meta(self, profile_key: str) -> Json:
        return {"profile": [self.registry.profile(profile_key)]}

    def head(self, resource_type: str, rid: str, profile_key: str) -> Json:
        return {"resourceType": resource_type, "id": rid, "meta": self.meta(profile_key)}


def narrative(*lines: str) -> Json:
    """A generated narrative: one XHTML paragraph per line, escaped."""
    body = "".join(f"<p>{html.escape(line)}</p>" for line in lines if line)
    return {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{body}</div>'}


def reference_id(ref: Json | None) -> str | None:
    """The id a reference points at, for ``urn:uuid:<id>``, ``Type/<id>`` or a full URL."""
    if not ref or "reference" not in ref:
        return None
    value = str(ref["reference"])
    if value.startswith("urn:uuid:"):
        return value[len("urn:uuid:") :]
    return value.rstrip("/").rsplit("/", 1)[-1]


def complex_extension(url: str, parts: list[tuple[str, str, Any]]) -> Json:
    """A complex extension from ``(sub-url, value[x] key, value)`` triples, skipping Nones."""
    sub = [{"url": name, key: value} for name, key, value in parts if value is not None]
    return {"url": url, "extension": sub}


def sub_values(ext: Json, name: str, key: str) -> list[Any]:
    """Every ``value[x]`` of the sub-extensions named ``name`` of a complex extension."""
    return [e[key] for e in ext.get("extension", []) if e.get("url") == name and key in e]


def sub_value(ext: Json, name: str, key: str) -> Any:
    values = sub_values(ext, name, key)
    return values[0] if values else None


def extensions(resource: Json, url: str) -> list[Json]:
    return [e for e in resource.get("extension", []) if e.get("url") == url]
