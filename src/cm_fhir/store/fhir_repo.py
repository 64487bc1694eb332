"""Queries of the read-only FHIR facade over ``fhir_resources`` and ``trace``. I/O (database).

:func:`read_resource` and :func:`search_resources` answer from the rows the worker (and the case
API) keep in ``fhir_resources``: the mapper's resources with relative references, served as
stored plus ``meta.versionId`` and ``meta.lastUpdated``. Criteria come from
:func:`cm_fhir.facade.parse_search`; results are in id order with keyset paging (see
:mod:`cm_fhir.facade.paging`). Provenance is not stored: :mod:`cm_fhir.store.provenance_repo`
builds it from the trace. Functions take a synchronous Connection (call through ``run_sync``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import ColumnElement, Connection, and_, false, func, or_, select

from cm_fhir.facade import (
    Criterion,
    DateCriterion,
    Direction,
    Field,
    IdCriterion,
    Page,
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


def _condition(resource_type: str, criterion: Criterion) -> ColumnElement[bool]:
    if isinstance(criterion, IdCriterion):
        return _r.c.id.in_(criterion.any_of)
    if isinstance(criterion, DateCriterion):
        parts = []
        if criterion.bound.lower is not None:
            parts.append(_r.c.last_updated >= utc(criterion.bound.lower))
        if criterion.bound.upper is not None:
            parts.append(_r.c.last_updated < utc(criterion.bound.upper))
        return and_(*parts)
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


def search_resources(connection: Connection, query: SearchQuery) -> Page:
    """One page of a search on a stored type (everything but Provenance)."""
    where = [_r.c.resource_type == query.resource_type]
    where += [_condition(query.resource_type, c) for c in query.criteria]
    total = connection.execute(select(func.count()).select_from(_r).where(*where)).scalar_one()
    if query.count == 0:
        return Page([], has_previous=False, has_next=False, total=int(total))
    cursor = query.cursor
    page_query = select(*_COLUMNS).where(*where)
    if cursor is None or cursor.direction is Direction.AFTER:
        if cursor is not None:
            page_query = page_query.where(_r.c.id > cursor.id)
        rows = connection.execute(page_query.order_by(_r.c.id).limit(query.count + 1)).all()
        has_next = len(rows) > query.count
        rows = rows[: query.count]
        has_previous = cursor is not None and _exists(connection, where, _r.c.id <= cursor.id)
    else:
        page_query = page_query.where(_r.c.id < cursor.id)
        rows = connection.execute(page_query.order_by(_r.c.id.desc()).limit(query.count + 1)).all()
        has_previous = len(rows) > query.count
        rows = list(reversed(rows[: query.count]))
        has_next = _exists(connection, where, _r.c.id >= cursor.id)
    return Page([_served(r) for r in rows], has_previous, has_next, int(total))


def _exists(connection: Connection, where: list[Any], extra: ColumnElement[bool]) -> bool:
    query = select(_r.c.id).where(*where, extra).limit(1)
    return connection.execute(query).first() is not None
