"""Outbox: the FHIR writes per endpoint, pending, failed and sent, with the reason a write
failed, and "Resend" per entry and per endpoint (through ``POST /api/outbox/resend``: the rules
of ``cm-fhir outbox resend``, the ``write`` scope, CSRF on the form). I/O (the outbox API).
Paged with the API's cursor (row ids, no patient data)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import Response

from cm_fhir.console.deps import ConsoleDep, FormError, api_message

__all__ = ["router"]

router = APIRouter(prefix="/console/outbox")

PAGE_SIZE = 50
StateFilter = Literal["pending", "failed", "sent"]


def _per_endpoint(counts: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """The API's counts (one per endpoint and state) as endpoint -> state -> count."""
    endpoints: dict[str, dict[str, dict[str, Any]]] = {}
    for count in counts:
        endpoints.setdefault(count["endpoint"], {})[count["state"]] = count
    return endpoints


async def _page(
    console: ConsoleDep,
    state: str | None,
    cursor: str | None,
    *,
    status: int = 200,
    notice: str | None = None,
    error: str | None = None,
) -> Response:
    counts = await console.api.get("/api/outbox")
    items = await console.api.get("/api/outbox/items", state=state, cursor=cursor, limit=PAGE_SIZE)
    if error is None and counts.status_code != 200:
        error = api_message(counts)
    elif error is None and items.status_code != 200:
        error = api_message(items)
    page: dict[str, Any] = (
        items.json() if items.status_code == 200 else {"items": [], "next_cursor": None}
    )
    return console.page(
        "outbox.html",
        status,
        title="Outbox",
        current="Outbox",
        endpoints=_per_endpoint(counts.json()["counts"] if counts.status_code == 200 else []),
        items=page["items"],
        next_cursor=page["next_cursor"],
        state=state or "",
        can_write=console.session.can("write"),
        notice=notice,
        error=error,
    )


@router.get("", summary="Outbox")
async def outbox(
    console: ConsoleDep, state: StateFilter | None = None, cursor: str | None = None
) -> Response:
    return await _page(console, state, cursor)


def _resend_body(fields: dict[str, str]) -> dict[str, Any]:
    body: dict[str, Any] = {"all": fields.get("all") == "true"}
    for name in ("endpoint", "case_id"):
        if fields.get(name):
            body[name] = fields[name]
    return body


@router.post("/resend", summary="Send an entry, or an endpoint's failed entries, again")
async def resend(console: ConsoleDep) -> Response:
    try:
        fields = await console.form()
    except FormError as exc:
        return await _page(console, None, None, status=400, error=str(exc))
    state = fields.get("state") if fields.get("state") in ("pending", "failed", "sent") else None
    answer = await console.api.request("POST", "/api/outbox/resend", json=_resend_body(fields))
    if answer.status_code != 200:
        return await _page(
            console, state, None, status=answer.status_code, error=api_message(answer)
        )
    marked = int(answer.json()["marked"])
    if marked:
        notice = f"{marked} entr{'y' if marked == 1 else 'ies'} marked for resending."
    else:
        notice = "Nothing to resend: no matching case has a failed newest entry."
    return await _page(console, state, None, notice=notice)
