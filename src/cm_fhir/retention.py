"""The retention job of the worker role: purge PHI past its age, every ``retention.interval``. I/O.

:class:`RetentionJob` runs beside the inbox workers (one per process: ``cm-fhir serve`` with the
worker role, ``cm-fhir worker``). Each pass calls :func:`cm_fhir.store.retention.purge` (batched,
short transactions, safe with other processes purging at the same time) and logs one line with
the counts. A pass that fails in the database is logged and retried at the next interval; the
job never stops the workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from cm_fhir.errors import StoreError
from cm_fhir.retention_policy import RetentionSettings
from cm_fhir.store.retention import PurgeCounts, purge

__all__ = ["RetentionJob"]

log = logging.getLogger(__name__)


class RetentionJob:
    """Purges at start, then every ``settings.interval`` until ``stop`` is set."""

    def __init__(
        self,
        engine: AsyncEngine,
        settings: RetentionSettings,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.clock = clock
        self.passes = 0
        self.last: PurgeCounts | None = None

    async def run_pass(self) -> PurgeCounts | None:
        """One purge; None when the database refused it (logged, retried next time)."""
        try:
            counts = await purge(self.engine, self.settings, self.clock())
        except (SQLAlchemyError, StoreError) as exc:
            log.warning("retention pass failed (%s); next pass retries", type(exc).__name__)
            return None
        self.passes += 1
        self.last = counts
        fields = {f"purged_{kind}": count for kind, count in counts.counts.items()}
        log.info("retention pass: %s", counts.describe(), extra=fields)
        return counts

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.run_pass()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.interval_seconds)
