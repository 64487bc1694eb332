"""Caseloads over HTTP: ``GET /api/case-managers``. I/O (database).

Each case manager (a case's owner) with their open cases, per programme, and the caseload limit
``programmes.yaml`` sets for them; ``over_limit`` when they hold more. Counts and staff names only,
no patient data, so the listing is not audited.
"""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from cm_fhir.api.deps import ContextDep, ReadPrincipal
from cm_fhir.store.caseload import caseloads

__all__ = ["CaseManager", "CaseManagers", "router"]

router = APIRouter(prefix="/api/case-managers", tags=["cases"])


class CaseManager(BaseModel):
    owner: str
    """The case manager's display (else the owning team), as on the case."""
    open_cases: int
    """Cases they hold that are not closed, cancelled or entered in error."""
    limit: int
    """The smallest caseload limit any of their open cases sets (programmes.yaml)."""
    over_limit: bool
    """Whether they hold more open cases than their limit."""
    by_programme: dict[str, int]
    """Open cases per programme code."""


class CaseManagers(BaseModel):
    case_managers: list[CaseManager]


@router.get("", summary="Open cases per case manager, with each one's caseload limit")
async def case_managers(context: ContextDep, _: ReadPrincipal) -> CaseManagers:
    async with context.engine.connect() as connection:
        found = await caseloads(connection, context.programmes)
    return CaseManagers(
        case_managers=[
            CaseManager(
                owner=c.owner,
                open_cases=c.open_cases,
                limit=c.limit,
                over_limit=c.over_limit,
                by_programme=c.by_programme,
            )
            for c in found
        ]
    )
