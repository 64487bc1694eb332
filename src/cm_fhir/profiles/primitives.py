"""FHIR R4 primitive types: their JSON representation and lexical format. Pure.

:func:`check_primitive` answers why a JSON value is not a valid instance of a primitive type, or
``None`` when it is. The regular expressions are those of the R4 specification; dates are also
checked for existing calendar days (the spec's regex accepts 2023-02-30). Messages describe the
expected form and never repeat the value, which may be patient data.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

_YEAR = r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)"
_MONTH = r"(0[1-9]|1[0-2])"
_DAY = r"(0[1-9]|[1-2][0-9]|3[0-1])"
_TIME = r"([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?"
_ZONE = r"(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00))"

_FORMATS: dict[str, tuple[re.Pattern[str], str]] = {
    "date": (
        re.compile(rf"{_YEAR}(-{_MONTH}(-{_DAY})?)?"),
        "a date YYYY, YYYY-MM or YYYY-MM-DD",
    ),
    "dateTime": (
        re.compile(rf"{_YEAR}(-{_MONTH}(-{_DAY}(T{_TIME}{_ZONE})?)?)?"),
        "a dateTime YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm:ss with a time zone",
    ),
    "instant": (
        re.compile(rf"{_YEAR}-{_MONTH}-{_DAY}T{_TIME}{_ZONE}"),
        "an instant YYYY-MM-DDThh:mm:ss(.sss) with a time zone",
    ),
    "time": (re.compile(_TIME), "a time hh:mm:ss"),
    "code": (
        re.compile(r"[^\s]+(\s[^\s]+)*"),
        "a code: no leading, trailing or repeated whitespace",
    ),
    "id": (re.compile(r"[A-Za-z0-9\-\.]{1,64}"), "an id: 1-64 of A-Z a-z 0-9 - ."),
    "uri": (re.compile(r"\S+"), "a URI without whitespace"),
    "url": (re.compile(r"\S+"), "a URL without whitespace"),
    "canonical": (re.compile(r"\S+"), "a canonical URL without whitespace"),
    "uuid": (
        re.compile(r"urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"),
        "a urn:uuid: with a lower-case UUID",
    ),
    "oid": (re.compile(r"urn:oid:[0-2](\.(0|[1-9][0-9]*))+"), "a urn:oid: OID"),
    "base64Binary": (re.compile(r"(\s*([0-9a-zA-Z\+/=]){4}\s*)+"), "base64 data"),
}
_STRINGS = frozenset({"string", "markdown", "xhtml"})
_INT_LIMITS = {"integer": (-(2**31), 2**31 - 1), "unsignedInt": (0, 2**31 - 1)}
_INT_LIMITS["positiveInt"] = (1, 2**31 - 1)

PRIMITIVE_TYPES = frozenset(
    {*_FORMATS, *_STRINGS, *_INT_LIMITS, "boolean", "decimal"},
)


def is_primitive(type_code: str) -> bool:
    return type_code in PRIMITIVE_TYPES


def check_primitive(type_code: str, value: Any) -> str | None:
    """Why ``value`` is not a valid JSON ``type_code``, or None when it is."""
    if type_code == "boolean":
        return None if isinstance(value, bool) else "must be a JSON boolean (true or false)"
    if type_code in _INT_LIMITS:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"must be a JSON number without a fraction ({type_code})"
        low, high = _INT_LIMITS[type_code]
        return None if low <= value <= high else f"is out of range for {type_code}"
    if type_code == "decimal":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "must be a JSON number (decimal)"
        return None
    if not isinstance(value, str):
        return f"must be a JSON string ({type_code})"
    if type_code in _STRINGS:
        if not value.strip():
            return "must not be empty or only whitespace"
        if type_code == "xhtml" and not value.lstrip().startswith("<div"):
            return "must be an XHTML <div> element"
        return None
    pattern, expected = _FORMATS[type_code]
    if not pattern.fullmatch(value):
        return f"is not {expected}"
    if type_code in ("date", "dateTime", "instant") and len(value) >= 10:
        try:
            dt.date.fromisoformat(value[:10])
        except ValueError:
            return "is not an existing calendar date"
    return None
