"""Slices: which slice each repeated value belongs to, and slice cardinality. Pure.

Supports the discriminators cm-fhir's profiles and the R4 core use: ``value`` and ``pattern`` (on
``$this``, ``url`` of extensions, or a dotted path such as ``system`` or ``coding.system``),
``exists`` and ``type``. A ``profile`` discriminator matches nothing (it would need validation
against each candidate profile). Values that match no slice are an error only when the slicing is
``closed``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cm_fhir.profiles.model import Discriminator, ElementNode

if TYPE_CHECKING:
    from cm_fhir.profiles.rules import Run

_MISSING: Any = object()


def matches_pattern(value: Any, pattern: Any) -> bool:
    """FHIR pattern semantics: every property of the pattern is present with a matching value."""
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(
            key in value and matches_pattern(value[key], item) for key, item in pattern.items()
        )
    if isinstance(pattern, list):
        values = value if isinstance(value, list) else [value]
        return all(any(matches_pattern(v, p) for v in values) for p in pattern)
    return bool(value == pattern)


def assign_slices(
    values: list[Any], expressions: list[str], sliced: ElementNode, where: str, run: Run
) -> list[ElementNode | None]:
    """The slice of each value (None: no slice) after checking each slice's cardinality."""
    assert sliced.slicing is not None
    result: list[ElementNode | None] = []
    for value, expr in zip(values, expressions, strict=True):
        found = next((s for s in sliced.slices if _matches(value, s, sliced)), None)
        if found is None and sliced.slicing.rules == "closed":
            run.error("structure", expr, f"matches no slice of {sliced.path} (slicing is closed)")
        result.append(found)
    for slice_node in sliced.slices:
        count = sum(1 for r in result if r is slice_node)
        label = _label(slice_node, where)
        if count < slice_node.min:
            run.error(
                "required",
                label,
                f"slice '{slice_node.slice_name}' of {sliced.display_name} needs at least "
                f"{slice_node.min} {'entry' if slice_node.min == 1 else 'entries'}; found {count}",
            )
        elif slice_node.max is not None and count > slice_node.max:
            run.error(
                "structure",
                label,
                f"slice '{slice_node.slice_name}' of {sliced.display_name} allows at most "
                f"{slice_node.max}; found {count}",
            )
        elif count == 0 and slice_node.must_support:
            run.information(
                "informational", label, f"must-support slice '{slice_node.slice_name}' is absent"
            )
    return result


def _label(slice_node: ElementNode, where: str) -> str:
    url = _extension_url(slice_node)
    return (
        f"{where}('{url}')"
        if url and slice_node.name in ("extension", "modifierExtension")
        else where
    )


def _matches(value: Any, slice_node: ElementNode, sliced: ElementNode) -> bool:
    assert sliced.slicing is not None
    return all(_matches_one(value, slice_node, d) for d in sliced.slicing.discriminators)


def _matches_one(value: Any, slice_node: ElementNode, disc: Discriminator) -> bool:
    if disc.kind in ("value", "pattern"):
        expected = _expected(slice_node, disc.path)
        if expected is _MISSING:
            return False
        return any(matches_pattern(v, expected) for v in _values_at(value, disc.path))
    if disc.kind == "exists":
        child = _descend(slice_node, disc.path)
        present = bool(_values_at(value, disc.path))
        return child is not None and present == (child.min > 0)
    if disc.kind == "type" and disc.path == "$this" and isinstance(value, dict):
        return any(t.code == value.get("resourceType") for t in slice_node.types)
    return False


def _expected(slice_node: ElementNode, path: str) -> Any:
    if path == "url":
        url = _extension_url(slice_node)
        if url:
            return url
    node = slice_node if path == "$this" else _descend(slice_node, path)
    if node is None:
        return _MISSING
    if node.has_fixed:
        return node.fixed
    if node.has_pattern:
        return node.pattern
    return _MISSING


def _extension_url(slice_node: ElementNode) -> str | None:
    url_node = slice_node.children.get("url")
    if url_node is not None and url_node.has_fixed:
        return str(url_node.fixed)
    for t in slice_node.types:
        if t.code == "Extension" and t.profiles:
            return t.profiles[0]
    return None


def _descend(node: ElementNode, path: str) -> ElementNode | None:
    current: ElementNode | None = node
    for name in path.split("."):
        if current is None:
            return None
        current = current.children.get(name)
    return current


def _values_at(value: Any, path: str) -> list[Any]:
    if path == "$this":
        return [value]
    current = [value]
    for name in path.split("."):
        step: list[Any] = []
        for item in current:
            if isinstance(item, dict) and name in item:
                found = item[name]
                step.extend(found if isinstance(found, list) else [found])
        current = step
    return current
