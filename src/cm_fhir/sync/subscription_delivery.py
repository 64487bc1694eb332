"""Delivery of the payer side's subscription notifications from the outbox. I/O.

A review's change puts one notification per subscription that hears of it in the outbox
(:func:`~cm_fhir.store.subscriptions.enqueue_review_event`), at the endpoint
``subscription/<id>``. :meth:`SubscriptionDelivery.run_once` finds the subscriptions with
notifications waiting, leases them per patient and in order as for any endpoint
(:func:`~cm_fhir.sync.deliver.claim_work`) and posts each Bundle to the subscription's channel
endpoint with its header lines, through a :class:`~cm_fhir.fhir_client.FhirClient` per
subscription (its own circuit breaker). Each post settles in its own transaction: ``sent``;
``failed`` when the subscription is gone or no longer active; ``failed`` when refused for good
(4xx, 401 and 403 included: the headers will not change), and the subscription's status becomes
``error`` (its later notifications end ``failed``; the subscriber sees the status and subscribes
again); otherwise (transport, 5xx, 429) retried later, backing off
(:func:`~cm_fhir.sync.deliver.retry_delay`), the patient's later notifications waiting behind it
so events arrive in order. Nothing of the content is logged.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import httpx
import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from cm_fhir.errors import RemoteAuthError
from cm_fhir.fhir_client import FhirClient, RetryPolicy
from cm_fhir.fhir_client.breaker import CircuitBreaker
from cm_fhir.store.case_tables import OutboxState, outbox
from cm_fhir.store.outbox import CaseWrite, settle_failed, settle_sent
from cm_fhir.store.subscriptions import (
    StoredSubscription,
    active_endpoints,
    end_subscription,
    subscription_of_endpoint,
)
from cm_fhir.store.wakeup import Wakeup, idle
from cm_fhir.sync.config import EhrSettings
from cm_fhir.sync.deliver import (
    DeliveryStats,
    claim_work,
    error_text,
    is_retryable,
    outcome_bytes,
    postpone,
)

__all__ = ["SubscriptionDelivery"]

log = logging.getLogger(__name__)
#: Seconds one notification post may take.
TIMEOUT = 30.0
#: Seconds between looks for waiting notifications when nothing wakes the loop.
POLL = 1.0


def _headers(subscription: StoredSubscription) -> dict[str, str]:
    out = {}
    for line in subscription.request.headers:
        name, _, value = line.partition(":")
        out[name.strip()] = value.strip()
    return out


class SubscriptionDelivery:
    """Posts waiting subscription notifications (see the module docstring)."""

    def __init__(
        self,
        engine: AsyncEngine,
        config: EhrSettings,
        worker_id: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.engine = engine
        self.config = config
        self.worker_id = worker_id
        self.transport = transport
        self.clients: dict[str, FhirClient] = {}
        self.stats = DeliveryStats()

    async def aclose(self) -> None:
        for client in self.clients.values():
            await client.aclose()
        self.clients.clear()

    def _client(self, subscription: StoredSubscription) -> FhirClient:
        client = self.clients.get(subscription.id)
        if client is None or client.base_url != subscription.request.endpoint.rstrip("/"):
            client = FhirClient(
                subscription.request.endpoint,
                retry=RetryPolicy(max_attempts=1, attempt_timeout=TIMEOUT),
                breaker=CircuitBreaker(
                    subscription.endpoint_name,
                    failure_threshold=self.config.breaker_failures,
                    cool_down=self.config.breaker_cool_down,
                ),
                timeout=TIMEOUT,
                transport=self.transport,
            )
            self.clients[subscription.id] = client
        return client

    async def run(self, stop: asyncio.Event, changed: Wakeup | None = None) -> None:
        """Deliver until ``stop`` is set; when idle, wait ``POLL`` seconds or until ``changed``
        is notified (a review changed in this process)."""
        woken = changed.listen() if changed is not None else None
        try:
            while not stop.is_set():
                try:
                    done = await self.run_once()
                except Exception as exc:  # the database is away: try again after a poll
                    log.warning("subscription delivery pass failed (%s)", type(exc).__name__)
                    done = 0
                if done == 0:
                    await idle(stop, POLL, woken)
        finally:
            await self.aclose()

    async def waiting(self) -> list[str]:
        """The active subscriptions' endpoints with notifications pending (two indexed reads:
        the few active subscriptions, then their pending rows)."""
        async with self.engine.connect() as connection:
            endpoints = await connection.run_sync(active_endpoints)
            if not endpoints:
                return []
            o = outbox.c
            query = (
                select(o.endpoint)
                .where(o.state == OutboxState.PENDING.value, o.endpoint.in_(endpoints))
                .distinct()
            )
            return [str(row[0]) for row in await connection.execute(query)]

    async def run_once(self) -> int:
        """Post one batch of every subscription's waiting notifications; the rows settled."""
        settled = 0
        for endpoint in await self.waiting():
            now = datetime.now(UTC)
            work = await claim_work(self.engine, endpoint, self.worker_id, self.config, now)
            for patient in work:
                writes = list(patient.writes)
                while writes:
                    write = writes.pop(0)
                    settled += 1
                    if not await self._deliver(endpoint, write, writes):
                        settled += len(writes)
                        writes = []  # they wait behind it (settled with it)
        return settled

    async def _deliver(self, endpoint: str, write: CaseWrite, later: list[CaseWrite]) -> bool:
        """Post one notification and settle it; False when it (and ``later``) must wait."""
        async with self.engine.connect() as connection:
            subscription = await connection.run_sync(subscription_of_endpoint, endpoint)
        if subscription is None or subscription.status != "active":
            async with self.engine.begin() as connection:
                gone = "the subscription is gone" if subscription is None else "it is not active"
                await connection.run_sync(settle_failed, write, gone, None, datetime.now(UTC))
            self.stats.failed += 1
            return True
        try:
            await self._client(subscription).request(
                "POST",
                "",
                body=orjson.loads(write.bundle),
                headers=_headers(subscription),
                url=subscription.request.endpoint,
            )
        except Exception as exc:
            if is_retryable(exc) and not isinstance(exc, RemoteAuthError):
                self.stats.retried += await postpone(self.engine, self.config, [write, *later], exc)
                return False
            now = datetime.now(UTC)
            async with self.engine.begin() as connection:  # refused: the subscription ends
                await connection.run_sync(
                    settle_failed, write, error_text(exc), outcome_bytes(exc), now
                )
                await connection.run_sync(end_subscription, subscription.id, "error", now)
            self.stats.failed += 1
            log.warning("subscription %s refused a notification (%s)", endpoint, error_text(exc))
            return True
        async with self.engine.begin() as connection:
            await connection.run_sync(settle_sent, [write], datetime.now(UTC))
        self.stats.sent += 1
        return True
