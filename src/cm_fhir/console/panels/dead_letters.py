"""Dead letters: why each failed for good, how often it was tried, which later messages of the
same patient wait behind it, and "Replay", which asks first, then releases the message (and
those behind it) through the API and shows its new state. I/O (the messages API)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from cm_fhir.console.deps import ConsoleDep, FormError, api_message
from cm_fhir.store.queue import WAITING_PREFIX

__all__ = ["router"]

router = APIRouter(prefix="/console/dead-letters")

PAGE_SIZE = 25


async def _held_back(console: ConsoleDep, message_id: int) -> list[dict[str, Any]]:
    answer = await console.api.get("/api/messages", error=f"{WAITING_PREFIX}{message_id}", limit=50)
    if answer.status_code != 200:
        return []
    items: list[dict[str, Any]] = answer.json()["items"]
    return [m for m in items if m.get("reason") == f"{WAITING_PREFIX}{message_id}"]


@router.get("", summary="Dead letters")
async def dead_letters(console: ConsoleDep, cursor: str | None = None) -> Response:
    answer = await console.api.get("/api/dead-letters", limit=PAGE_SIZE, cursor=cursor)
    if answer.status_code != 200:
        return console.page(
            "dead_letters.html",
            answer.status_code,
            title="Dead letters",
            current="Dead letters",
            rows=[],
            next_cursor=None,
            error=api_message(answer),
        )
    page = answer.json()
    rows = [(m, await _held_back(console, m["id"])) for m in page["items"]]
    return console.page(
        "dead_letters.html",
        title="Dead letters",
        current="Dead letters",
        rows=rows,
        next_cursor=page["next_cursor"],
        can_write=console.session.can("write"),
    )


async def _message(console: ConsoleDep, message_id: int) -> dict[str, Any] | None:
    answer = await console.api.get(f"/api/messages/{message_id}")
    return answer.json() if answer.status_code == 200 else None


@router.get("/{message_id}/replay", summary="Confirm the replay of a dead letter")
async def confirm_replay(console: ConsoleDep, message_id: int) -> Response:
    message = await _message(console, message_id)
    if message is None:
        return console.page(
            "replay.html",
            404,
            title=f"Replay message {message_id}",
            current="Dead letters",
            message=None,
            error="No such message.",
        )
    held = await _held_back(console, message_id)
    return console.page(
        "replay.html",
        title=f"Replay message {message_id}",
        current="Dead letters",
        message=message,
        held=held,
        confirm=True,
    )


@router.post("/{message_id}/replay", summary="Replay a dead letter")
async def replay(console: ConsoleDep, message_id: int) -> Response:
    title = f"Replay message {message_id}"
    try:
        await console.form()
    except FormError as exc:
        return console.page(
            "replay.html",
            400,
            title=title,
            current="Dead letters",
            message=await _message(console, message_id),
            held=[],
            confirm=True,
            error=str(exc),
        )
    answer = await console.api.request("POST", f"/api/messages/{message_id}/replay")
    if answer.status_code != 200:
        return console.page(
            "replay.html",
            answer.status_code,
            title=title,
            current="Dead letters",
            message=await _message(console, message_id),
            held=[],
            confirm=False,
            error=api_message(answer),
        )
    result = answer.json()
    skipped = result.get("skipped", {}).get(str(message_id))
    return console.page(
        "replay.html",
        title=title,
        current="Dead letters",
        message=await _message(console, message_id),
        held=[],
        confirm=False,
        notice=None if skipped else f"Message #{message_id} was released for processing.",
        error=f"Not replayed: {skipped}." if skipped else None,
    )
