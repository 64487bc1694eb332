"""Messages: find a message, see its ACK, its trace (rule -> action -> case), the FHIR resources
it changed, and, on request, the message itself. I/O (the messages API; the outbox Bundles).

Searches are POSTed forms, and so is paging through their results: a patient identifier is PHI
and must not end up in a URL (browser history, proxy logs, the Referer). Page titles name
message ids only. "Show raw message" is a POST as well, so each view of the content is a
deliberate act, audited by the API as ``read-raw``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from cm_fhir.console import queries
from cm_fhir.console.deps import ConsoleDep, FormError, api_message, api_page
from cm_fhir.console.diff import bundle_diff
from cm_fhir.store.tables import InboxState

__all__ = ["FILTERS", "router"]

router = APIRouter(prefix="/console/messages")

PAGE_SIZE = 50
#: Form field -> API query parameter.
FILTERS = {
    "control_id": "control_id",
    "patient": "patient",
    "sender": "sender",
    "event": "event",
    "state": "state",
    "received_from": "received_from",
    "received_to": "received_to",
}
STATES = [s.value for s in InboxState]


async def _search(console: ConsoleDep, fields: dict[str, str], error: str | None) -> Response:
    params: dict[str, Any] = {api: fields.get(name) for name, api in FILTERS.items()}
    cursor = fields.get("cursor") or None
    items, next_cursor, refused = await api_page(
        console, "/api/messages", limit=PAGE_SIZE, cursor=cursor, **params
    )
    error = error or refused
    return console.page(
        "messages.html",
        title="Messages",
        current="Messages",
        filters={name: fields.get(name, "") for name in FILTERS},
        states=STATES,
        items=items,
        next_cursor=next_cursor,
        error=error,
        searched=bool(fields),
    )


@router.get("", summary="Messages: the search form and the newest messages")
async def messages(console: ConsoleDep) -> Response:
    return await _search(console, {}, None)


@router.post("", summary="Messages: search (the filters travel in the body, never the URL)")
async def search(console: ConsoleDep) -> Response:
    try:
        fields = await console.form()
    except FormError as exc:
        refused = await _search(console, {}, str(exc))
        refused.status_code = 400
        return refused
    return await _search(console, fields, None)


async def _detail(console: ConsoleDep, message_id: int, raw: bool) -> Response:
    answer = await console.api.get(
        f"/api/messages/{message_id}", include_raw="true" if raw else None
    )
    if answer.status_code != 200:
        return console.page(
            "message.html",
            answer.status_code,
            title=f"Message {message_id}",
            current="Messages",
            message=None,
            error=api_message(answer),
        )
    message = answer.json()
    changes = []
    if message["outbox"]:
        pairs = await queries.bundles_of_message(console.context.engine, message_id)
        await console.auditor().record_many("read", "outbox", [str(p.outbox_id) for p in pairs])
        changes = [(pair, bundle_diff(pair.before, pair.after)) for pair in pairs]
    return console.page(
        "message.html",
        title=f"Message {message_id}",
        current="Messages",
        message=message,
        changes=changes,
        raw=raw,
        can_write=console.session.can("write"),
    )


@router.get("/{message_id}", summary="One message: ACK, trace, FHIR changes")
async def message(console: ConsoleDep, message_id: int) -> Response:
    return await _detail(console, message_id, raw=False)


@router.post("/{message_id}/raw", summary="One message with its content (audited)")
async def message_raw(console: ConsoleDep, message_id: int) -> Response:
    try:
        await console.form()
    except FormError:
        refused = await _detail(console, message_id, raw=False)
        refused.status_code = 400
        return refused
    return await _detail(console, message_id, raw=True)
