"""An EHR's Conditions, Observations and MedicationRequests of an encounter -> the clinical summary
of a utilization review (plain text). Pure.

:func:`clinical_summary` writes one line per resource, grouped (conditions, observations,
medications), each from the resource's own words: a CodeableConcept's text, else its first
coding's display, else ``system|code``; an Observation's value (Quantity with its unit, a
CodeableConcept, a string, a boolean or an integer) and when it was taken. Entered-in-error and
refuted resources are left out. The summary is capped at :data:`MAX_SUMMARY` characters, the
review's limit.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

__all__ = ["MAX_SUMMARY", "clinical_summary", "concept_text"]

Json = dict[str, Any]
MAX_SUMMARY: Final = 20_000
_LEFT_OUT = {"entered-in-error", "refuted", "cancelled"}


def concept_text(concept: Any) -> str | None:
    """What a CodeableConcept says, in words where it has them."""
    if not isinstance(concept, dict):
        return None
    if isinstance(concept.get("text"), str) and concept["text"].strip():
        return str(concept["text"]).strip()
    for coding in concept.get("coding") or []:
        if isinstance(coding, dict) and isinstance(coding.get("display"), str):
            return str(coding["display"]).strip()
    for coding in concept.get("coding") or []:
        if isinstance(coding, dict) and coding.get("code"):
            return f"{coding.get('system', '')}|{coding['code']}"
    return None


def _status(resource: Json, *paths: str) -> set[str]:
    found = set()
    for path in paths:
        value = resource.get(path)
        if isinstance(value, str):
            found.add(value)
        elif isinstance(value, dict):
            found |= {str(c.get("code")) for c in value.get("coding") or [] if isinstance(c, dict)}
    return found


def _value(observation: Json) -> str | None:
    quantity = observation.get("valueQuantity")
    if isinstance(quantity, dict) and "value" in quantity:
        unit = quantity.get("unit") or quantity.get("code") or ""
        return f"{quantity['value']} {unit}".strip()
    for key in ("valueString", "valueInteger", "valueBoolean"):
        if key in observation:
            return str(observation[key]).lower() if key == "valueBoolean" else str(observation[key])
    return concept_text(observation.get("valueCodeableConcept"))


def _condition(resource: Json) -> str | None:
    if _status(resource, "clinicalStatus", "verificationStatus") & _LEFT_OUT:
        return None
    return concept_text(resource.get("code"))


def _observation(resource: Json) -> str | None:
    if _status(resource, "status") & _LEFT_OUT:
        return None
    what = concept_text(resource.get("code"))
    if what is None:
        return None
    value = _value(resource)
    when = resource.get("effectiveDateTime") or resource.get("issued")
    line = f"{what}: {value}" if value is not None else what
    return f"{line} ({when})" if isinstance(when, str) else line


def _medication(resource: Json) -> str | None:
    if _status(resource, "status") & _LEFT_OUT:
        return None
    what = concept_text(resource.get("medicationCodeableConcept"))
    if what is None:
        return None
    doses = [
        d["text"]
        for d in resource.get("dosageInstruction") or []
        if isinstance(d, dict) and isinstance(d.get("text"), str)
    ]
    return f"{what}, {doses[0]}" if doses else what


def clinical_summary(
    conditions: Iterable[Json], observations: Iterable[Json], medications: Iterable[Json]
) -> str | None:
    """The summary text, or None when nothing usable was found."""
    sections = [
        ("Conditions", [_condition(r) for r in conditions]),
        ("Observations", [_observation(r) for r in observations]),
        ("Medications", [_medication(r) for r in medications]),
    ]
    parts = []
    for title, lines in sections:
        kept = [f"- {line}" for line in lines if line]
        if kept:
            parts.append("\n".join([f"{title}:", *kept]))
    if not parts:
        return None
    text = "\n".join(parts)
    return text if len(text) <= MAX_SUMMARY else text[: MAX_SUMMARY - 1] + "…"
