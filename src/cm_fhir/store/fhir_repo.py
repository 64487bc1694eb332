"""Queries of the read-only FHIR facade over ``fhir_resources`` and ``trace``. I/O (database).

:func:`read_resource` and :func:`search_resources` answer from the rows the worker (and the case
API) keep in ``fhir_resources``: the mapper's resources with relative references, served as
stored plus ``meta.versionId`` and ``meta.lastUpdated``. Criteria come from
:func:`cm_fhir.facade.parse_search`; results are in id order with keyset paging (see
:mod:`cm_fhir.facade.paging`). Provenance is not stored: :mod:`cm_fhir.store.provenance_repo`
builds it from the trace. Functions take a synchronous Connection (call through ``run_sync``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import (
    ColumnElement,
    Connection,
    DateTime,
    and_,
    cast,
    false,
    func,
    literal,
    or_,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB

from cm_fhir.facade import (
    Criterion,
    DateCriterion,
    Direction,
    Field,
    IdCriterion,
    Page,
    ReferenceCriterion,
    SearchQuery,
    Token,
    TokenCriterion,
)
from cm_fhir.store.case_tables import fhir_resources

__all__ = ["escape_like", "read_resource", "search_resources", "token_condition", "utc"]

Json = dict[str, Any]
_r = fhir_resources


def utc(value: datetime) -> datetime:
    """An aware UTC datetime (SQLite hands back naive UTC values)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def token_condition(column: Any, token: Token) -> ColumnElement[bool]:
    """Match a ``system|value`` column against a token (any system, no system, any code)."""
    if token.system is None:
        assert token.code is not None
        return column.like("%|" + escape_like(token.code), escape="\\")  # type: ignore[no-any-return]
    if token.code is None:
        return column.like(escape_like(token.system) + "|%", escape="\\")  # type: ignore[no-any-return]
    return column == f"{token.system}|{token.code}"  # type: ignore[no-any-return]


def _status(resource_type: str, tokens: tuple[Token, ...]) -> ColumnElement[bool]:
    codes = [t.code for t in tokens if t.code is not None]
    # The status column holds Goal.lifecycleStatus for Goals (see store.cases.resource_row).
    return _r.c.status.in_(codes)


def _json_text(dialect: str, *path: str) -> ColumnElement[Any]:
    """A string element of the stored resource, by path (SQLite json_extract; PostgreSQL jsonb)."""
    if dialect == "postgresql":
        return func.jsonb_extract_path_text(cast(_r.c.resource, JSONB), *path)
    return func.json_extract(_r.c.resource, "$." + ".".join(path))


def _instant(dialect: str, value: Any) -> ColumnElement[Any]:
    """A comparable instant of a dateTime string with its offset (or of a Python datetime)."""
    if dialect == "postgresql":
        if isinstance(value, datetime):
            return literal(utc(value), DateTime(timezone=True))
        return cast(value, DateTime(timezone=True))
    if isinstance(value, datetime):
        value = utc(value).strftime("%Y-%m-%dT%H:%M:%S")
    return func.julianday(value)


def sort_key(dialect: str, field: Field) -> ColumnElement[Any]:
    """What ``_sort`` orders by: the last update, or (Task) the due instant (missing: last)."""
    if field is Field.DUE:
        due = _instant(dialect, _json_text(dialect, "restriction", "period", "end"))
        far = _instant(dialect, datetime(9999, 12, 31, tzinfo=UTC))
        return func.coalesce(due, far)
    return _r.c.last_updated


def _dates(dialect: str, criterion: DateCriterion) -> ColumnElement[bool]:
    bound = criterion.bound
    if criterion.field is Field.DUE:
        due = _instant(dialect, _json_text(dialect, "restriction", "period", "end"))
        parts = []
        if bound.lower is not None:
            parts.append(due >= _instant(dialect, bound.lower))
        if bound.upper is not None:
            parts.append(due < _instant(dialect, bound.upper))
        return and_(due.is_not(None), *parts)
    parts = []
    if bound.lower is not None:
        parts.append(_r.c.last_updated >= utc(bound.lower))
    if bound.upper is not None:
        parts.append(_r.c.last_updated < utc(bound.upper))
    return and_(*parts)


def _owner(dialect: str, criterion: TokenCriterion | ReferenceCriterion) -> ColumnElement[bool]:
    if isinstance(criterion, ReferenceCriterion):
        reference = _json_text(dialect, "owner", "reference")
        return reference.in_([f"{t}/{i}" for t, i in criterion.any_of])
    system = _json_text(dialect, "owner", "identifier", "system")
    value = _json_text(dialect, "owner", "identifier", "value")
    options = []
    for token in criterion.any_of:
        parts = [value == token.code]
        if token.system is not None:
            parts.append(system == token.system if token.system else system.is_(None))
        options.append(and_(*parts))
    return or_(false(), *options)


