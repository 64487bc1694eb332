"""What ADT messages would change, against the stored state, without committing. I/O (reads).

:func:`dry_run` reads the patient states the events name (no locks, nothing written), applies
the events in order with the same workflow the worker runs, and returns per message the trace
and, for every case it changes, the case's status and a readable diff of its FHIR resources
(``Type/id`` references, as the ``fhir_resources`` table holds them). :func:`render` turns that
into text lines for ``cm-fhir adt inspect --dry-run``.
"""

from __future__ import annotations

import asyncio
import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy.exc import SQLAlchemyError

from cm_fhir.domain.case import Case
from cm_fhir.errors import StoreError
from cm_fhir.fhir import ReferenceStyle, case_to_resources
from cm_fhir.hl7v2.events import AdtEvent
from cm_fhir.mapping.registry import MappingRegistry, default_registry
from cm_fhir.mapping.rules import DischargeRules, load_discharge_rules
from cm_fhir.store.cases import StateRow, load_states
from cm_fhir.store.engine import current_revision, make_engine
from cm_fhir.worker.states import PatientBook
from cm_fhir.workflow import TraceEntry, apply_event, patient_keys

__all__ = ["CaseChange", "MessageEffect", "ResourceChange", "dry_run", "dry_run_sync", "render"]

Json = dict[str, Any]


@dataclass(frozen=True)
class ResourceChange:
    """One resource added, changed or removed, with a unified diff of its JSON when changed."""

    kind: str  # "added" | "changed" | "removed"
    reference: str
    diff: tuple[str, ...] = ()


@dataclass(frozen=True)
class CaseChange:
    case_id: str
    status_before: str | None
    status_after: str
    resources: tuple[ResourceChange, ...]


@dataclass(frozen=True)
class MessageEffect:
    control_id: str
    event: str
    trace: tuple[TraceEntry, ...]
    cases: tuple[CaseChange, ...] = field(default=())


def _pretty(resource: Json) -> list[str]:
    text = orjson.dumps(resource, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()
    return text.splitlines()


def _resources(case: Case | None, registry: MappingRegistry) -> dict[str, Json]:
    if case is None:
        return {}
    out = case_to_resources(case, registry, ReferenceStyle.RELATIVE)
    return {f"{r['resourceType']}/{r['id']}": r for r in out}


def case_change(before: Case | None, after: Case, registry: MappingRegistry) -> CaseChange:
    """The difference between two versions of a case, resource by resource."""
    old, new = _resources(before, registry), _resources(after, registry)
    changes: list[ResourceChange] = []
    for ref, resource in new.items():
        if ref not in old:
            changes.append(ResourceChange("added", ref))
        elif old[ref] != resource:
            diff = difflib.unified_diff(
                _pretty(old[ref]),
                _pretty(resource),
                f"{ref} (stored)",
                f"{ref} (after)",
                n=1,
                lineterm="",
            )
            changes.append(ResourceChange("changed", ref, tuple(diff)))
    changes += [ResourceChange("removed", ref) for ref in old if ref not in new]
    status_before = before.status.value if before is not None else None
    return CaseChange(after.id, status_before, after.status.value, tuple(changes))


async def _stored_states(
    database_url: str, keys: set[str], search_path: str | None
) -> dict[str, StateRow]:
    engine = make_engine(database_url, search_path=search_path)
    try:
        if await current_revision(engine) is None:
            return {}  # an empty database: every patient is new
        async with engine.connect() as connection:
            return await connection.run_sync(load_states, keys)
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        raise StoreError(
            f"cannot read the stored state: {reason[0] if reason else 'the database refused'}"
        ) from exc
    finally:
        await engine.dispose()


async def dry_run(
    events: Sequence[AdtEvent],
    database_url: str,
    *,
    search_path: str | None = None,
    rules: DischargeRules | None = None,
    registry: MappingRegistry | None = None,
    now: datetime | None = None,
) -> list[MessageEffect]:
    """Apply ``events`` in order to the stored states, in memory only."""
    rules = rules or load_discharge_rules()
    registry = registry or default_registry()
    now = now or datetime.now(UTC)
    keys = {k for event in events for k in patient_keys(event, rules)}
    book = PatientBook(await _stored_states(database_url, keys, search_path))
    book.decode_all()
    effects: list[MessageEffect] = []
    for event in events:
        event_keys = patient_keys(event, rules)
        state = book.state(event_keys[0])
        merged = book.merged(event_keys[0], event_keys[1:])
        outcome = apply_event(event, state, rules, now=now, merged=merged)
        before = {c.id: c for s in (state, *merged) for c in s.cases}
        book.file(event_keys[0], outcome.state, outcome.retired_keys)
        cases = tuple(case_change(before.get(c.id), c, registry) for c in outcome.changed_cases)
        effects.append(MessageEffect(event.message_control_id, event.event, outcome.trace, cases))
    return effects


def dry_run_sync(
    events: Sequence[AdtEvent], database_url: str, search_path: str | None = None
) -> list[MessageEffect]:
    """:func:`dry_run` for synchronous callers (the CLI)."""
    return asyncio.run(dry_run(events, database_url, search_path=search_path))


def render(effects: Sequence[MessageEffect]) -> list[str]:
    """Readable lines: per message its trace, then per changed case its resource changes."""
    lines: list[str] = []
    for effect in effects:
        lines.append(f"== ADT^{effect.event} {effect.control_id}")
        for entry in effect.trace:
            flags = f" [{', '.join(entry.flags)}]" if entry.flags else ""
            where = " ".join(x for x in (entry.case_id, entry.target) if x)
            lines.append(f"  {entry.action:<24} {entry.rule}  {where}{flags}".rstrip())
        if not effect.cases:
            lines.append("  no case changes")
        for case in effect.cases:
            before = case.status_before or "(new)"
            lines.append(f"  case {case.case_id}: {before} -> {case.status_after}")
            for change in case.resources:
                mark = {"added": "+", "removed": "-", "changed": "~"}[change.kind]
                lines.append(f"    {mark} {change.reference} {change.kind}")
                lines += [f"      {line}" for line in change.diff]
    return lines
