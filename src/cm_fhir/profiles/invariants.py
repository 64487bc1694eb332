"""Native Python versions of the invariants our resources meet most often. Pure.

FHIRPath through fhirpathpy is correct but slow: most of the validator's time went into a dozen
invariants evaluated on every Reference, Period, Quantity and resource. Each function here is
keyed by the constraint key *and* its exact expression text, so a profile that changes the
expression falls back to fhirpathpy. A function returns True (satisfied), False (violated) or
None (this case is left to fhirpathpy: unusual shapes, and comparisons whose FHIRPath semantics
are subtle, such as dates of different precision or quantities in different units).
``tests/test_invariants_native.py`` checks every entry against fhirpathpy on generated values.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

__all__ = ["NATIVE", "native_invariant"]

Json = dict[str, Any]
Native = Callable[[Json, Json], bool | None]


def _present(value: Any) -> bool:
    """Whether FHIRPath sees an element: ``null`` and ``[]`` are nothing, ``{}`` is something."""
    return value is not None and value != []


def _exists(value: Json, key: str) -> bool:
    """FHIRPath ``key.exists()``: a value, or a primitive's ``_key`` companion, is present."""
    return _present(value.get(key)) or _present(value.get(f"_{key}"))


def _choice_exists(value: Json, stem: str) -> bool:
    """``stem.exists()`` for a choice element ``stem[x]`` (``valueString``, ``detailRange``…)."""
    size = len(stem)
    for key, item in value.items():
        name = key[1:] if key.startswith("_") else key
        if name.startswith(stem) and len(name) > size and name[size].isupper() and _present(item):
            return True
    return False


def _items(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _dicts(value: Any) -> Iterable[Json] | None:
    """The JSON objects of a list element, or None when the shape is not one we decide."""
    items = _items(value)
    if not all(isinstance(item, dict) for item in items):
        return None
    return items


def _codings_match(concept: Any, system: str, codes: frozenset[str]) -> bool | None:
    if concept is None:
        return False
    if not isinstance(concept, dict):
        return None
    codings = _dicts(concept.get("coding"))
    if codings is None:
        return None
    return any(c.get("system") == system and c.get("code") in codes for c in codings)


# -- domain resources --------------------------------------------------------------------------
def _dom_2(value: Json, _resource: Json) -> bool | None:
    contained = _dicts(value.get("contained"))
    if contained is None:
        return None
    return not any(_present(c.get("contained")) for c in contained)


def _contained_meta(value: Json) -> list[Json] | None:
    contained = _dicts(value.get("contained"))
    if contained is None:
        return None
    metas = [c.get("meta") for c in contained if c.get("meta") is not None]
    found = [meta for meta in metas if isinstance(meta, dict)]
    return found if len(found) == len(metas) else None


def _dom_4(value: Json, _resource: Json) -> bool | None:
    metas = _contained_meta(value)
    if metas is None:
        return None
    return not any(_exists(m, "versionId") or _exists(m, "lastUpdated") for m in metas)


def _dom_5(value: Json, _resource: Json) -> bool | None:
    metas = _contained_meta(value)
    if metas is None:
        return None
    return not any(_present(m.get("security")) for m in metas)


# -- datatypes ---------------------------------------------------------------------------------
def _ref_1(value: Json, resource: Json) -> bool | None:
    reference = value.get("reference")
    if reference is None:
        return True
    if not isinstance(reference, str) or len(reference) < 2:
        return None
    if not reference.startswith("#"):
        return True
    contained = _dicts(resource.get("contained"))
    if contained is None:
        return None
    ids = [c.get("id") for c in contained]
    if not all(isinstance(i, str) for i in ids):
        return None
    return reference[1:] in ids


def _qty_3(value: Json, _resource: Json) -> bool | None:
    return not _exists(value, "code") or _exists(value, "system")


def _sqty_1(value: Json, _resource: Json) -> bool | None:
    return not _exists(value, "comparator")


_DATE = re.compile(r"\d{4}-\d{2}-\d{2}\Z")
_INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})\Z")


def _ordered(earlier: Any, later: Any) -> bool | None:
    """``earlier <= later`` for two dates, or two dateTimes to the second with a zone.

    Anything else (partial precision, mixed precision, no zone) has subtle FHIRPath rules
    (an unknown result) and is left to fhirpathpy.
    """
    if not isinstance(earlier, str) or not isinstance(later, str):
        return None
    if _DATE.match(earlier) and _DATE.match(later):
        return earlier <= later
    first, second = _INSTANT.match(earlier), _INSTANT.match(later)
    if first and second and first.group(2) == second.group(2):
        # Same zone only: fhirpathpy compares element values in different zones wrongly
        # (09:00-04:00 >= 13:00Z is false there); those stay with it so verdicts never change.
        return datetime.fromisoformat(earlier) <= datetime.fromisoformat(later)
    return None


def _per_1(value: Json, _resource: Json) -> bool | None:
    if "_start" in value or "_end" in value:
        return None  # a primitive with extensions: hasValue() subtleties, left to fhirpathpy
    start, end = value.get("start"), value.get("end")
    if start is None or end is None:
        return True
    return _ordered(start, end)


