"""Every workflow scenario the test suite knows, as data for the FHIR validity harness.

Two sources, so a scenario added to either later is covered without touching the harness:

- the worker scenarios (``SCENARIOS`` of ``test_worker_scenarios``): raw ADT messages, run here
  through the real worker on a fresh SQLite store (I/O); what it committed to the outbox and to
  ``fhir_resources`` is what it would write to a server;
- the workflow scenarios (every test function without parameters in ``test_workflow_scenarios``):
  each is run with a recording ``run`` that keeps every case version an event changed, which is
  every bundle the worker would queue for those events.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from unittest import mock

import orjson

import test_workflow_scenarios
import workflow_messages
from cm_fhir.domain import Case
from cm_fhir.store.engine import upgrade_database
from inbox_fixtures import Database
from test_worker_scenarios import SCENARIOS
from worker_fixtures import fhir_resources, ingest, outbox, rows, settle_worker

Json = dict[str, Any]
T = TypeVar("T")

WORKER_SCENARIOS: tuple[str, ...] = tuple(sorted(SCENARIOS))


def _scenario_functions() -> dict[str, Callable[[], None]]:
    return {
        name: fn
        for name, fn in vars(test_workflow_scenarios).items()
        if name.startswith("test_") and callable(fn) and not inspect.signature(fn).parameters
    }


WORKFLOW_SCENARIOS: tuple[str, ...] = tuple(sorted(_scenario_functions()))


def latest(versions: list[tuple[str, T]]) -> list[T]:
    """The last of each key's versions, in the order the keys first appear."""
    return list(dict(versions).values())


def workflow_cases(name: str) -> list[Case]:
    """Every distinct case version the events of one workflow scenario changed, in order."""
    recorded: list[Case] = []

    def recording_run(*args: Any, **kwargs: Any) -> Any:
        final, outcomes = workflow_messages.run(*args, **kwargs)
        recorded.extend(case for outcome in outcomes for case in outcome.changed_cases)
        return final, outcomes

    with mock.patch.object(test_workflow_scenarios, "run", recording_run):
        _scenario_functions()[name]()
    return list({case.model_dump_json(): case for case in recorded}.values())


async def worker_writes(name: str, folder: Path) -> tuple[list[tuple[str, Json]], list[Json]]:
    """The outbox bundles (case id and bundle, in queue order) and served resources of one
    worker scenario."""
    engine = Database(f"sqlite+aiosqlite:///{folder / 'feed.sqlite3'}").engine()
    try:
        await upgrade_database(engine)
        await ingest(engine, SCENARIOS[name].messages)
        await settle_worker(engine, batch_size=3)
        bundles = [(r.case_id, orjson.loads(r.bundle)) for r in await rows(engine, outbox)]
        served = [orjson.loads(r.resource) for r in await rows(engine, fhir_resources)]
    finally:
        await engine.dispose()
    return bundles, served
