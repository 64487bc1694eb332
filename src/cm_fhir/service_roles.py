"""The pieces of the service's roles: the site's mappings, the inbox workers and their lifetime,
and ending a role's task. I/O (builds workers on an engine; awaits tasks).

:func:`site_mappings` loads the mapping files in effect. :func:`make_workers` builds the inbox
workers (:class:`cm_fhir.worker.Worker`, found at run time behind :class:`WorkerRole`, so a build
without it runs none: :func:`worker_available`); :func:`close_workers` stops them, also when the
service's start-up failed after they began, and releases their threads and loops. :func:`cancel`
ends a task that the orderly shutdown did not reach.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from cm_fhir.api.app import site_registry
from cm_fhir.mapping.adt_maps import AdtConceptMaps, load_adt_concept_maps
from cm_fhir.mapping.payer_exchange import PayerExchange, load_payer_exchange
from cm_fhir.mapping.programmes import ProgrammesSpec, load_programmes
from cm_fhir.mapping.registry import MappingRegistry
from cm_fhir.mapping.rules import DischargeRules, load_discharge_rules
from cm_fhir.mapping.vocabulary import check_vocabulary
from cm_fhir.settings import Settings
from cm_fhir.store.wakeup import Wakeup
from cm_fhir.sync.routing import outbox_routes, payer_routes

__all__ = [
    "SWITCH_INTERVAL",
    "SiteMappings",
    "WorkerRole",
    "cancel",
    "close_workers",
    "make_workers",
    "site_mappings",
    "worker_available",
]


@dataclass(frozen=True, slots=True)
class SiteMappings:
    """The mapping files in effect: bundled, merged with ``mappings_dir``; ``timezone`` applied."""

    rules: DischargeRules
    maps: AdtConceptMaps
    registry: MappingRegistry
    programmes: ProgrammesSpec
    payer: PayerExchange


def site_mappings(settings: Settings) -> SiteMappings:
    """Load the mappings for ``settings`` (MappingSpecError names the file and key)."""
    folder = settings.mappings_dir
    rules = load_discharge_rules(folder)
    if settings.timezone is not None:
        rules = rules.model_copy(update={"timezone": settings.timezone})
    maps, registry = load_adt_concept_maps(folder), site_registry(settings)
    programmes = load_programmes(folder)
    check_vocabulary(registry, rules, maps, folder, programmes)
    payer = load_payer_exchange(folder)
    return SiteMappings(rules, maps, registry, programmes, payer)


def worker_available() -> bool:
    """Whether this build ships the inbox worker (``cm_fhir.worker``)."""
    return importlib.util.find_spec("cm_fhir.worker") is not None


#: Seconds between hand-overs of the interpreter beside a worker's thread (see Service).
SWITCH_INTERVAL = 0.0005


class WorkerRole(Protocol):
    """What the service needs of a worker: run until ``stop`` is set, committing what it began;
    woken by ``arrived`` (inbox rows committed), notifying ``committed`` (cases committed)."""

    async def run(
        self,
        stop: asyncio.Event,
        *,
        arrived: Wakeup | None = None,
        committed: Wakeup | None = None,
    ) -> Any: ...

    async def aclose(self) -> None: ...


def make_workers(
    engine: AsyncEngine, settings: Settings, *, count: int | None = None, own_loop: bool = False
) -> list[WorkerRole]:
    """The worker loops for ``settings``: one on SQLite, ``worker.concurrency`` on PostgreSQL;
    with ``own_loop``, each does its transactions on an event loop of its own (beside a listener
    or the API, whose loop then stays free to answer)."""
    module = importlib.import_module("cm_fhir.worker")
    config = module.WorkerConfig.from_settings(
        settings.worker,
        outbox_routes(settings),
        payer_routes(settings),
        settings.payer.notify_events,
    )
    mappings = site_mappings(settings)
    if count is None:
        count = 1 if engine.dialect.name == "sqlite" else settings.worker.concurrency
    return [
        module.Worker(
            engine,
            config,
            rules=mappings.rules,
            maps=mappings.maps,
            registry=mappings.registry,
            payer=mappings.payer,
            own_loop=own_loop,
        )
        for _ in range(count)
    ]


async def close_workers(
    workers: list[WorkerRole], stop: asyncio.Event, tasks: list[asyncio.Task[Any]], grace: float
) -> None:
    """Stop the workers (also when start-up failed after they began) and release them."""
    stop.set()
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for worker in workers:
        await worker.aclose()


async def cancel(task: asyncio.Task[None]) -> None:
    """End ``task`` when the roles stop without the orderly shutdown (a role failed to start)."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
