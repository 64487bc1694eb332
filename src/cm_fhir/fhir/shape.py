"""The R4 JSON shape rules every resource we write must keep. Pure.

FHIR R4 JSON (https://hl7.org/fhir/R4/json.html) has no empty values: an element is either absent
or has content. So there are no empty objects (ele-1: "All FHIR elements must have a @value or
children"), no empty arrays, no empty or whitespace-only strings, and no ``null`` except as a
placeholder inside the array of a repeating primitive (``"given": ["A", null]`` paired with
``"_given"``). An extension needs a value or sub-extensions, not both (ext-1); an empty
``"extension": []`` counts as no sub-extensions. A validating server rejects a whole transaction
for one such element.

:func:`shape_problems` lists where a document breaks these rules, as FHIRPath-like paths (element
names and indexes, never values, which may be patient data). :func:`check_shape` raises a
:class:`~cm_fhir.errors.ValidationError` carrying them as an OperationOutcome;
:func:`~cm_fhir.fhir.map_case` runs it with the fhir.resources models, which accept all of these.
It is not run on the unvalidated fast path: a byte scan of each serialised bundle cost that path
a fifth to a half of its time (``bench/bench_mapping.py`` side by side), so the fast path relies
on the mapper building no empty value, which a property test over generated cases checks.
"""

from __future__ import annotations

from typing import Any

from cm_fhir.errors import ValidationError
from cm_fhir.fhir.outcome import Issue, operation_outcome

__all__ = ["check_shape", "shape_problems"]


def shape_problems(document: Any, path: str | None = None) -> list[str]:
    """Where ``document`` (a resource, Bundle or element as JSON values) breaks the R4 JSON rules.

    Each problem is ``"<path>: <rule>"``; the list is empty for a well-formed document.
    """
    root = path or (str(document.get("resourceType")) if isinstance(document, dict) else "$this")
    found: list[str] = []
    _walk(document, root, found, in_primitive_array=False)
    return found


def _walk(value: Any, path: str, found: list[str], *, in_primitive_array: bool) -> None:
    if value is None:
        if not in_primitive_array:
            found.append(f"{path}: null is only allowed inside a primitive array")
    elif isinstance(value, str):
        if not value.strip():
            found.append(f"{path}: empty or whitespace-only string")
    elif isinstance(value, list):
        if not value:
            found.append(f"{path}: empty array")
        primitives = any(not isinstance(item, dict | list) and item is not None for item in value)
        for i, item in enumerate(value):
            _walk(item, f"{path}[{i}]", found, in_primitive_array=primitives)
    elif isinstance(value, dict):
        _walk_object(value, path, found)


def _walk_object(value: dict[str, Any], path: str, found: list[str]) -> None:
    if not any(k not in ("id", "resourceType") for k in value):
        found.append(f"{path}: ele-1: an element needs a value or children")
    sub = value.get("extension")
    has_value = any(k.startswith("value") for k in value)
    is_extension = path.rsplit(".", 1)[-1].startswith(("extension", "modifierExtension"))
    if is_extension and "url" in value and bool(sub) == has_value:
        found.append(f"{path}: ext-1: an extension needs either extensions or a value[x]")
    for key, item in value.items():
        child = f"{path}.{key}"
        if key.startswith("_") and isinstance(item, list):
            # the companion array of a primitive array may hold nulls as placeholders
            for i, part in enumerate(item):
                if part is not None:
                    _walk(part, f"{child}[{i}]", found, in_primitive_array=True)
            if not item:
                found.append(f"{child}: empty array")
            continue
        _walk(item, child, found, in_primitive_array=False)


def check_shape(document: Any) -> None:
    """Raise :class:`~cm_fhir.errors.ValidationError` if ``document`` breaks the R4 JSON rules.

    The error carries an OperationOutcome with one issue per problem, each naming its position.
    """
    problems = shape_problems(document)
    if not problems:
        return
    issues = []
    for problem in problems:
        where, _, rule = problem.partition(": ")
        code = "invariant" if rule.startswith(("ele-1", "ext-1")) else "structure"
        issues.append(Issue("error", code, rule, where))
    first = problems[0].partition(": ")[0]
    text = f"not valid R4 JSON: {len(problems)} problem(s), the first at {first}"
    raise ValidationError(text, operation_outcome(issues))
