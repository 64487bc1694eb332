"""Status back's plain parts: one endpoint's settings and which notifications it takes, what a
pass did, and the event counting that finds missed notifications. No I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from cm_fhir.store.ehr_status import EndpointCursor
from cm_fhir.sync.config import EndpointSettings
from cm_fhir.sync.notifications import Notification, type_and_id

__all__ = ["FHIR_ID", "PassResult", "StatusBackEndpoint", "events_seen"]

FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


@dataclass(frozen=True, slots=True)
class StatusBackEndpoint:
    """One endpoint's status-back settings."""

    name: str
    base_url: str
    poll_interval: float = 60.0  # seconds between polls; 0: no polling
    overlap: float = 2.0  # seconds the poll reaches back behind the watermark
    page_size: int = 100
    subscriptions: tuple[str, ...] = ()  # accepted Subscription ids; empty: any of the endpoint
    reread: bool = True  # read notified Tasks from the endpoint, never trusting a payload

    @classmethod
    def of(cls, endpoint: EndpointSettings) -> StatusBackEndpoint:
        return cls(
            endpoint.name,
            endpoint.base_url,
            endpoint.task_poll_interval,
            subscriptions=endpoint.subscriptions,
            reread=endpoint.reread_notified_tasks,
        )

    def owns(self, reference: str) -> bool:
        """Whether ``reference`` (a Subscription or a notified resource) is of this endpoint: a
        relative reference, or an absolute one under its base URL."""
        if "://" not in reference:
            return True
        base = self.base_url.rstrip("/") + "/"
        return reference.startswith(base)

    def accepts(self, subscription: str) -> bool:
        """Whether notifications of ``subscription`` are taken (see ``subscriptions``)."""
        if not self.owns(subscription):
            return False
        kind, _, sid = type_and_id(subscription).partition("/")
        if kind != "Subscription" or not FHIR_ID.fullmatch(sid):
            return False
        if not self.subscriptions:
            return True
        return any(s.removeprefix("Subscription/") == sid for s in self.subscriptions)


@dataclass(slots=True)
class PassResult:
    """What one poll, notification or batch of Tasks did."""

    counts: dict[str, int] = field(default_factory=dict)
    cases: set[str] = field(default_factory=set)
    gap: bool = False
    polled: bool = False

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n

    def merge(self, other: PassResult) -> None:
        for name, n in other.counts.items():
            self.count(name, n)
        self.cases |= other.cases
        self.polled = self.polled or other.polled


def events_seen(cursor: EndpointCursor, notification: Notification) -> tuple[bool, EndpointCursor]:
    """Whether ``notification`` shows missed events, and the cursor after it.

    Every event numbered from the last count seen (exclusive) to this notification's
    ``eventsSinceSubscriptionStart`` (inclusive) should have reached us; those not in this
    notification were missed. A new subscription (another reference) starts counting afresh.
    """
    total = notification.events_since_start
    same = cursor.subscription == notification.subscription
    seen = cursor.events_seen if same else None
    if total is None:
        return False, replace(cursor, subscription=notification.subscription, events_seen=seen)
    numbers = {e.number for e in notification.events if e.number is not None}
    expected_from = (seen or 0) + 1
    if seen is not None and total <= seen:  # a replay or an old notification: nothing new
        return False, cursor
    missing = any(n not in numbers for n in range(expected_from, total + 1))
    if not notification.carries_events:  # a heartbeat or handshake delivers no events itself
        missing = total > (seen or 0)
    return missing, replace(cursor, subscription=notification.subscription, events_seen=total)
