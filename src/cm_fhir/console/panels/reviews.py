"""Reviews: the utilization reviews on payer cases (the reviewer's queue), pended first, then by
decision deadline, with the overdue ones marked; filtered by decision and paged with the API's
cursor. I/O (``GET /api/utilization-reviews``). A case's own reviews are on its case page."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from cm_fhir.console.deps import ConsoleDep, api_message
from cm_fhir.domain import ReviewDecision

__all__ = ["router"]

router = APIRouter(prefix="/console/reviews")

PAGE_SIZE = 50
DECISIONS = [d.value for d in ReviewDecision]


@router.get("", summary="Utilization reviews")
async def reviews(
    console: ConsoleDep, status: str | None = None, cursor: str | None = None
) -> Response:
    chosen = status if status in DECISIONS else None
    answer = await console.api.get(
        "/api/utilization-reviews", status=chosen, cursor=cursor, limit=PAGE_SIZE
    )
    page: dict[str, Any] = {"items": [], "next_cursor": None}
    error = None
    if answer.status_code == 200:
        page = answer.json()
    else:
        error = api_message(answer)
    return console.page(
        "reviews.html",
        answer.status_code if error else 200,
        title="Reviews",
        current="Reviews",
        items=page["items"],
        next_cursor=page["next_cursor"],
        decision=chosen or "",
        decisions=DECISIONS,
        error=error,
    )
