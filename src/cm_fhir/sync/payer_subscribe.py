"""The hospital side subscribes at its payer to results of pended reviews. I/O.

Where ``payer.public_url`` is set and the payer endpoint's ``subscribe`` is not ``never``,
:meth:`PayerSubscriber.ensure` (called by the payer's delivery loop) makes sure this side holds a
Subscription at the payer to the Da Vinci PAS topic: with ``subscribe = "auto"`` only when the
payer's CapabilityStatement lists ``Subscription``. It posts one
(:func:`~cm_fhir.fhir.subscription.subscription_request`: a rest-hook to
``<public_url>/fhir/subscription-notification/<endpoint>``, the endpoint's payload, and a bearer
secret generated here) and keeps the id the payer gave and the secret's digest
(:mod:`cm_fhir.store.payer_subscribed`); notifications are then taken by the notification route
with that secret, only for that Subscription. Every :data:`CHECK_EVERY` seconds it reads the
Subscription back and creates a new one when the payer has lost it (404/410) or ended it
(``off``, ``error``); its pended reviews are then asked about at once, as notifications may have
been lost meanwhile. A payer that cannot be reached is asked again sooner, backing off. Pended
reviews are still asked about with ``Claim/$inquire`` on their own interval, and at once when a
notification shows missed events (:meth:`cm_fhir.sync.payer.PayerDelivery.notify`).
"""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from cm_fhir.errors import RemoteNotFound
from cm_fhir.fhir.subscription import subscription_request
from cm_fhir.fhir_client import FhirClient
from cm_fhir.store.payer_reviews import inquire_now
from cm_fhir.store.payer_subscribed import (
    Subscribed,
    read_subscribed,
    save_subscribed,
    secret_digest,
)
from cm_fhir.sync.config import PayerEndpointSettings
from cm_fhir.sync.deliver import error_text
from cm_fhir.sync.status_parts import FHIR_ID

__all__ = ["CHECK_EVERY", "PayerSubscriber", "notification_url"]

log = logging.getLogger(__name__)
#: Seconds between checks that the payer still holds our Subscription.
CHECK_EVERY = 300.0
_LIVE = ("requested", "active")


def notification_url(public_url: str, endpoint: str) -> str:
    """Where a payer endpoint's notifications are received."""
    return f"{public_url.rstrip('/')}/fhir/subscription-notification/{endpoint}"


def _offers_subscriptions(capabilities: Any) -> bool:
    rests = capabilities.get("rest") if isinstance(capabilities, dict) else None
    return any(
        isinstance(resource, dict) and resource.get("type") == "Subscription"
        for rest in (rests if isinstance(rests, list) else [])
        if isinstance(rest, dict)
        for resource in (rest.get("resource") or [])
    )


class PayerSubscriber:
    """This side's Subscription at one payer endpoint (see the module docstring)."""

    def __init__(
        self,
        engine: AsyncEngine,
        endpoint: PayerEndpointSettings,
        client: FhirClient,
        public_url: str | None,
    ) -> None:
        self.engine = engine
        self.endpoint = endpoint
        self.client = client
        self.public_url = public_url
        self.next_check: datetime | None = None
        self.failures = 0

    @property
    def enabled(self) -> bool:
        return self.public_url is not None and self.endpoint.subscribe != "never"

    async def ensure(self, now: datetime | None = None) -> Subscribed | None:
        """Check (when due) that the payer holds our Subscription, creating it when not; what
        is held now (None: no Subscription, or not checked in this call)."""
        now = now or datetime.now(UTC)
        if not self.enabled or (self.next_check is not None and now < self.next_check):
            return None
        try:
            held = await self._ensure(now)
        except Exception as exc:  # the payer is away: asked again soon, backing off
            self.failures += 1
            wait = min(CHECK_EVERY, float(2 ** min(self.failures, 10)))
            self.next_check = now + timedelta(seconds=wait)
            log.warning(
                "payer %s: subscription not checked (%s)", self.endpoint.name, error_text(exc)
            )
            return None
        self.failures = 0
        self.next_check = now + timedelta(seconds=CHECK_EVERY)
        return held

    async def _ensure(self, now: datetime) -> Subscribed | None:
        async with self.engine.connect() as connection:
            held = await connection.run_sync(read_subscribed, self.endpoint.name)
        if held is not None and held.subscription_id is not None:
            if await self._alive(held.subscription_id):
                return await self._save(
                    Subscribed(
                        held.endpoint,
                        held.subscription_id,
                        held.secret_sha256,
                        held.created_at,
                        now,
                        None,
                    )
                )
            log.warning(
                "payer %s lost or ended Subscription/%s: subscribing again",
                self.endpoint.name,
                held.subscription_id,
            )
        if self.endpoint.subscribe == "auto" and not await self._offered():
            text = "the payer's CapabilityStatement lists no Subscription"
            await self._save(Subscribed(self.endpoint.name, None, None, None, now, text))
            return None
        created = await self._create(now)
        if held is not None and held.subscription_id is not None:  # events may have been lost
            async with self.engine.begin() as connection:
                await connection.run_sync(inquire_now, self.endpoint.name, now)
        return created

    async def _alive(self, subscription_id: str) -> bool:
        try:
            response = await self.client.request("GET", f"Subscription/{subscription_id}")
        except RemoteNotFound:
            return False
        body = response.json()
        return isinstance(body, dict) and body.get("status") in _LIVE

    async def _offered(self) -> bool:
        response = await self.client.request("GET", "metadata")
        return _offers_subscriptions(response.json())

    async def _create(self, now: datetime) -> Subscribed:
        assert self.public_url is not None
        secret = secrets.token_urlsafe(32)
        body = subscription_request(
            notification_url(self.public_url, self.endpoint.name),
            secret,
            self.endpoint.subscription_payload,
        )
        response = await self.client.request("POST", "Subscription", body=body)
        created = response.json() if response.content else {}
        sid = created.get("id") if isinstance(created, dict) else None
        if not isinstance(sid, str) or not FHIR_ID.fullmatch(sid):
            location = response.headers.get("location", "").rstrip("/").split("/")
            sid = location[-1] if len(location) >= 2 and location[-2] == "Subscription" else None
        if sid is None or not FHIR_ID.fullmatch(sid):
            raise ValueError("the payer's answer names no Subscription id")
        log.info("payer %s: subscribed (Subscription/%s)", self.endpoint.name, sid)
        return await self._save(
            Subscribed(self.endpoint.name, sid, secret_digest(secret), now, now, None)
        )

    async def _save(self, subscribed: Subscribed) -> Subscribed:
        async with self.engine.begin() as connection:
            await connection.run_sync(save_subscribed, subscribed)
        return subscribed
