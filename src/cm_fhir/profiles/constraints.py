"""FHIRPath invariants (ElementDefinition.constraint): native where we can, else fhirpathpy. Pure.

The invariants met most often run as Python (:mod:`cm_fhir.profiles.invariants`); the rest go
through fhirpathpy, whose expressions are compiled once and cached. fhirpathpy lacks two
functions the R4 core invariants use; they are supplied here: ``hasValue()`` (a single primitive
with a value) and ``htmlChecks()`` (the narrative is one well-formed XHTML ``<div>`` without
scripts, event handlers, forms or document type declarations, and with some text or an image).
Some invariants are not evaluated at all, listed with the reason in :data:`SKIPPED`: they are
checked natively by the validator (ele-1 and ext-1, which would otherwise run on every element;
dom-3, whose ``as()`` on a collection fhirpathpy rejects) or need ``resolve()`` of references to
resources outside the one being validated.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

import fhirpathpy
from fhirpathpy.engine.nodes import ResourceNode
from fhirpathpy.models import models

from cm_fhir.profiles.invariants import native_invariant

SKIPPED: dict[str, str] = {
    "ele-1": "checked natively: every element has a value or children",
    "ext-1": "checked natively: an extension has either extensions or a value[x]",
    "dom-3": "checked natively: fhirpathpy rejects its as() on collections",
    "ctm-1": "needs resolve() of CareTeam.participant.member to the referenced resource",
}

_XHTML = "{http://www.w3.org/1999/xhtml}"
_FORBIDDEN_TAGS = frozenset({"script", "form", "input", "button", "iframe", "object", "embed"})
_MODEL = models["r4"]


def _has_value(inputs: list[Any]) -> bool:
    return len(inputs) == 1 and inputs[0] is not None and not isinstance(inputs[0], dict | list)


def _html_checks(inputs: list[Any]) -> bool:
    if len(inputs) != 1 or not isinstance(inputs[0], str):
        return False
    text = inputs[0]
    if "<!DOCTYPE" in text.upper() or "<!ENTITY" in text.upper():
        return False
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        return False
    if root.tag != _XHTML + "div":
        return False
    has_content = bool("".join(root.itertext()).strip())
    for node in root.iter():
        tag = node.tag.removeprefix(_XHTML)
        if not node.tag.startswith(_XHTML) or tag in _FORBIDDEN_TAGS:
            return False
        if any(name.lower().startswith("on") for name in node.attrib):
            return False
        has_content = has_content or tag == "img"
    return has_content


_OPTIONS = {
    "userInvocationTable": {
        "hasValue": {"fn": _has_value},
        "htmlChecks": {"fn": _html_checks},
    },
    "traceFn": lambda *_args: None,  # dom-3 calls trace(); keep stdout clean
}

Evaluator = Callable[..., list[Any]]


class ConstraintEngine:
    """Compiles and evaluates invariants; remembers the ones that cannot be evaluated."""

    def __init__(self, *, native: bool = True) -> None:
        self.native = native
        self._compiled: dict[str, Evaluator | None] = {}
        self.failures: dict[str, str] = {}

    def evaluate(
        self,
        key: str,
        expression: str,
        value: Any,
        fhirpath_type: str,
        resource: dict[str, Any],
    ) -> bool | None:
        """True when satisfied, False when violated, None when it cannot be evaluated.

        An empty result counts as satisfied, as for the FHIR validator's search-like invariants.
        Invariants with a native version (:mod:`cm_fhir.profiles.invariants`) run natively on
        JSON objects; what the native version leaves open goes to fhirpathpy.
        """
        if self.native and isinstance(value, dict):
            native = native_invariant(key, expression)
            if native is not None:
                verdict = native(value, resource)
                if verdict is not None:
                    return verdict
        return self.evaluate_fhirpath(key, expression, value, fhirpath_type, resource)

    def evaluate_fhirpath(
        self,
        key: str,
        expression: str,
        value: Any,
        fhirpath_type: str,
        resource: dict[str, Any],
    ) -> bool | None:
        """:meth:`evaluate` with fhirpathpy only."""
        evaluator = self._compile(key, expression)
        if evaluator is None:
            return None
        node = ResourceNode.create_node(value, fhirpath_type)  # type: ignore[no-untyped-call]
        try:
            result = evaluator(node, {"resource": resource, "rootResource": resource})
        except Exception as exc:  # fhirpathpy raises bare Exceptions for unsupported features
            self.failures[key] = f"evaluation failed: {type(exc).__name__}"
            return None
        if not result:
            return True
        return all(item is True for item in result)

    def _compile(self, key: str, expression: str) -> Evaluator | None:
        if expression not in self._compiled:
            try:
                self._compiled[expression] = fhirpathpy.compile(expression, _MODEL, _OPTIONS)
            except Exception as exc:  # parse errors surface as bare Exceptions
                self.failures[key] = f"cannot be compiled: {type(exc).__name__}"
                self._compiled[expression] = None
        return self._compiled[expression]
