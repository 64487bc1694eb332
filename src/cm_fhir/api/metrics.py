"""``GET /metrics``: Prometheus text from counters the database keeps at write time. I/O.

Counts come from the database, not from process memory, so every process (and a restart) reports
the same figures. Message counts by type, event, ACK code and state, the processing-latency
histogram (received to settled, one observation per settlement), trace entries per workflow flag
are kept by triggers as rows are written (:mod:`cm_fhir.store.counters`),
so a scrape reads a few dozen counter rows whatever the size of the inbox. The queue gauges (age of
the oldest queued message, rows waiting behind a dead letter, age of the oldest pending outbox
entry) read only queued rows through the indexes on state; outbox rows are counted by endpoint
and state (the outbox stays small: sent entries are purged). The sync role's figures of this
process (each endpoint's circuit breaker state, writes by result, requests, lag) are added when it
runs here, and so are Tasks read back from each EHR endpoint by outcome
(:mod:`cm_fhir.api.status_back_metrics`). Utilization reviews on payer cases still pended, and
those past their decision deadline, are counted from the payer's cases. The listener's
connection counters of this process are added when it runs here. Labels hold codes only (event,
state, ACK code), never patient data. Needs the ``read`` scope like the rest of /api.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

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
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from cm_fhir.api.deps import ContextDep, ReadPrincipal
from cm_fhir.api.status_back_metrics import status_back_metrics
from cm_fhir.listener import LISTENER_COUNTERS, ListenerStats
from cm_fhir.store.case_tables import OutboxState, outbox
from cm_fhir.store.caseload import Caseload, caseloads
from cm_fhir.store.counters import LATENCY_BOUNDS, fold_if_large, read_counters
from cm_fhir.store.ehr_status import EndpointCursor, read_cursors
from cm_fhir.store.payer_cases import review_counts
from cm_fhir.store.queue import WAITING_PREFIX
from cm_fhir.store.tables import INBOX_STATES, InboxState, inbox_messages
from cm_fhir.sync.runner import EndpointStatus
from cm_fhir.workflow import Flag

__all__ = ["LATENCY_BUCKETS", "router", "snapshot"]

router = APIRouter(tags=["metrics"])
_t = inbox_messages
LATENCY_BUCKETS = LATENCY_BOUNDS


@dataclass(slots=True)
class _Snapshot:
    messages: list[tuple[str, str, str, str, int]] = field(default_factory=list)
    states: dict[str, int] = field(default_factory=dict)
    oldest_received_age: float = 0.0
    waiting: int = 0
    latency_buckets: list[int] = field(default_factory=list)
    latency_count: int = 0
    latency_sum: float = 0.0
    outbox_states: dict[tuple[str, str], int] = field(default_factory=dict)  # (endpoint, state)
    oldest_pending_age: float = 0.0
    flags: dict[str, int] = field(default_factory=dict)
    listener: ListenerStats | None = None
    caseloads: list[Caseload] = field(default_factory=list)
    sync: list[EndpointStatus] = field(default_factory=list)
    status_back: list[EndpointCursor] = field(default_factory=list)
    reviews_pended: int = 0
    reviews_overdue: int = 0


def _age(oldest: datetime | None, now: datetime) -> float:
    if oldest is None:
        return 0.0
    if oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=UTC)
    return max(0.0, (now - oldest).total_seconds())


async def snapshot(connection: AsyncConnection) -> _Snapshot:
    """Every figure of a scrape: the counters, plus the queue gauges from indexed queries."""
    now = datetime.now(UTC)
    counters = await read_counters(connection)
    snap = _Snapshot()
    snap.messages = [(*key, count) for key, count in sorted(counters.inbox.items())]
    snap.states = counters.states()
    running = 0
    for bound in LATENCY_BOUNDS:
        running += counters.latency.get(str(bound), 0)
        snap.latency_buckets.append(running)
    snap.latency_count = running + counters.latency.get("+Inf", 0)
    snap.latency_sum = counters.latency_sum
    snap.flags = dict(counters.flags)
    received = _t.c.state == InboxState.RECEIVED.value
    # ``id + 0``: min() over the queued rows found by the state indexes, not a walk of the
    # primary key past every processed row. received_at follows id.
    first = select(func.min(_t.c.id + 0)).where(received).scalar_subquery()
    oldest = (await connection.execute(select(_t.c.received_at).where(_t.c.id == first))).scalar()
    snap.oldest_received_age = _age(oldest, now)
    waiting = select(func.count()).where(received, _t.c.reason.startswith(WAITING_PREFIX))
    snap.waiting = int((await connection.execute(waiting)).scalar_one())
    pending = outbox.c.state == OutboxState.PENDING.value
    first_pending = select(func.min(outbox.c.id + 0)).where(pending).scalar_subquery()
    created = select(outbox.c.created_at).where(outbox.c.id == first_pending)
    snap.oldest_pending_age = _age((await connection.execute(created)).scalar(), now)
    by_state = select(outbox.c.endpoint, outbox.c.state, func.count()).group_by(
        outbox.c.endpoint, outbox.c.state
    )
    snap.outbox_states = {
        (str(endpoint), str(state)): int(count)
        for endpoint, state, count in (await connection.execute(by_state)).all()
    }
    snap.status_back = await connection.run_sync(read_cursors)
    return snap


def _sync_metrics(statuses: list[EndpointStatus]) -> Iterator[Metric]:
    """The sync role of this process: breaker state, writes by result, requests, lag."""
    if not statuses:
        return
    breaker = GaugeMetricFamily(
        "cm_fhir_sync_circuit_breaker",
        "1 for the state each endpoint's circuit breaker is in (closed, open, half-open).",
        labels=["endpoint", "state"],
    )
    writes = CounterMetricFamily(
        "cm_fhir_sync_writes",
        "Case writes settled by this process, by endpoint and result.",
        labels=["endpoint", "result"],
    )
    requests = CounterMetricFamily(
        "cm_fhir_sync_requests", "HTTP requests made to each endpoint.", labels=["endpoint"]
    )
    lag = GaugeMetricFamily(
        "cm_fhir_sync_lag_seconds",
        "Enqueue to written on the server, for the last write to each endpoint.",
        labels=["endpoint"],
    )
    for status in statuses:
        for state in ("closed", "open", "half-open"):
            breaker.add_metric([status.name, state], 1.0 if status.breaker == state else 0.0)
        stats = status.stats
        for result in ("sent", "failed", "retried", "superseded", "conflicts"):
            writes.add_metric([status.name, result], getattr(stats, result))
        requests.add_metric([status.name], status.requests)
        lag.add_metric([status.name], stats.last_lag_seconds)
    yield from (breaker, writes, requests, lag)


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
        endpoints = {e for e, _ in snap.outbox_states} | {s.name for s in snap.sync} or {"default"}
        for endpoint in sorted(endpoints):
            for state in ("pending", "sent", "failed", "superseded"):
                count = snap.outbox_states.get((endpoint, state), 0)
                outbox_depth.add_metric([endpoint, state], count)
        yield outbox_depth
        yield from _sync_metrics(snap.sync)
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
        yield GaugeMetricFamily(
            "cm_fhir_utilization_reviews_pended",
            "Utilization reviews on payer cases waiting for a decision.",
            value=snap.reviews_pended,
        )
        yield GaugeMetricFamily(
            "cm_fhir_utilization_reviews_overdue",
            "Pended utilization reviews past their decision deadline (72 h expedited, 7 days).",
            value=snap.reviews_overdue,
        )
        yield from status_back_metrics(snap.status_back, datetime.now(UTC))
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
    summary="Prometheus metrics (counters kept by the database at write time)",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"}},
)
async def metrics(context: ContextDep, _: ReadPrincipal) -> Response:
    await fold_if_large(context.engine)
    async with context.engine.connect() as connection:
        snap = await snapshot(connection)
        snap.caseloads = await caseloads(connection, context.programmes)
        snap.reviews_pended, snap.reviews_overdue = await connection.run_sync(
            review_counts, context.payer_exchange.payer_programme, datetime.now(UTC)
        )
    snap.listener = context.listener.stats if context.listener is not None else None
    snap.sync = context.sync.status() if context.sync is not None else []
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SnapshotCollector(snap))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
