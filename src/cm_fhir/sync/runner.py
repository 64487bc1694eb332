"""The ``sync`` worker role: one delivery loop per configured endpoint, until stopped. I/O.

:class:`SyncWorker` opens a :class:`~cm_fhir.fhir_client.FhirClient` per endpoint
(:func:`~cm_fhir.sync.endpoints.open_client`) and runs :class:`~cm_fhir.sync.deliver.
EndpointDelivery` for each: claim a batch of patients, write, settle; poll when there is nothing
to claim. :meth:`SyncWorker.run` returns after ``stop`` is set once the batch in flight has been
settled (a write cut off by the service's grace period is sent again after its lease, and
writes are idempotent). :meth:`SyncWorker.drain` delivers until nothing is claimable (the
``outbox resend`` command and the tests). :meth:`SyncWorker.status` is what ``/metrics`` and
``/api/outbox/endpoints`` report: per endpoint, the circuit breaker's state, the counts of this
process and the requests made. Payer endpoints (:mod:`cm_fhir.sync.payer`) run alongside: their
Subscription (:mod:`cm_fhir.sync.payer_subscribe`, where ``public_url`` is given), their
messages, then their due ``Claim/$inquire`` polls.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from cm_fhir.fhir_client import FhirClient, RetryPolicy
from cm_fhir.mapping.payer_exchange import PayerExchange, default_payer_exchange
from cm_fhir.mapping.registry import MappingRegistry, default_registry
from cm_fhir.store.case_tables import outbox
from cm_fhir.store.case_writes import DEFAULT_ROUTES, OutboxRoute
from cm_fhir.store.outbox_signal import listen_across_processes, outbox_wakeup
from cm_fhir.store.wakeup import Wakeup, idle
from cm_fhir.sync.config import EhrSettings, EndpointSettings, PayerEndpointSettings
from cm_fhir.sync.deliver import DeliveryStats, EndpointDelivery
from cm_fhir.sync.endpoints import RequestCount, open_client
from cm_fhir.sync.payer import PayerDelivery
from cm_fhir.sync.payer_subscribe import PayerSubscriber
from cm_fhir.sync.status_back import StatusBack, StatusBackEndpoint, poll_until_stopped

__all__ = ["EndpointStatus", "SyncWorker"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EndpointStatus:
    """One endpoint as this process sees it."""

    name: str
    base_url: str
    breaker: str  # closed | open | half-open
    requests: int
    stats: DeliveryStats


class SyncWorker:
    """Delivers the outbox to every configured endpoint (see the module docstring)."""

    def __init__(
        self,
        engine: AsyncEngine,
        endpoints: Sequence[EndpointSettings],
        config: EhrSettings | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        retry: RetryPolicy | None = None,
        payers: Sequence[PayerEndpointSettings] = (),
        registry: MappingRegistry | None = None,
        payer_exchange: PayerExchange | None = None,
        public_url: str | None = None,
    ) -> None:
        self.engine = engine
        self.config = config or EhrSettings()
        self.worker_id = f"{socket.gethostname()[:40]}:{os.getpid()}:{id(self) % 10_000}"
        self.counts = {e.name: RequestCount() for e in (*endpoints, *payers)}
        self.clients: dict[str, FhirClient] = {
            e.name: open_client(
                e, self.counts[e.name], self.config, retry=retry, transport=transport
            )
            for e in (*endpoints, *payers)
        }
        self.deliveries = [
            EndpointDelivery(engine, e, self.clients[e.name], self.config, self.worker_id)
            for e in endpoints
        ]
        registry = registry or default_registry()
        self.status_backs = [
            StatusBack(engine, registry, StatusBackEndpoint.of(e), self.clients[e.name])
            for e in endpoints
        ]
        routes = tuple(
            OutboxRoute(e.name, frozenset(e.programmes) if e.programmes else None)
            for e in endpoints
        )
        self.payers = [
            PayerDelivery(
                engine,
                e,
                self.clients[e.name],
                self.config,
                self.worker_id,
                registry=registry,
                spec=payer_exchange or default_payer_exchange(),
                routes=routes or DEFAULT_ROUTES,
            )
            for e in payers
        ]
        self.subscribers = {
            e.name: PayerSubscriber(engine, e, self.clients[e.name], public_url) for e in payers
        }

    async def aclose(self) -> None:
        for client in self.clients.values():
            await client.aclose()

    async def __aenter__(self) -> SyncWorker:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _all(self) -> list[EndpointDelivery | PayerDelivery]:
        return [*self.deliveries, *self.payers]

    def status(self) -> list[EndpointStatus]:
        return [
            EndpointStatus(
                d.endpoint.name,
                d.endpoint.base_url,
                str(d.client.breaker.state),
                self.counts[d.endpoint.name].requests,
                d.stats,
            )
            for d in self._all()
        ]

    async def drain(self, *, timeout: float | None = None, settle_backoff: bool = False) -> int:
        """Deliver until nothing is claimable; the number of case writes settled. With
        ``settle_backoff``, also wait for rows backing off, until ``timeout`` seconds."""
        deadline = time.monotonic() + timeout if timeout is not None else None
        total = 0
        while True:
            done = sum(
                await asyncio.gather(
                    *(self._pump(d, None, None) for d in self.deliveries),
                    *(p.run_once() for p in self.payers),
                )
            )
            total += done
            if done:
                continue
            if not settle_backoff or await self._nothing_pending():
                return total
            if deadline is not None and time.monotonic() >= deadline:
                return total
            await asyncio.sleep(self.config.poll_interval)

    async def _nothing_pending(self) -> bool:
        names = [d.endpoint.name for d in self._all()]
        query = select(func.count()).where(
            outbox.c.state == "pending", outbox.c.endpoint.in_(names)
        )
        async with self.engine.connect() as connection:
            return int((await connection.execute(query)).scalar_one()) == 0

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set; the batches in flight are settled first. When idle, a
        loop waits for the poll interval or until outbox rows are committed (by this process:
        :func:`~cm_fhir.store.outbox_signal.outbox_wakeup`; by another, on PostgreSQL:
        :func:`~cm_fhir.store.outbox_signal.listen_across_processes`). Task status back polls
        each endpoint with a ``task_poll_interval`` alongside."""
        committed = outbox_wakeup(self.engine)
        try:
            await asyncio.gather(
                *(self._pump(d, stop, committed.listen()) for d in self.deliveries),
                *(self._payer_loop(p, stop, committed) for p in self.payers),
                poll_until_stopped(self.status_backs, stop),
                listen_across_processes(self.engine, committed, stop),
            )
        finally:
            await self.aclose()

    async def _pump(
        self, delivery: EndpointDelivery, stop: asyncio.Event | None, woken: asyncio.Event | None
    ) -> int:
        """One endpoint's delivery: claim a batch of patients, and while it is being written claim
        the next, up to ``concurrent_requests`` batches in flight (one patient's rows are in one
        batch at a time, so its writes keep their order). Without ``stop``: until nothing is
        claimable and every batch is settled. With it: until ``stop``, waiting when idle for the
        poll interval or ``woken`` (set again whenever a batch settles: the patients it held
        may have rows waiting behind it). The number of case writes settled."""
        slots = asyncio.Semaphore(self.config.concurrent_requests)
        flying: set[asyncio.Task[int]] = set()
        settled = 0
        name = delivery.endpoint.name

        def _done(task: asyncio.Task[int]) -> None:
            nonlocal settled
            flying.discard(task)
            slots.release()
            if task.cancelled():
                pass
            elif task.exception() is not None:  # its leases run out and the rows go again
                log.warning(
                    "sync batch for endpoint %s failed (%s)", name, type(task.exception()).__name__
                )
            else:
                settled += task.result()
            if woken is not None:
                woken.set()

        try:
            while stop is None or not stop.is_set():
                await slots.acquire()
                try:
                    work = await delivery.claim()
                except Exception as exc:  # the database is away: try again after a poll
                    log.warning("sync claim for endpoint %s failed (%s)", name, type(exc).__name__)
                    work = []
                if work:
                    task = asyncio.create_task(delivery.deliver(work), name=f"sync-{name}")
                    flying.add(task)
                    task.add_done_callback(_done)
                    continue
                slots.release()
                if stop is None:
                    if not flying:
                        break
                    await asyncio.wait(set(flying), return_when=asyncio.FIRST_COMPLETED)
                    continue
                await idle(stop, self.config.poll_interval, woken)
        finally:
            if flying:
                await asyncio.gather(*flying, return_exceptions=True)
        return settled

    async def _payer_loop(
        self, payer: PayerDelivery, stop: asyncio.Event, committed: Wakeup | None
    ) -> None:
        """A payer's subscription (checked when due), its messages, then its due inquiries,
        until ``stop`` is set."""
        subscriber = self.subscribers[payer.endpoint.name]

        async def one_pass() -> int:
            await subscriber.ensure()
            return await payer.run_once() + await payer.inquire_due()

        await self._passes("payer", payer.endpoint.name, one_pass, stop, committed)

    async def _passes(
        self,
        kind: str,
        name: str,
        one_pass: Callable[[], Awaitable[int]],
        stop: asyncio.Event,
        committed: Wakeup | None,
    ) -> None:
        """Run ``one_pass`` until ``stop`` is set; when it did nothing, wait for the poll
        interval or a commit of outbox rows."""
        woken = committed.listen() if committed is not None else None
        while not stop.is_set():
            try:
                done = await one_pass()
            except Exception as exc:  # the database is away: try again after a poll
                log.warning("%s pass for endpoint %s failed (%s)", kind, name, type(exc).__name__)
                done = 0
            if done == 0:
                await idle(stop, self.config.poll_interval, woken)
