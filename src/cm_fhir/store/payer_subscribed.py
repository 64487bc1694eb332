"""The Subscriptions the hospital side holds at its payers. I/O.

``payer_subscribed`` has one row per payer endpoint this side subscribed at (PAS topic): the
Subscription id the payer gave, the SHA-256 of the bearer secret the payer's notifications carry
(the secret itself is only ever sent to the payer, in the Subscription's channel header), when
it was created and last checked at the payer, and the last error. A row without a
``subscription_id`` records a payer that does not offer Subscriptions (checked again later).
Functions run in the caller's transaction.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, Connection, DateTime, String, Table, delete, select

from cm_fhir.store.tables import metadata

__all__ = [
    "Subscribed",
    "forget_subscribed",
    "payer_subscribed",
    "read_subscribed",
    "save_subscribed",
    "secret_digest",
]

payer_subscribed = Table(
    "payer_subscribed",
    metadata,
    Column("endpoint", String(64), primary_key=True),
    Column("subscription_id", String(64), nullable=True),
    Column("secret_sha256", String(64), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=True),
    Column("checked_at", DateTime(timezone=True), nullable=False),
    Column("last_error", String(500), nullable=True),
)
_t = payer_subscribed


def secret_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Subscribed:
    """This side's subscription at one payer endpoint (or the record that it has none)."""

    endpoint: str
    subscription_id: str | None
    secret_sha256: str | None
    created_at: datetime | None
    checked_at: datetime
    last_error: str | None

    def carries_secret(self, token: str) -> bool:
        """Whether ``token`` is this subscription's secret (compared in constant time)."""
        if self.secret_sha256 is None:
            return False
        return hmac.compare_digest(secret_digest(token), self.secret_sha256)


def _aware(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _subscribed(row: Any) -> Subscribed:
    checked = _aware(row.checked_at)
    assert checked is not None
    return Subscribed(
        row.endpoint,
        row.subscription_id,
        row.secret_sha256,
        _aware(row.created_at),
        checked,
        row.last_error,
    )


def read_subscribed(connection: Connection, endpoint: str) -> Subscribed | None:
    row = connection.execute(select(_t).where(_t.c.endpoint == endpoint)).first()
    return _subscribed(row) if row is not None else None


def save_subscribed(connection: Connection, subscribed: Subscribed) -> None:
    """Write the endpoint's row (replacing the one there)."""
    forget_subscribed(connection, subscribed.endpoint)
    connection.execute(
        _t.insert().values(
            endpoint=subscribed.endpoint,
            subscription_id=subscribed.subscription_id,
            secret_sha256=subscribed.secret_sha256,
            created_at=subscribed.created_at,
            checked_at=subscribed.checked_at,
            last_error=(subscribed.last_error or None) and subscribed.last_error[:500],
        )
    )


def forget_subscribed(connection: Connection, endpoint: str) -> None:
    connection.execute(delete(_t).where(_t.c.endpoint == endpoint))
