"""Overview: is the feed flowing? Message flow per hour and sender (an SVG chart made here),
the inbox backlog, the outbox per endpoint, cases opened and closed today. Refreshes itself.
I/O (database reads; the outbox API)."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter
from fastapi.responses import Response

from cm_fhir.console import queries
from cm_fhir.console.chart import flow_chart
from cm_fhir.console.deps import ConsoleDep, api_message

__all__ = ["router"]

router = APIRouter(prefix="/console")

REFRESH_SECONDS = 30
MAX_SENDER_CHARTS = 6


def _age(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


@router.get("", summary="Overview")
async def overview(console: ConsoleDep) -> Response:
    engine = console.context.engine
    now = console.now()
    flow = await queries.message_flow(engine, now)
    charts = [("All senders", flow_chart("All senders", flow.hours, flow.total))]
    charts += [
        (sender, flow_chart(sender, flow.hours, series))
        for sender, series in list(flow.senders.items())[:MAX_SENDER_CHARTS]
    ]
    waiting = await queries.backlog(engine)
    opened, closed = await queries.cases_today(engine, now)
    answer = await console.api.get("/api/outbox")
    outbox = answer.json()["counts"] if answer.status_code == 200 else []
    endpoints: dict[str, dict[str, int]] = {}
    for count in outbox:
        endpoints.setdefault(count["endpoint"], {})[count["state"]] = count["count"]
    return console.page(
        "overview.html",
        title="Overview",
        current="Overview",
        charts=charts,
        backlog=waiting.waiting,
        oldest_age=_age(now - waiting.oldest) if waiting.oldest else None,
        endpoints=endpoints,
        outbox_error=None if answer.status_code == 200 else api_message(answer),
        opened=opened,
        closed=closed,
        refreshed=now,
        refresh=REFRESH_SECONDS,
    )
