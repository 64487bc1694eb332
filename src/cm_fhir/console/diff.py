"""What a message changed in the FHIR resources: the difference of two transaction Bundles. Pure.

A case's outbox rows are the whole case as a transaction Bundle each time; what one message
changed is the difference between its Bundle and the case's Bundle before it. Resources are
matched by their request URL (conditional update by business identifier, or PUT by id), and
compared field by field as dotted paths (``status``, ``restriction.period.end``, ``note.0.text``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["FieldChange", "ResourceChange", "bundle_diff"]


@dataclass(frozen=True, slots=True)
class FieldChange:
    path: str
    before: str | None
    after: str | None


@dataclass(frozen=True, slots=True)
class ResourceChange:
    """One resource: ``added``, ``removed`` or ``changed`` (with its field changes)."""

    kind: str
    resource_type: str
    key: str
    fields: list[FieldChange] = field(default_factory=list)


def _flatten(value: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for key, item in value.items():
            if key == "meta":
                continue
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list):
        out = {}
        for index, item in enumerate(value):
            out.update(_flatten(item, f"{prefix}.{index}"))
        return out
    return {prefix: str(value).lower() if isinstance(value, bool) else str(value)}


def _resources(bundle: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for n, entry in enumerate((bundle or {}).get("entry", [])):
        resource = entry.get("resource")
        if not isinstance(resource, dict):
            continue
        request = entry.get("request") or {}
        key = str(request.get("url") or entry.get("fullUrl") or f"entry-{n}")
        found[key] = resource
    return found


def bundle_diff(before: dict[str, Any] | None, after: dict[str, Any]) -> list[ResourceChange]:
    """The resources ``after`` adds, removes or changes relative to ``before``."""
    old, new = _resources(before), _resources(after)
    changes: list[ResourceChange] = []
    for key, resource in new.items():
        rtype = str(resource.get("resourceType", "?"))
        if key not in old:
            fields = [FieldChange(p, None, v) for p, v in sorted(_flatten(resource).items())]
            changes.append(ResourceChange("added", rtype, key, fields))
            continue
        a, b = _flatten(old[key]), _flatten(resource)
        fields = [
            FieldChange(p, a.get(p), b.get(p))
            for p in sorted(a.keys() | b.keys())
            if a.get(p) != b.get(p)
        ]
        if fields:
            changes.append(ResourceChange("changed", rtype, key, fields))
    for key, resource in old.items():
        if key not in new:
            changes.append(ResourceChange("removed", str(resource.get("resourceType", "?")), key))
    return changes
