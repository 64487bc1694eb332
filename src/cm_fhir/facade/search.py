"""The parser of the read-only facade's FHIR searches. Pure.

What each type supports is the table in :mod:`cm_fhir.facade.parameters`
(:data:`~cm_fhir.facade.parameters.SEARCH_PARAMETERS`); this parser, the store query and the
CapabilityStatement are all driven by it, so they cannot disagree. :func:`parse_search`
turns the query parameters of ``GET /fhir/<Type>`` into a :class:`SearchQuery`: typed criteria
(repeated parameters are ANDed, comma-separated values ORed) plus ``_count`` and the page cursor.
Result parameters: ``_count``, ``_page`` (the cursor), ``_format``, ``_summary=count`` (the
total only), ``_summary=false``, ``_total`` (``none``, ``estimate``, ``accurate``: the total is
always exact here), ``_elements`` (the listed top-level elements, marked ``SUBSETTED``),
``_sort`` (one key: ``_lastUpdated``, and ``due`` on Task; ``-`` for descending) and
``_include`` (``Task:focus``, ``Task:based-on``).

Parameters the table does not name (a parameter, a modifier, a result parameter value) are
ignored, as FHIR's default ``lenient`` handling says, and left out of the ``self`` link so the
client sees what was applied (:attr:`SearchQuery.ignored` names them). With ``strict=True``
(``Prefer: handling=strict``) they raise :class:`~cm_fhir.errors.SearchParameterError`, which the
API answers with a 400 OperationOutcome. A malformed value of a supported parameter is an error
in both modes.

A search is bounded, so every accepted one is a small query on SQLite and PostgreSQL alike: at
most :data:`MAX_PARAMETERS` query parameters, :data:`MAX_VALUES` values in all (repeated and
comma-separated values count alike) and :data:`MAX_VALUE_LENGTH` characters per parameter value.
Past a bound the error names the parameter that crossed it.

Patients are referenced logically, by identifier: ``patient:identifier=system|value`` is the
standard form; ``patient=system|value`` is read the same way. ``patient=Patient/<id>`` is refused
with a hint, because cm-fhir holds no Patient resources whose ids could match.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from cm_fhir.errors import SearchParameterError
from cm_fhir.facade.dates import DateBound, parse_date_bound
from cm_fhir.facade.paging import Cursor, parse_cursor
from cm_fhir.facade.parameters import (
    INCLUDES,
    RESOURCE_TYPES,
    SEARCH_PARAMETERS,
    SORTS,
    Field,
    SearchParam,
)

__all__ = [
    "MAX_PARAMETERS",
    "MAX_VALUES",
    "MAX_VALUE_LENGTH",
    "Criterion",
    "DateCriterion",
    "IdCriterion",
    "ReferenceCriterion",
    "SearchQuery",
    "Token",
    "TokenCriterion",
    "parse_search",
    "split_token",
]

DEFAULT_COUNT = 20
MAX_COUNT = 100
#: Query parameters in one search (``_count``, ``_page`` and ``_format`` included).
MAX_PARAMETERS = 20
#: Values in one search, over all its parameters (``a,b`` is two; repeats add their own).
MAX_VALUES = 100
#: Characters in one parameter's value.
MAX_VALUE_LENGTH = 8192

_ID_PATTERN = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_FORMATS = frozenset({"json", "application/json", "application/fhir+json"})
_TOTALS = frozenset({"none", "estimate", "accurate"})
_ELEMENT = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,63}$")


@dataclass(frozen=True, slots=True)
class Token:
    """A token value: ``system`` None means any system, "" means no system; ``code`` None: any."""

    system: str | None
    code: str | None


@dataclass(frozen=True, slots=True)
class IdCriterion:
    any_of: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TokenCriterion:
    field: Field
    any_of: tuple[Token, ...]


@dataclass(frozen=True, slots=True)
class DateCriterion:
    field: Field
    bound: DateBound


@dataclass(frozen=True, slots=True)
class ReferenceCriterion:
    field: Field
    any_of: tuple[tuple[str, str], ...]  # (resource type, id)


Criterion = IdCriterion | TokenCriterion | DateCriterion | ReferenceCriterion


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """A parsed search: criteria (ANDed), page size, cursor, and the parameters for links."""

    resource_type: str
    criteria: tuple[Criterion, ...]
    count: int
    cursor: Cursor | None
    params: tuple[tuple[str, str], ...]  # the applied parameters (links), in a stable order
    summary_count: bool = False
    elements: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()
    sort: tuple[Field, bool] | None = None  # (field, descending); None: by id
    include: tuple[str, ...] = ()  # reference elements whose targets to add: focus, basedOn


def _split_unescaped(text: str, separator: str, limit: int = -1) -> list[str]:
    parts, current, escaped = [], [], False
    for char in text:
        if escaped:
            current.append("\\" + char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == separator and limit != 0:
            parts.append("".join(current))
            current = []
            limit -= 1
        else:
            current.append(char)
    if escaped:
        current.append("\\")
    parts.append("".join(current))
    return parts


def _unescape(text: str) -> str:
    return re.sub(r"\\([\\,|$])", r"\1", text)


def split_token(text: str) -> Token:
    """Read ``system|code``, ``|code``, ``system|`` or ``code`` (one value, escapes honoured)."""
    parts = _split_unescaped(text, "|", limit=1)
    if len(parts) == 1:
        return Token(None, _unescape(parts[0]))
    system, code = (_unescape(p) for p in parts)
    return Token(system, code or None)


def _values(text: str) -> list[str]:
    return [v for v in _split_unescaped(text, ",") if v != ""]


def _tokens(name: str, text: str, *, need_code: bool) -> tuple[Token, ...]:
    tokens = tuple(split_token(v) for v in _values(text))
    if need_code and any(t.code is None for t in tokens):
        raise SearchParameterError(name, "a code is required (system| alone is not supported)")
    return tokens


def _reference(name: str, text: str) -> tuple[str, str]:
    type_, _, rid = _unescape(text).rstrip("/").rpartition("/")
    resource_type = type_.rsplit("/", 1)[-1]
    if not resource_type or not _ID_PATTERN.match(rid):
        raise SearchParameterError(name, "expected a relative reference such as Task/<id>")
    return resource_type, rid


def _patient(name: str, modifier: str | None, text: str) -> TokenCriterion:
    values = _values(text)
    if modifier is None and any("|" not in v for v in values):
        raise SearchParameterError(
            name,
            "patients are referenced by identifier: use patient:identifier=system|value "
            "(cm-fhir holds no Patient resources)",
        )
    return TokenCriterion(Field.PATIENT, tuple(split_token(v) for v in values))


def _criterion(param: SearchParam, modifier: str | None, text: str) -> Criterion:
    name = param.name if modifier is None else f"{param.name}:{modifier}"
    if param.field is Field.ID:
        ids = tuple(_unescape(v) for v in _values(text))
        if not all(_ID_PATTERN.match(i) for i in ids):
            raise SearchParameterError(name, "not a valid resource id")
        return IdCriterion(ids)
    if param.field in (Field.LAST_UPDATED, Field.DUE):
        return DateCriterion(param.field, parse_date_bound(name, text))
    if param.field is Field.OWNER:
        if modifier == "identifier":
            return TokenCriterion(param.field, _tokens(name, text, need_code=True))
        return ReferenceCriterion(param.field, tuple(_reference(name, v) for v in _values(text)))
    if param.field is Field.PATIENT:
        return _patient(name, modifier, text)
    if param.field is Field.TARGET:
        return ReferenceCriterion(param.field, tuple(_reference(name, v) for v in _values(text)))
    return TokenCriterion(param.field, _tokens(name, text, need_code=param.field is Field.STATUS))


def _count(text: str, max_count: int) -> int:
    if not text.isdigit():
        raise SearchParameterError("_count", "expected a whole number, 0 or more")
    return min(int(text), max_count)


@dataclass(slots=True)
class _Result:
    """The result parameters of one search, as they are read."""

    resource_type: str
    count: int | None = None
    cursor: Cursor | None = None
    summary_count: bool = False
    elements: tuple[str, ...] = ()
    sort: tuple[Field, bool] | None = None
    include: tuple[str, ...] = ()


def _sort(value: str, result: _Result) -> bool:
    keys = [k.strip() for k in value.split(",") if k.strip()]
    if len(keys) != 1:
        return False
    descending = keys[0].startswith("-")
    name = keys[0].removeprefix("-")
    fields = {"_lastUpdated": Field.LAST_UPDATED, **SORTS.get(result.resource_type, {})}
    if name not in fields:
        return False
    result.sort = (fields[name], descending)
    return True


def _result_parameter(key: str, value: str, result: _Result, max_count: int) -> bool:
    """Apply one result parameter; False if its value is one this facade does not support."""
    if key == "_format":
        if value and value not in _FORMATS:
            raise SearchParameterError(key, "only JSON is served")
    elif key == "_count":
        if result.count is not None:
            raise SearchParameterError(key, "given more than once")
        result.count = _count(value, max_count)
    elif key == "_page":
        if result.cursor is not None:
            raise SearchParameterError(key, "given more than once")
        result.cursor = parse_cursor(value)
    elif key == "_summary":
        if value not in ("count", "false"):
            return False
        result.summary_count = value == "count"
    elif key == "_total":
        return value in _TOTALS
    elif key == "_sort":
        return _sort(value, result)
    elif key == "_include":
        element = INCLUDES.get(result.resource_type, {}).get(value)
        if element is None:
            return False
        result.include = (*result.include, element)
    elif key == "_elements":
        names = tuple(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))
        if not all(_ELEMENT.match(n) for n in names):
            raise SearchParameterError(key, "expected element names, e.g. _elements=status,for")
        result.elements = names
    return True


_RESULT_PARAMETERS = frozenset(
    {"_count", "_page", "_format", "_summary", "_total", "_elements", "_sort", "_include"}
)
_LINKED = frozenset({"_summary", "_total", "_elements", "_sort", "_include"})


def parse_search(
    resource_type: str,
    items: Iterable[tuple[str, str]],
    *,
    default_count: int = DEFAULT_COUNT,
    max_count: int = MAX_COUNT,
    strict: bool = False,
) -> SearchQuery:
    """Parse the query parameters of a search on ``resource_type`` (SearchParameterError if bad).

    ``items`` are the decoded ``(name, value)`` pairs in request order. ``_count`` above
    ``max_count`` is lowered to it, as FHIR allows; an empty value is ignored, as FHIR requires.
    Unsupported parameters are ignored, or refused when ``strict``.
    """
    table = SEARCH_PARAMETERS.get(resource_type)
    if table is None:
        supported = ", ".join(RESOURCE_TYPES)
        raise SearchParameterError("type", f"'{resource_type}' is not served (served: {supported})")
    by_name = {p.name: p for p in table}
    criteria: list[Criterion] = []
    accepted: list[tuple[str, str]] = []
    ignored: list[str] = []
    result = _Result(resource_type)
    values = 0

    def unsupported(key: str, reason: str) -> None:
        if strict:
            raise SearchParameterError(key, reason)
        ignored.append(key)

    for position, (key, raw) in enumerate(items):
        value = raw.strip()
        name, _, modifier = key.partition(":")
        if position >= MAX_PARAMETERS:
            raise SearchParameterError(key, f"a search takes at most {MAX_PARAMETERS} parameters")
        if len(value) > MAX_VALUE_LENGTH:
            raise SearchParameterError(key, f"the value is over {MAX_VALUE_LENGTH} characters")
        if key in _RESULT_PARAMETERS:
            if not _result_parameter(key, value, result, max_count):
                unsupported(key, f"the value '{value[:40]}' is not supported")
            elif key in _LINKED and value:
                accepted.append((key, value))
            continue
        param = by_name.get(name)
        if param is None:
            known = ", ".join(sorted([*by_name, *_RESULT_PARAMETERS]))
            unsupported(name, f"not supported on {resource_type} (supported: {known})")
            continue
        if modifier and modifier not in param.modifiers:
            unsupported(key, f"modifier ':{modifier}' is not supported")
            continue
        if value == "":
            continue
        values += len(_values(value))
        if values > MAX_VALUES:
            raise SearchParameterError(key, f"a search takes at most {MAX_VALUES} values in all")
        criteria.append(_criterion(param, modifier or None, value))
        accepted.append((key, value))
    return SearchQuery(
        resource_type=resource_type,
        criteria=tuple(criteria),
        count=default_count if result.count is None else result.count,
        cursor=result.cursor,
        params=tuple(sorted(accepted)),
        summary_count=result.summary_count,
        elements=result.elements,
        ignored=tuple(ignored),
        sort=result.sort,
        include=result.include,
    )