def _inv_1(value: Json, _resource: Json) -> bool | None:
    modified, authored = value.get("lastModified"), value.get("authoredOn")
    if "_lastModified" in value or "_authoredOn" in value:
        return None
    if modified is None or authored is None:
        return True
    return _ordered(authored, modified)


def _rng_2(value: Json, _resource: Json) -> bool | None:
    low, high = value.get("low"), value.get("high")
    if low is None or high is None:
        return True
    return None  # quantity comparison with units: left to fhirpathpy


# -- resources and backbone elements ------------------------------------------------------------
def _cpl_3(value: Json, _resource: Json) -> bool | None:
    return not (_present(value.get("detail")) and _present(value.get("reference")))


def _gol_1(value: Json, _resource: Json) -> bool | None:
    return not _choice_exists(value, "detail") or _present(value.get("measure"))


def _prr_1(value: Json, _resource: Json) -> bool | None:
    return not _present(value.get("orderDetail")) or _present(value.get("code"))


def _ras_2(value: Json, _resource: Json) -> bool | None:
    probability = value.get("probabilityDecimal")
    if probability is None:
        return None if "_probabilityDecimal" in value else True
    if isinstance(probability, bool) or not isinstance(probability, int | float):
        return None
    return bool(probability <= 100)


_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
_NOT_ACTIVE = frozenset({"resolved", "remission", "inactive"})


def _con_4(value: Json, _resource: Json) -> bool | None:
    if not _choice_exists(value, "abatement"):
        return True
    return _codings_match(value.get("clinicalStatus"), _CLINICAL, _NOT_ACTIVE)


def _con_5(value: Json, _resource: Json) -> bool | None:
    in_error = _codings_match(
        value.get("verificationStatus"), _VERIFICATION, frozenset({"entered-in-error"})
    )
    if in_error is None:
        return None
    return not in_error or not _present(value.get("clinicalStatus"))


_TASK_SYSTEMS = frozenset(
    {"http://cm-fhir.org/fhir/sid/task", "http://cm-fhir.org/fhir/sid/assessment"}
)
_QUALITATIVE = "http://cm-fhir.org/fhir/StructureDefinition/cm-goal-qualitative-reason"


def _cm_task_1(value: Json, _resource: Json) -> bool | None:
    identifiers = _dicts(value.get("identifier"))
    if identifiers is None:
        return None
    return any(i.get("system") in _TASK_SYSTEMS for i in identifiers)


def _cm_goal_1(value: Json, _resource: Json) -> bool | None:
    targets, extensions = _dicts(value.get("target")), _dicts(value.get("extension"))
    if targets is None or extensions is None:
        return None
    measured = any(_present(t.get("measure")) and _choice_exists(t, "detail") for t in targets)
    return measured or any(e.get("url") == _QUALITATIVE for e in extensions)


#: (key, expression) -> native function. The expression must match the profile's exactly.
NATIVE: dict[tuple[str, str], Native] = {
    ("dom-2", "contained.contained.empty()"): _dom_2,
    (
        "dom-4",
        "contained.meta.versionId.empty() and contained.meta.lastUpdated.empty()",
    ): _dom_4,
    ("dom-5", "contained.meta.security.empty()"): _dom_5,
    (
        "ref-1",
        "reference.startsWith('#').not() or (reference.substring(1).trace('url') in "
        "%rootResource.contained.id.trace('ids'))",
    ): _ref_1,
    ("qty-3", "code.empty() or system.exists()"): _qty_3,
    ("sqty-1", "comparator.empty()"): _sqty_1,
    ("per-1", "start.hasValue().not() or end.hasValue().not() or (start <= end)"): _per_1,
    (
        "inv-1",
        "lastModified.exists().not() or authoredOn.exists().not() or lastModified >= authoredOn",
    ): _inv_1,
    ("rng-2", "low.empty() or high.empty() or (low <= high)"): _rng_2,
    ("cpl-3", "detail.empty() or reference.empty()"): _cpl_3,
    ("gol-1", "(detail.exists() and measure.exists()) or detail.exists().not()"): _gol_1,
    ("prr-1", "orderDetail.empty() or code.exists()"): _prr_1,
    (
        "ras-2",
        "probability is decimal implies (probability as decimal) <= 100",
    ): _ras_2,
    (
        "con-4",
        "abatement.empty() or clinicalStatus.coding.where(system='http://terminology.hl7.org/"
        "CodeSystem/condition-clinical' and (code='resolved' or code='remission' or "
        "code='inactive')).exists()",
    ): _con_4,
    (
        "con-5",
        "verificationStatus.coding.where(system='http://terminology.hl7.org/CodeSystem/"
        "condition-ver-status' and code='entered-in-error').empty() or clinicalStatus.empty()",
    ): _con_5,
    (
        "cm-task-1",
        "identifier.where(system = 'http://cm-fhir.org/fhir/sid/task' or system = "
        "'http://cm-fhir.org/fhir/sid/assessment').exists()",
    ): _cm_task_1,
    (
        "cm-goal-1",
        "target.where(measure.exists() and detail.exists()).exists() or extension.where(url = "
        "'http://cm-fhir.org/fhir/StructureDefinition/cm-goal-qualitative-reason').exists()",
    ): _cm_goal_1,
}


def native_invariant(key: str, expression: str) -> Native | None:
    """The native function for this invariant, if its expression is one we implement."""
    return NATIVE.get((key, expression))
