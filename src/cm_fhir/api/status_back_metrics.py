"""Status back from EHR endpoints in ``/metrics``: remote Tasks by outcome, poll freshness. No I/O.

Built from the ``ehr_status_back`` rows (:mod:`cm_fhir.store.ehr_status`) read at scrape time, so
every process reports the same figures. Labels are endpoint names and outcome codes only.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from cm_fhir.store.ehr_status import COUNTERS, EndpointCursor

__all__ = ["status_back_metrics"]


def status_back_metrics(cursors: Sequence[EndpointCursor], now: datetime) -> Iterator[Metric]:
    """The status-back metric families for ``cursors`` at ``now``."""
    tasks = CounterMetricFamily(
        "cm_fhir_status_back_tasks",
        "Tasks read back from each EHR endpoint, by what they did to the case (applied, "
        "unchanged, echo of our own write, illegal transition ignored, unknown case or task, "
        "unreadable).",
        labels=["endpoint", "outcome"],
    )
    since = GaugeMetricFamily(
        "cm_fhir_status_back_last_poll_age_seconds",
        "Seconds since the last complete Task poll of each EHR endpoint (absent: never polled).",
        labels=["endpoint"],
    )
    for cursor in cursors:
        for outcome in COUNTERS:
            tasks.add_metric([cursor.endpoint, outcome], cursor.counts.get(outcome, 0))
        if cursor.polled_at is not None:
            since.add_metric([cursor.endpoint], max(0.0, (now - cursor.polled_at).total_seconds()))
    yield tasks
    yield since
