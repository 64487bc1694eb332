"""Per-value rules of the instance walk: bindings, codes and references; and the run state. Pure.

:class:`Run` collects OperationOutcome issues for one ``validate`` call and knows the Bundle being
validated (its entries' ``fullUrl`` -> resource type), so that ``urn:uuid:`` references can be
resolved. :class:`Catalog` is what the rules need from the validator: compiled profiles, the
terminology and the list of resource types.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Protocol

from cm_fhir.profiles.model import Binding, CompiledProfile, ElementNode
from cm_fhir.profiles.terminology import Terminology

_LITERAL = re.compile(
    r"^(?:https?://\S+/)?(?P<type>[A-Z][A-Za-z]+)/[A-Za-z0-9\-.]{1,64}(?:/_history/\S+)?$"
)
_CONDITIONAL = re.compile(r"^(?P<type>[A-Z][A-Za-z]+)\?\S+$")
_LIST_LIMIT = 12


class Catalog(Protocol):
    terminology: Terminology

    def profile(self, url: str) -> CompiledProfile | None: ...

    def is_resource_type(self, name: str) -> bool: ...


@dataclass
class Run:
    """Issues and context of one validation call."""

    issues: list[dict[str, Any]] = field(default_factory=list)
    bundle_types: dict[str, str] | None = None
    resources: list[dict[str, Any]] = field(default_factory=list)

    @property
    def resource(self) -> dict[str, Any]:
        return self.resources[-1] if self.resources else {}

    def add(self, severity: str, code: str, expr: str, text: str) -> None:
        self.issues.append(
            {"severity": severity, "code": code, "details": {"text": text}, "expression": [expr]}
        )

    def error(self, code: str, expr: str, text: str) -> None:
        self.add("error", code, expr, text)

    def warning(self, code: str, expr: str, text: str) -> None:
        self.add("warning", code, expr, text)

    def information(self, code: str, expr: str, text: str) -> None:
        self.add("information", code, expr, text)


def check_binding(
    raw: Any, tcode: str, binding: Binding, catalog: Catalog, expr: str, run: Run
) -> None:
    """Required bindings give errors, extensible ones warnings; weaker ones are not checked."""
    if binding.strength not in ("required", "extensible"):
        return
    terminology = catalog.terminology
    expansion = terminology.expand(binding.value_set)
    if expansion is None:
        return
    strict = binding.strength == "required"
    if tcode == "code" and isinstance(raw, str):
        ok = raw in (terminology.codes(binding.value_set) or frozenset())
    elif tcode == "Coding" and isinstance(raw, dict):
        ok = (raw.get("system"), raw.get("code")) in expansion
    elif tcode == "CodeableConcept" and isinstance(raw, dict):
        codings = [c for c in raw.get("coding", []) if isinstance(c, dict)]
        ok = any((c.get("system"), c.get("code")) in expansion for c in codings)
        if not codings and not strict:
            ok = True  # extensible: text alone is allowed when no code fits
    else:
        return
    if ok:
        return
    codes = sorted(f"{s}|{c}" if tcode != "code" else c for s, c in expansion)
    hint = f"; allowed: {', '.join(codes)}" if len(codes) <= _LIST_LIMIT else ""
    text = (
        f"the {'code' if tcode == 'code' else 'coding'} is not in value set {binding.value_set} "
        f"({binding.strength} binding){hint}"
    )
    if strict:
        run.error("code-invalid", expr, text)
    else:
        run.warning("code-invalid", expr, text)


def check_coding(raw: dict[str, Any], catalog: Catalog, expr: str, run: Run) -> None:
    """A code from a complete code system we hold must be defined in it."""
    system, code = raw.get("system"), raw.get("code")
    if not isinstance(system, str) or not isinstance(code, str):
        return
    known = catalog.terminology.system_codes(system)
    if known is not None and code not in known:
        run.error(
            "code-invalid", f"{expr}.code", f"the code is not defined in code system {system}"
        )


def check_reference(
    raw: dict[str, Any], node: ElementNode, catalog: Catalog, expr: str, run: Run
) -> None:
    """Resolve the target's resource type and check it against the allowed targets."""
    targets = {t for ref in node.types if ref.code == "Reference" for t in ref.targets}
    reference, declared = raw.get("reference"), raw.get("type")
    actual: str | None = None
    if isinstance(reference, str):
        actual = _resolve(reference, expr, run)
    if isinstance(declared, str):
        if not catalog.is_resource_type(declared):
            run.error("code-invalid", f"{expr}.type", "type is not an R4 resource type")
            return
        if actual is not None and actual != declared:
            run.error(
                "structure",
                f"{expr}.type",
                f"type says {declared} but the reference points to a {actual}",
            )
        actual = actual or declared
    if actual is None or not targets or "Resource" in targets:
        return
    if not catalog.is_resource_type(actual):
        run.error("structure", f"{expr}.reference", f"'{actual}' is not an R4 resource type")
    elif actual not in targets:
        run.error(
            "structure",
            expr,
            f"a reference to a {actual} is not allowed here; allowed: {', '.join(sorted(targets))}",
        )


def _resolve(reference: str, expr: str, run: Run) -> str | None:
    where = f"{expr}.reference"
    if reference.startswith("#"):
        holders = run.resources[-2:][::-1]  # the resource itself, then its container
        if reference == "#":
            return str(holders[-1].get("resourceType")) if holders else None
        for holder in holders:
            for contained in holder.get("contained", []):
                if isinstance(contained, dict) and contained.get("id") == reference[1:]:
                    return str(contained.get("resourceType"))
        run.error("not-found", where, "points to a contained resource that does not exist")
        return None
    if run.bundle_types is not None and reference in run.bundle_types:
        return run.bundle_types[reference]
    if reference.startswith(("urn:uuid:", "urn:oid:")):
        if run.bundle_types is None:
            run.warning("not-found", where, "a urn: reference can only be resolved inside a Bundle")
        else:
            run.error("not-found", where, "no entry of this Bundle has this fullUrl")
        return None
    for pattern in (_LITERAL, _CONDITIONAL):
        match = pattern.match(reference)
        if match:
            return match.group("type")
    return None
