"""The closing schedule on ``patient_states``: claim the states due for a check, reschedule. I/O.

Each state document carries ``close_check_at``, when its cases must next be checked for closing
(indexed; NULL when nothing can close). :func:`claim_due_states` takes the due documents oldest
first, locked ``FOR UPDATE SKIP LOCKED`` on PostgreSQL: a state another worker holds (for an
event or its own closing check) is skipped, never waited for, and never checked twice at once.
SQLite has one writer (``BEGIN IMMEDIATE``). Functions run in the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import Connection, bindparam, select, update

from cm_fhir.store.case_tables import patient_states
from cm_fhir.store.cases import StateRow

__all__ = ["claim_due_states", "set_close_checks"]

_s = patient_states


def claim_due_states(connection: Connection, now: datetime, limit: int) -> dict[str, StateRow]:
    """Up to ``limit`` state documents whose closing check is due at ``now``, locked."""
    query = (
        select(_s.c.patient_key, _s.c.alias_of, _s.c.document)
        .where(
            _s.c.close_check_at <= now,
            _s.c.document.is_not(None),
            _s.c.alias_of.is_(None),
        )
        .order_by(_s.c.close_check_at, _s.c.patient_key)
        .limit(limit)
    )
    if connection.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return {
        row.patient_key: StateRow(row.patient_key, row.alias_of, row.document)
        for row in connection.execute(query)
    }


_RESCHEDULE = (
    update(_s)
    .where(_s.c.patient_key == bindparam("key"))
    .values(close_check_at=bindparam("check_at"))
)


def set_close_checks(connection: Connection, checks: Mapping[str, datetime | None]) -> None:
    """Set the next closing check of states whose documents did not change."""
    if checks:
        connection.execute(_RESCHEDULE, [{"key": k, "check_at": v} for k, v in checks.items()])
