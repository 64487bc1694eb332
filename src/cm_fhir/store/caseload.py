"""Caseloads: open cases per case manager (the case's owner), with the limit each one carries.

Does I/O (database). A case is open while its status is not closed, cancelled or entered in error.
The owner is the ``cases.owner`` column (the case manager's display, else the owning team). The
limit comes from ``programmes.yaml`` through :meth:`ProgrammesSpec.caseload_limit_of`.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from cm_fhir.domain.codes import CaseStatus
from cm_fhir.mapping.programmes import ProgrammesSpec
from cm_fhir.store.case_tables import cases

__all__ = ["CLOSED_STATUSES", "Caseload", "caseloads"]

#: Statuses of a case no longer on anyone's caseload.
CLOSED_STATUSES = frozenset(
    {CaseStatus.CLOSED.value, CaseStatus.CANCELLED.value, CaseStatus.ENTERED_IN_ERROR.value}
)


@dataclass(frozen=True, slots=True)
class Caseload:
    """One case manager's open cases, and the limit they carry."""

    owner: str
    open_cases: int
    limit: int
    by_programme: dict[str, int]

    @property
    def over_limit(self) -> bool:
        return self.open_cases > self.limit


async def caseloads(connection: AsyncConnection, programmes: ProgrammesSpec) -> list[Caseload]:
    """Every owner holding an open case, by owner name."""
    query = select(cases.c.owner, cases.c.programme, cases.c.case_json).where(
        cases.c.owner.is_not(None), cases.c.status.not_in(sorted(CLOSED_STATUSES))
    )
    held: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
    for owner, programme, document in (await connection.execute(query)).all():
        models = tuple(orjson.loads(document).get("models", ()))
        held.setdefault(str(owner), []).append((str(programme), models))
    out: list[Caseload] = []
    for owner in sorted(held):
        open_cases = held[owner]
        counts: dict[str, int] = {}
        for programme, _ in open_cases:
            counts[programme] = counts.get(programme, 0) + 1
        limit = programmes.caseload_limit_of(open_cases)
        out.append(Caseload(owner, len(open_cases), limit, dict(sorted(counts.items()))))
    return out
