"""``GET /metrics``: Prometheus text, computed from the database at scrape time. I/O.

Counts come from the tables, not from process memory, so every process (and a restart) reports
the same figures: messages by type, event, ACK code and state; processing latency (received to
settled) as a histogram; queue depths and the age of the oldest queued message; dead letters and
the rows waiting behind them; trace entries per workflow flag (``unmapped-disposition``,
``no-visit-number``, ...); outbox rows by state and the age of the oldest pending one. The
listener's connection counters of this process are added when it runs here. Labels hold codes
only (event, state, ACK code), never patient data. Needs the ``read`` scope like the rest of /api.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import case, func, literal, select
from sqlalchemy.ext.asyncio import AsyncConnection

from cm_fhir.api.deps import ContextDep, ReadPrincipal
from cm_fhir.listener import LISTENER_COUNTERS, ListenerStats
from cm_fhir.store.case_tables import outbox, trace
from cm_fhir.store.caseload import Caseload, caseloads
from cm_fhir.store.queue import WAITING_PREFIX
from cm_fhir.store.tables import INBOX_STATES, InboxState, inbox_messages
from cm_fhir.workflow import Flag

__all__ = ["LATENCY_BUCKETS", "router"]

router = APIRouter(tags=["metrics"])
_t = inbox_messages
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
_SETTLED = (
    InboxState.PROCESSED.value,
    InboxState.FAILED.value,
    InboxState.DEAD_LETTERED.value,
    InboxState.NEEDS_ATTENTION.value,
)


@dataclass(slots=True)
class _Snapshot:
    messages: list[tuple[str, str, str, str, int]] = field(default_factory=list)
    states: dict[str, int] = field(default_factory=dict)
    oldest_received_age: float = 0.0
    waiting: int = 0
    latency_buckets: list[int] = field(default_factory=list)
    latency_count: int = 0
    latency_sum: float = 0.0
    outbox_states: dict[str, int] = field(default_factory=dict)
    oldest_pending_age: float = 0.0
    flags: dict[str, int] = field(default_factory=dict)
    listener: ListenerStats | None = None
    caseloads: list[Caseload] = field(default_factory=list)


def _seconds_between(connection: AsyncConnection, start: Any, end: Any) -> Any:
    if connection.dialect.name == "sqlite":
        return (func.julianday(end) - func.julianday(start)) * literal(86400.0)
    return func.extract("epoch", end - start)


def _age(oldest: datetime | None, now: datetime) -> float:
    if oldest is None:
        return 0.0
    if oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=UTC)
    return max(0.0, (now - oldest).total_seconds())


async def _snapshot(connection: AsyncConnection) -> _Snapshot:
    now = datetime.now(UTC)
    snap = _Snapshot()
    grouped = select(
        func.coalesce(_t.c.message_type, ""),
        func.coalesce(_t.c.trigger_event, ""),
        func.coalesce(_t.c.ack_code, ""),
        _t.c.state,
        func.count(),
    ).group_by(_t.c.message_type, _t.c.trigger_event, _t.c.ack_code, _t.c.state)
    for kind, event, ack, state, count in (await connection.execute(grouped)).all():
        snap.messages.append((kind, event, ack, state, int(count)))
        snap.states[state] = snap.states.get(state, 0) + int(count)
    received = _t.c.state == InboxState.RECEIVED.value
    oldest = (await connection.execute(select(func.min(_t.c.received_at)).where(received))).scalar()
    snap.oldest_received_age = _age(oldest, now)
    snap.waiting = int(
        (
            await connection.execute(
                select(func.count()).where(received, _t.c.reason.startswith(WAITING_PREFIX))
            )
        ).scalar_one()
    )
    seconds = _seconds_between(connection, _t.c.received_at, _t.c.updated_at)
    columns = [func.sum(case((seconds <= bound, 1), else_=0)) for bound in LATENCY_BUCKETS]
    latency = select(*columns, func.count(), func.sum(seconds)).where(_t.c.state.in_(_SETTLED))
    row = (await connection.execute(latency)).one()
    snap.latency_buckets = [int(value or 0) for value in row[: len(LATENCY_BUCKETS)]]
    snap.latency_count = int(row[-2] or 0)
    snap.latency_sum = float(row[-1] or 0.0)
    by_state = select(outbox.c.state, func.count()).group_by(outbox.c.state)
    snap.outbox_states = {
        str(state): int(count) for state, count in (await connection.execute(by_state)).all()
    }
    pending = select(func.min(outbox.c.created_at)).where(outbox.c.state == "pending")
    snap.oldest_pending_age = _age((await connection.execute(pending)).scalar(), now)
    flagged = select(trace.c.flags, func.count()).where(trace.c.flags.is_not(None))
    for flags, count in (await connection.execute(flagged.group_by(trace.c.flags))).all():
        for flag in str(flags).split(","):
            snap.flags[flag] = snap.flags.get(flag, 0) + int(count)
    return snap


class _SnapshotCollector(Collector):
    def __init__(self, snap: _Snapshot) -> None:
        self._snap = snap

    def collect(self) -> Iterator[Metric]:
        snap = self._snap
        messages = CounterMetricFamily(
            "cm_fhir_inbox_messages",
            "Inbox messages stored, by message type, event, ACK code and state.",
            labels=["message_type", "event", "ack_code", "state"],
        )
        for kind, event, ack, state, count in snap.messages:
            messages.add_metric([kind, event, ack, state], count)
        yield messages
        depth = GaugeMetricFamily("cm_fhir_inbox_depth", "Inbox rows per state.", labels=["state"])
        for state in INBOX_STATES:
            depth.add_metric([state], snap.states.get(state, 0))
        yield depth
        yield GaugeMetricFamily(
            "cm_fhir_inbox_oldest_received_age_seconds",
            "Age of the oldest message waiting to be processed (0 when none).",
            value=snap.oldest_received_age,
        )
        yield GaugeMetricFamily(
            "cm_fhir_dead_letters",
            "Dead-lettered messages.",
            value=snap.states.get(InboxState.DEAD_LETTERED.value, 0),
        )
        yield GaugeMetricFamily(
            "cm_fhir_inbox_waiting_behind_dead_letter",
            "Queued messages held back by an older dead letter of their patient.",
            value=snap.waiting,
        )
        cumulative = [
            (str(bound), count)
            for bound, count in zip(LATENCY_BUCKETS, snap.latency_buckets, strict=True)
        ]
        yield HistogramMetricFamily(
            "cm_fhir_message_processing_seconds",
            "Time from receipt to the worker settling a message (processed, failed, dead).",
            buckets=[*cumulative, ("+Inf", snap.latency_count)],
            sum_value=snap.latency_sum,
        )
        outbox_depth = GaugeMetricFamily(
            "cm_fhir_outbox_depth",
            "Outbox rows per endpoint and state.",
            labels=["endpoint", "state"],
        )
        for state in ("pending", "sent", "failed"):
            outbox_depth.add_metric(["default", state], snap.outbox_states.get(state, 0))
        yield outbox_depth
        flags = CounterMetricFamily(
            "cm_fhir_workflow_flags",
            "Workflow trace entries carrying each flag (e.g. unmapped-disposition).",
            labels=["flag"],
        )
        for flag in sorted({f.value for f in Flag} | set(snap.flags)):
            flags.add_metric([flag], snap.flags.get(flag, 0))
        yield flags
        yield GaugeMetricFamily(
            "cm_fhir_outbox_oldest_pending_age_seconds",
            "Age of the oldest pending FHIR write (0 when none).",
            value=snap.oldest_pending_age,
        )
        open_cases = GaugeMetricFamily(
            "cm_fhir_caseload_open_cases", "Open cases per case manager.", labels=["owner"]
        )
        limits = GaugeMetricFamily(
            "cm_fhir_caseload_limit",
            "Caseload limit per case manager (programmes.yaml).",
            labels=["owner"],
        )
        for load in snap.caseloads:
            open_cases.add_metric([load.owner], load.open_cases)
            limits.add_metric([load.owner], load.limit)
        yield open_cases
        yield limits
        if snap.listener is not None:
            stats = snap.listener
            for name, text in LISTENER_COUNTERS.items():
                yield CounterMetricFamily(
                    f"cm_fhir_listener_{name}",
                    f"{text} by this process.",
                    value=getattr(stats, name),
                )


@router.get(
    "/metrics",
    summary="Prometheus metrics (from the database at scrape time)",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"}},
)
async def metrics(context: ContextDep, _: ReadPrincipal) -> Response:
    async with context.engine.connect() as connection:
        snap = await _snapshot(connection)
        snap.caseloads = await caseloads(connection, context.programmes)
    snap.listener = context.listener.stats if context.listener is not None else None
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SnapshotCollector(snap))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
