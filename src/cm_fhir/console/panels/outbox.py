"""Outbox: the FHIR writes per endpoint, pending, failed and sent, with the reason a write
failed. I/O (the outbox API). Paged with the API's cursor (row ids, no patient data)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from fastapi.responses import Response

from cm_fhir.console.deps import ConsoleDep, api_message

__all__ = ["router"]

router = APIRouter(prefix="/console/outbox")

PAGE_SIZE = 50


@router.get("", summary="Outbox")
async def outbox(
    console: ConsoleDep,
    state: Literal["pending", "failed", "sent"] | None = None,
    before: int | None = None,
) -> Response:
    counts = await console.api.get("/api/outbox")
    items = await console.api.get("/api/outbox/items", state=state, before=before, limit=PAGE_SIZE)
    error = None
    if counts.status_code != 200:
        error = api_message(counts)
    elif items.status_code != 200:
        error = api_message(items)
    page = items.json() if items.status_code == 200 else {"items": [], "next_before": None}
    return console.page(
        "outbox.html",
        title="Outbox",
        current="Outbox",
        counts=counts.json()["counts"] if counts.status_code == 200 else [],
        items=page["items"],
        next_before=page["next_before"],
        state=state or "",
        error=error,
    )
