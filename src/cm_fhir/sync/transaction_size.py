"""How many entries one endpoint takes in one transaction, learnt once per endpoint. No I/O.

Cases of different patients share a transaction (up to ``cases_per_transaction``). Some servers
cap a transaction's size, often only for conditional writes (Medplum: 8 entries), and R4 has no
CapabilityStatement element that says so; so the cap is the endpoint's configured
``max_transaction_entries``, or what the first refusal taught
(:meth:`~cm_fhir.fhir_client.FhirClient.learn_transaction_cap`: the size the server states, else
half the refused one), kept by the endpoint's client for the life of the process.
:meth:`TransactionSize.pack` groups cases under the cap before anything is sent; a transaction
bigger than any the endpoint has accepted so far is a probe and goes alone
(:meth:`TransactionSize.turn`), so a refusal teaches every later group, not only the ones
already in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TypeVar

from cm_fhir.errors import RemoteTooCostly
from cm_fhir.fhir_client import FhirClient
from cm_fhir.fhir_client.status import stated_cap

__all__ = ["TransactionSize"]

T = TypeVar("T")


class TransactionSize:
    """One endpoint's transaction size: the cap, and the largest size accepted so far."""

    def __init__(self, client: FhirClient, cases_per_transaction: int) -> None:
        self.client = client
        self.cases = cases_per_transaction
        self.accepted = 0  # entries of the largest combined transaction the endpoint took
        self._probe = asyncio.Lock()

    @property
    def cap(self) -> int | None:
        return self.client.max_transaction_entries

    def fits(self, entries: int) -> bool:
        cap = self.cap
        return cap is None or entries <= cap

    def pack(self, items: Sequence[T], size: Callable[[T], int]) -> list[list[T]]:
        """``items`` in order, in groups of at most ``cases_per_transaction`` items and the cap's
        entries (an item bigger than the cap is a group of its own)."""
        groups: list[list[T]] = []
        current: list[T] = []
        entries = 0
        for item in items:
            n = size(item)
            if current and (len(current) >= self.cases or not self.fits(entries + n)):
                groups.append(current)
                current, entries = [], 0
            current.append(item)
            entries += n
        if current:
            groups.append(current)
        return groups

    @contextlib.asynccontextmanager
    async def turn(self, entries: int) -> AsyncIterator[None]:
        """Send a combined transaction of ``entries``: at once when the endpoint took one as big
        before; else after the probe in flight, one at a time."""
        if entries <= self.accepted:
            yield
            return
        async with self._probe:
            yield

    def took(self, entries: int) -> None:
        self.accepted = max(self.accepted, entries)

    def refused(self, entries: int, exc: RemoteTooCostly) -> None:
        """The endpoint refused ``entries`` as too big: remember a smaller cap."""
        stated = stated_cap(exc.outcome)
        self.client.learn_transaction_cap(stated if stated is not None else max(1, entries // 2))
