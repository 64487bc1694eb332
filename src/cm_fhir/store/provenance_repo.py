"""Provenance for the FHIR facade, built from the ``trace`` table. I/O (database).

A change is the trace rows of one inbox message for one case, or, without an inbox message (a
change through the case API, a closing by the worker), the trace rows one commit wrote for one
case (same ``created_at``). Grouping is done in SQL (``GROUP BY case_id, inbox id, created_at
when there is no inbox id``), so searches page with the same keyset cursor as stored types,
ordered by the change's first trace row. The Provenance JSON itself comes from
:func:`cm_fhir.facade.provenance.provenance`, with the current case resolving target types.
Search criteria: ``_id``, ``patient`` (the case's primary patient identifier), ``_lastUpdated``
(when the change was committed) and ``target``. Synchronous Connection; call through run_sync.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, case, false, func, or_, select

from cm_fhir.domain import Case
from cm_fhir.facade import (
    DateCriterion,
    Direction,
    Field,
    IdCriterion,
    Page,
    ReferenceCriterion,
    SearchQuery,
    TokenCriterion,
)
from cm_fhir.facade.paging import Cursor
from cm_fhir.facade.provenance import ChangeStep, provenance, provenance_number
from cm_fhir.fhir.ids import split_local_value
from cm_fhir.mapping.registry import MappingRegistry
from cm_fhir.store.case_tables import cases, fhir_resources, trace
from cm_fhir.store.fhir_repo import token_condition, utc

__all__ = ["read_provenance", "search_provenance"]

Json = dict[str, Any]
_t = trace
# Rows of one inbox message group by its id; rows without one by the commit that wrote them.
_commit = case((_t.c.inbox_message_id.is_(None), _t.c.created_at), else_=None)
_first = func.min(_t.c.id)
_recorded = func.max(_t.c.created_at)


def _target_condition(connection: Connection, refs: tuple[tuple[str, str], ...]) -> Any:
    """Groups that touched one of the referenced resources (resolved through fhir_resources)."""
    options: list[ColumnElement[bool]] = []
    for resource_type, rid in refs:
        row = connection.execute(
            select(fhir_resources.c.case_id, fhir_resources.c.identifier).where(
                fhir_resources.c.resource_type == resource_type, fhir_resources.c.id == rid
            )
        ).first()
        if row is None:
            continue
        if resource_type == "EpisodeOfCare":
            options.append(_t.c.case_id == row.case_id)
            continue
        value = str(row.identifier).rsplit("|", 1)[-1]
        try:
            local = split_local_value(value, row.case_id, "identifier")[0]
        except ValueError:
            continue
        touched = func.sum(case((_t.c.target == local, 1), else_=0)) > 0
        options.append(and_(_t.c.case_id == row.case_id, touched))
    return or_(false(), *options)


def _filters(connection: Connection, query: SearchQuery) -> tuple[list[Any], list[Any]]:
    """(WHERE conditions on rows, HAVING conditions on groups)."""
    where: list[Any] = [_t.c.case_id.is_not(None)]
    having: list[Any] = []
    for criterion in query.criteria:
        if isinstance(criterion, IdCriterion):
            numbers = [provenance_number(i) for i in criterion.any_of]
            having.append(_first.in_([n for n in numbers if n is not None]))
        elif isinstance(criterion, DateCriterion):
            if criterion.bound.lower is not None:
                having.append(_recorded >= utc(criterion.bound.lower))
            if criterion.bound.upper is not None:
                having.append(_recorded < utc(criterion.bound.upper))
        elif isinstance(criterion, TokenCriterion) and criterion.field is Field.PATIENT:
            match = or_(
                false(), *[token_condition(cases.c.patient_key, t) for t in criterion.any_of]
            )
            where.append(_t.c.case_id.in_(select(cases.c.case_id).where(match)))
        elif isinstance(criterion, ReferenceCriterion):
            having.append(_target_condition(connection, criterion.any_of))
        else:
            raise AssertionError(f"{type(criterion).__name__} does not apply to Provenance")
    return where, having


def _groups(where: list[Any], having: list[Any]) -> Any:
    query = (
        select(
            _first.label("first_id"),
            _recorded.label("recorded"),
            _t.c.case_id,
            _t.c.inbox_message_id.label("inbox"),
            _commit.label("commit_at"),
        )
        .where(*where)
        .group_by(_t.c.case_id, _t.c.inbox_message_id, _commit)
    )
    return query.having(and_(*having)) if having else query


def _build(connection: Connection, registry: MappingRegistry, groups: list[Any]) -> list[Json]:
    if not groups:
        return []
    ids = sorted({g.case_id for g in groups})
    stored = {
        r.case_id: Case.model_validate_json(r.case_json)
        for r in connection.execute(
            select(cases.c.case_id, cases.c.case_json).where(cases.c.case_id.in_(ids))
        )
    }
    out = []
    for g in groups:
        rows = connection.execute(
            select(_t).where(_t.c.case_id == g.case_id, *_same_change(g)).order_by(_t.c.id)
        ).all()
        steps = [
            ChangeStep(
                r.rule,
                r.action,
                r.target,
                r.event,
                r.message_control_id,
                r.message_key,
                r.inbox_message_id,
            )
            for r in rows
        ]
        out.append(
            provenance(
                registry, int(g.first_id), g.case_id, stored.get(g.case_id), utc(g.recorded), steps
            )
        )
    return out


def _same_change(group: Any) -> list[ColumnElement[bool]]:
    if group.inbox is not None:
        return [_t.c.inbox_message_id == group.inbox]
    return [_t.c.inbox_message_id.is_(None), _t.c.created_at == group.commit_at]


def read_provenance(connection: Connection, registry: MappingRegistry, rid: str) -> Json | None:
    """The Provenance with this id, or None."""
    number = provenance_number(rid)
    if number is None:
        return None
    groups = connection.execute(_groups([_t.c.case_id.is_not(None)], [_first == number])).all()
    built = _build(connection, registry, list(groups))
    return built[0] if built else None


def search_provenance(
    connection: Connection, registry: MappingRegistry, query: SearchQuery
) -> Page:
    """One page of a Provenance search, in the order of the changes' first trace rows."""
    where, having = _filters(connection, query)
    base = _groups(where, having).subquery()
    total = connection.execute(select(func.count()).select_from(base)).scalar_one()
    if query.count == 0:
        return Page([], has_previous=False, has_next=False, total=int(total))
    cursor: Cursor | None = query.cursor
    pivot = provenance_number(cursor.id) if cursor is not None else None
    if cursor is not None and pivot is None:
        return Page([], has_previous=False, has_next=False, total=int(total))
    page = select(base)
    if cursor is None or cursor.direction is Direction.AFTER:
        if pivot is not None:
            page = page.where(base.c.first_id > pivot)
        rows = list(connection.execute(page.order_by(base.c.first_id).limit(query.count + 1)))
        has_next = len(rows) > query.count
        rows = rows[: query.count]
        has_previous = pivot is not None and _any(connection, base, base.c.first_id <= pivot)
    else:
        assert pivot is not None
        page = page.where(base.c.first_id < pivot).order_by(base.c.first_id.desc())
        rows = list(connection.execute(page.limit(query.count + 1)))
        has_previous = len(rows) > query.count
        rows = list(reversed(rows[: query.count]))
        has_next = _any(connection, base, base.c.first_id >= pivot)
    return Page(_build(connection, registry, rows), has_previous, has_next, int(total))


def _any(connection: Connection, base: Any, condition: Any) -> bool:
    return connection.execute(select(base.c.first_id).where(condition).limit(1)).first() is not None
