"""Overview: is the feed flowing? Message flow per hour and sender (an SVG chart made here),
the inbox backlog, the outbox and sync per endpoint (its circuit breaker and what the sync role
delivered, from ``/api/outbox/endpoints``), cases opened and closed today. Refreshes itself.
I/O (database reads; the outbox API)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

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


@dataclass(slots=True)
class EndpointRow:
    """One endpoint on the overview: outbox counts, and the sync role's view of it."""

    name: str
    counts: dict[str, int] = field(default_factory=dict)
    mode: str | None = None
    breaker: str | None = None
    delivery: dict[str, Any] | None = None


def _endpoints(counts: list[dict[str, Any]], infos: list[dict[str, Any]]) -> list[EndpointRow]:
    """Rows for every configured endpoint and every endpoint with outbox rows, by name."""
    rows: dict[str, EndpointRow] = {}
    for info in infos:
        delivery = info.get("delivery")
        rows[info["name"]] = EndpointRow(
            info["name"],
            mode=info["mode"],
            breaker=delivery["breaker"] if delivery else None,
            delivery=delivery,
        )
    for count in counts:
        row = rows.setdefault(count["endpoint"], EndpointRow(count["endpoint"]))
        row.counts[count["state"]] = int(count["count"])
    return [rows[name] for name in sorted(rows)]


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
    described = await console.api.get("/api/outbox/endpoints")
    outbox = answer.json()["counts"] if answer.status_code == 200 else []
    infos = described.json() if described.status_code == 200 else []
    endpoints = _endpoints(outbox, infos)
    failed = answer if answer.status_code != 200 else described
    return console.page(
        "overview.html",
        title="Overview",
        current="Overview",
        charts=charts,
        backlog=waiting.waiting,
        oldest_age=_age(now - waiting.oldest) if waiting.oldest else None,
        endpoints=endpoints,
        outbox_error=None if failed.status_code == 200 else api_message(failed),
        opened=opened,
        closed=closed,
        refreshed=now,
        refresh=REFRESH_SECONDS,
    )