def _condition(resource_type: str, criterion: Criterion, dialect: str) -> ColumnElement[bool]:
    if isinstance(criterion, IdCriterion):
        return _r.c.id.in_(criterion.any_of)
    if isinstance(criterion, DateCriterion):
        return _dates(dialect, criterion)
    if criterion.field is Field.OWNER and isinstance(
        criterion, TokenCriterion | ReferenceCriterion
    ):
        return _owner(dialect, criterion)
    if isinstance(criterion, TokenCriterion):
        if criterion.field is Field.STATUS:
            return _status(resource_type, criterion.any_of)
        column = _r.c.identifier if criterion.field is Field.IDENTIFIER else _r.c.patient_identifier
        return or_(false(), *[token_condition(column, t) for t in criterion.any_of])
    raise AssertionError(f"criterion {type(criterion).__name__} does not apply to stored types")


def _served(row: Any) -> Json:
    resource: Json = orjson.loads(row.resource)
    meta = dict(resource.get("meta") or {})
    meta["versionId"] = str(row.version_id)
    meta["lastUpdated"] = utc(row.last_updated).isoformat()
    resource["meta"] = meta  # the mapper always emits meta (profile) right after the id
    return resource


_COLUMNS = (_r.c.id, _r.c.resource, _r.c.version_id, _r.c.last_updated)


def read_resource(connection: Connection, resource_type: str, rid: str) -> Json | None:
    """The served resource ``resource_type/rid``, or None."""
    query = select(*_COLUMNS).where(_r.c.resource_type == resource_type, _r.c.id == rid)
    row = connection.execute(query).first()
    return _served(row) if row is not None else None


@dataclass(frozen=True, slots=True)
class _Order:
    """The order of a search: an optional sort key, then the id (keyset paging on both)."""

    key: ColumnElement[Any] | None
    descending: bool

    def columns(self, reverse: bool = False) -> list[Any]:
        id_order = _r.c.id.desc() if reverse else _r.c.id.asc()
        if self.key is None:
            return [id_order]
        key_desc = self.descending != reverse
        return [self.key.desc() if key_desc else self.key.asc(), id_order]

    def beyond(self, anchor: Any, rid: str, after: bool, inclusive: bool) -> ColumnElement[bool]:
        """Rows after (or before) the row ``(anchor, rid)`` in this order."""
        same_id = (
            (_r.c.id >= rid if inclusive else _r.c.id > rid)
            if after
            else (_r.c.id <= rid if inclusive else _r.c.id < rid)
        )
        if self.key is None:
            return same_id
        later = (self.key < anchor) if self.descending == after else (self.key > anchor)
        return or_(later, and_(self.key == anchor, same_id))


def _order(connection: Connection, query: SearchQuery) -> tuple[_Order, Any]:
    if query.sort is None:
        return _Order(None, False), None
    field, descending = query.sort
    key = sort_key(connection.dialect.name, field)
    anchor = None
    if query.cursor is not None:
        anchor = connection.execute(
            select(key).where(_r.c.resource_type == query.resource_type, _r.c.id == query.cursor.id)
        ).scalar()
    return _Order(key, descending), anchor


def search_resources(connection: Connection, query: SearchQuery) -> Page:
    """One page of a search on a stored type (everything but Provenance)."""
    dialect = connection.dialect.name
    where = [_r.c.resource_type == query.resource_type]
    where += [_condition(query.resource_type, c, dialect) for c in query.criteria]
    total = connection.execute(select(func.count()).select_from(_r).where(*where)).scalar_one()
    if query.count == 0:
        return Page([], has_previous=False, has_next=False, total=int(total))
    cursor = query.cursor
    order, anchor = _order(connection, query)
    page_query = select(*_COLUMNS).where(*where)
    if cursor is None or cursor.direction is Direction.AFTER:
        if cursor is not None:
            page_query = page_query.where(order.beyond(anchor, cursor.id, True, False))
        rows = connection.execute(
            page_query.order_by(*order.columns()).limit(query.count + 1)
        ).all()
        has_next = len(rows) > query.count
        rows = rows[: query.count]
        has_previous = cursor is not None and _exists(
            connection, where, order.beyond(anchor, cursor.id, False, True)
        )
    else:
        page_query = page_query.where(order.beyond(anchor, cursor.id, False, False))
        rows = connection.execute(
            page_query.order_by(*order.columns(reverse=True)).limit(query.count + 1)
        ).all()
        has_previous = len(rows) > query.count
        rows = list(reversed(rows[: query.count]))
        has_next = _exists(connection, where, order.beyond(anchor, cursor.id, True, True))
    resources = [_served(r) for r in rows]
    return Page(
        resources, has_previous, has_next, int(total), _included(connection, query, resources)
    )


def _included(connection: Connection, query: SearchQuery, resources: list[Json]) -> list[Json]:
    """The resources ``_include`` names (Task:focus, Task:based-on) that this server holds."""
    wanted: dict[tuple[str, str], None] = {}
    for resource in resources:
        for element in query.include:
            value = resource.get(element)
            for ref in value if isinstance(value, list) else [value]:
                target = ref.get("reference") if isinstance(ref, dict) else None
                if isinstance(target, str) and target.count("/") == 1:
                    kind, _, rid = target.partition("/")
                    wanted[(kind, rid)] = None
    found: list[Json] = []
    for kind, rid in wanted:
        target = read_resource(connection, kind, rid)
        if target is not None:
            found.append(target)
    return found


def _exists(connection: Connection, where: list[Any], extra: ColumnElement[bool]) -> bool:
    query = select(_r.c.id).where(*where, extra).limit(1)
    return connection.execute(query).first() is not None
