"""What ADT messages would change, against the stored state, without committing. I/O (reads).

:func:`dry_run` takes raw messages as the inbox would hold them and runs them through the
worker's own stages (:class:`~cm_fhir.worker.processor.BatchProcessor`: parse, MSH-11 policy,
workflow, needs-attention policy, mapping) against the stored patient states, read without locks,
and writes nothing. Per message it returns the inbox state the worker would settle it in (with
the reason), the trace and, for every case it changes, the case's status and a readable diff of
its FHIR resources (``Type/id`` references, as the ``fhir_resources`` table holds them).
:func:`render` turns that into text lines for ``cm-fhir adt inspect --dry-run``.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy.exc import SQLAlchemyError

from cm_fhir.domain.case import Case
from cm_fhir.errors import StoreError
from cm_fhir.fhir import ReferenceStyle, case_to_resources
from cm_fhir.mapping.adt_maps import AdtConceptMaps, load_adt_concept_maps
from cm_fhir.mapping.registry import MappingRegistry, default_registry
from cm_fhir.mapping.rules import DischargeRules, load_discharge_rules
from cm_fhir.store.case_writes import CaseChanges
from cm_fhir.store.cases import StateRow, load_states
from cm_fhir.store.engine import current_revision, make_engine
from cm_fhir.store.queue import ClaimedMessage
from cm_fhir.store.tables import InboxState
from cm_fhir.worker.batch import Applied, keys_of
from cm_fhir.worker.policy import DEFAULT_PROCESSING_IDS
from cm_fhir.worker.processor import BatchProcessor
from cm_fhir.worker.states import PatientBook
from cm_fhir.workflow import TraceEntry, event_id, event_label

__all__ = ["CaseChange", "MessageEffect", "ResourceChange", "dry_run", "render"]

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
    state: str = InboxState.PROCESSED.value
    reason: str | None = None


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
    messages: Sequence[bytes],
    database_url: str,
    *,
    search_path: str | None = None,
    rules: DischargeRules | None = None,
    maps: AdtConceptMaps | None = None,
    registry: MappingRegistry | None = None,
    apply_processing_ids: Collection[str] = DEFAULT_PROCESSING_IDS,
    now: datetime | None = None,
) -> list[MessageEffect]:
    """Process ``messages`` (raw ER7, in arrival order) as the worker would, in memory only."""
    registry = registry or default_registry()
    processor = BatchProcessor(
        rules or load_discharge_rules(),
        maps or load_adt_concept_maps(),
        registry,
        apply_processing_ids=apply_processing_ids,
    )
    now = now or datetime.now(UTC)
    rows = [
        ClaimedMessage(id=i, patient_key=None, raw=raw, received_at=now, attempts=0)
        for i, raw in enumerate(messages, start=1)
    ]
    parsed = processor.parse(rows)
    book = PatientBook(await _stored_states(database_url, keys_of(parsed), search_path))
    book.decode_all()
    report: list[Applied] = []
    processor.apply(parsed, book, {}, CaseChanges(), report)
    return [_effect(item, registry) for item in report]


def _effect(item: Applied, registry: MappingRegistry) -> MessageEffect:
    event = item.parsed.event
    trace = item.trace
    control_id = event_id(event) if event is not None else "-"
    if event is None and trace:
        control_id = trace[0].message_control_id or control_id
    name = event_label(event) if event is not None else (trace[0].event if trace else None) or "-"
    cases: tuple[CaseChange, ...] = ()
    if item.outcome is not None:
        before = {c.id: c for c in item.before}
        cases = tuple(
            case_change(before.get(c.id), c, registry) for c in item.outcome.changed_cases
        )
    return MessageEffect(
        control_id, name, trace, cases, item.settled.state.value, item.settled.reason
    )


def render(effects: Sequence[MessageEffect]) -> list[str]:
    """Readable lines: per message its trace, then per changed case its resource changes."""
    lines: list[str] = []
    for effect in effects:
        lines.append(f"== ADT^{effect.event} {effect.control_id}")
        if effect.state != InboxState.PROCESSED.value:
            lines.append(f"  {effect.state}: {effect.reason or '-'}")
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
