"""The one write path of cases: state, case row, served resources, outbox, trace, sync state. I/O.

A case is kept as four copies: the patient's state document (what the workflow reads), the
``cases`` row (what the API lists), the ``fhir_resources`` rows (what the FHIR facade serves) and
an outbox Bundle per FHIR endpoint (what the sync worker sends). The worker (events and closings),
the cases API and the Task status coming back from an EHR all commit through
:func:`commit_case_changes`, so the four copies are built one way: :func:`build_case` maps a case
once, to the transaction Bundle (``urn:uuid`` references, conditional writes by business
identifier), its SHA-256, the identifiers (``Type|system|value``) and the resources served with
``Type/id`` references. A Bundle identical to the last one enqueued for its case is not enqueued
again; a new one is enqueued once per :class:`OutboxRoute` that receives the case's programme.

Everything runs in the caller's transaction, one statement per table (executemany); see
docs/adr/0008-one-write-path.md.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Connection

from cm_fhir.domain.case import Case
from cm_fhir.fhir import case_to_resources, dumps, transaction_bundle
from cm_fhir.mapping.registry import MappingRegistry
from cm_fhir.store.cases import (
    CaseRow,
    ResourceRow,
    resource_row,
    sync_resources,
    upsert_cases,
    write_states,
)
from cm_fhir.store.outbox import DEFAULT_ENDPOINT, OutboxEntry, enqueue
from cm_fhir.store.queue import InboxOutcome, settle
from cm_fhir.store.sync_state import SyncRecord, record_sync
from cm_fhir.store.trace import TraceRecord, record_trace

__all__ = [
    "DEFAULT_ROUTES",
    "BuiltCase",
    "CaseChanges",
    "CommitResult",
    "OutboxRoute",
    "PayerRoute",
    "Placement",
    "build_case",
    "commit_case_changes",
    "served_rows",
]

Json = dict[str, Any]
_URN = re.compile(rb'"urn:uuid:([0-9a-f-]{36})"')


@dataclass(frozen=True, slots=True)
class OutboxRoute:
    """An endpoint that receives outbox Bundles: every programme's, or only those named."""

    name: str
    programmes: frozenset[str] | None = None

    def receives(self, case: Case) -> bool:
        return self.programmes is None or case.programme in self.programmes


@dataclass(frozen=True, slots=True)
class PayerRoute:
    """A payer endpoint that receives messages: every payer's, or those with these identifier
    values; ``base_url`` is where they go (named in the messages)."""

    name: str
    base_url: str
    payers: frozenset[str] | None = None

    def serves(self, payer: str | None) -> bool:
        return self.payers is None or payer in self.payers


#: With no endpoint configured, Bundles wait for the one ``--ehr-url`` configures.
DEFAULT_ROUTES: tuple[OutboxRoute, ...] = (OutboxRoute(DEFAULT_ENDPOINT),)


@dataclass(frozen=True, slots=True)
class BuiltCase:
    """A case mapped once: its transaction Bundle, hash, identifiers and resources."""

    case: Case
    bundle: bytes
    sha256: str
    case_identifier: str  # the EpisodeOfCare's system|value
    identifiers: tuple[str, ...]  # Type|system|value of every resource, in Bundle order
    resources: list[Json]  # with urn:uuid references, as in the Bundle


def build_case(case: Case, registry: MappingRegistry) -> BuiltCase:
    """Map ``case`` once, on the fast path (no validation)."""
    resources = case_to_resources(case, registry)
    data = dumps(transaction_bundle(resources))
    identifiers = []
    for resource in resources:
        first = (resource.get("identifier") or [{}])[0]
        identifiers.append(
            f"{resource['resourceType']}|{first.get('system', '')}|{first.get('value', '')}"
        )
    case_identifier = identifiers[0].split("|", 1)[1] if identifiers else ""
    digest = hashlib.sha256(data).hexdigest()
    return BuiltCase(case, data, digest, case_identifier, tuple(identifiers), resources)


def served_rows(case_id: str, resources: list[Json], patient: str | None) -> list[ResourceRow]:
    """The ``fhir_resources`` rows of a case's resources, with ``Type/id`` references, serialised
    once (no decode and encode round trip). Identifiers and statuses never hold ``urn:uuid``
    references, so they are read from the resources as built.
    """
    local = _relative(resources)
    return [resource_row(case_id, r, local(orjson.dumps(r)), patient) for r in resources]


def _relative(resources: list[Json]) -> Callable[[bytes], bytes]:
    """Rewrites ``"urn:uuid:<id>"`` of these resources to ``"Type/<id>"`` in JSON text."""
    types = {str(r["id"]).encode(): str(r["resourceType"]).encode() for r in resources}

    def local(match: re.Match[bytes]) -> bytes:
        rid = match.group(1)
        rtype = types.get(rid)
        return b'"' + rtype + b"/" + rid + b'"' if rtype is not None else match.group(0)

    def rewrite(text: bytes) -> bytes:
        return _URN.sub(local, text) if b"urn:uuid:" in text else text

    return rewrite


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a case is filed: its patient key, team, and the owner shown without a manager."""

    patient_key: str
    team: str | None = None
    owner: str | None = None


@dataclass(frozen=True, slots=True)
class _Version:
    built: BuiltCase
    patient_key: str
    inbox_id: int | None


@dataclass(slots=True)
class CaseChanges:
    """What one transaction commits; :meth:`add_case` adds one new version of a case.

    ``states`` are patient state documents by key (``aliases``: merged-away keys), with their next
    closing checks (``close_checks``; None checks each document at once); ``sync`` records what an
    endpoint holds (a Task status read back from the EHR, say).
    """

    cases: dict[str, BuiltCase] = field(default_factory=dict)
    placements: dict[str, Placement] = field(default_factory=dict)
    versions: list[_Version] = field(default_factory=list)
    states: dict[str, str] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    close_checks: dict[str, datetime | None] | None = None
    trace: list[TraceRecord] = field(default_factory=list)
    outcomes: list[InboxOutcome] = field(default_factory=list)
    sync: list[SyncRecord] = field(default_factory=list)
    messages: list[OutboxEntry] = field(default_factory=list)
    """Messages to enqueue with the cases (a payer's notification of an admission, say)."""

    def add_case(
        self,
        built: BuiltCase,
        placement: Placement,
        hashes: dict[str, str | None],
        *,
        inbox_id: int | None = None,
    ) -> bool:
        """File the case's new version; True when its Bundle differs from the last enqueued
        (``hashes``, updated here) and so goes to the outbox."""
        case_id = built.case.id
        self.cases[case_id] = built
        self.placements[case_id] = placement
        if hashes.get(case_id) == built.sha256:
            return False
        hashes[case_id] = built.sha256
        self.versions.append(_Version(built, placement.patient_key, inbox_id))
        return True


@dataclass(frozen=True, slots=True)
class CommitResult:
    """Counts of one commit."""

    resources_written: int
    resources_removed: int
    outbox_rows: int


def _case_row(built: BuiltCase, place: Placement) -> CaseRow:
    case = built.case
    manager = case.case_manager
    owner = manager.display if manager is not None and manager.display else place.owner
    return CaseRow(
        case_id=case.id,
        patient_key=place.patient_key,
        status=case.status.value,
        programme=case.programme,
        team=place.team,
        owner=owner,
        opened_at=case.opened,
        closed_at=case.closed,
        last_bundle_sha256=built.sha256,
        case_json=case.model_dump_json(),
    )


def outbox_entries(
    versions: Sequence[_Version], routes: Sequence[OutboxRoute]
) -> list[OutboxEntry]:
    """One outbox row per new Bundle and endpoint that receives its case."""
    return [
        OutboxEntry(
            v.built.case.id,
            v.patient_key,
            v.inbox_id,
            v.built.case_identifier,
            v.built.identifiers,
            v.built.sha256,
            v.built.bundle,
            route.name,
        )
        for v in versions
        for route in routes
        if route.receives(v.built.case)
    ]


def commit_case_changes(
    connection: Connection,
    changes: CaseChanges,
    now: datetime,
    *,
    routes: Sequence[OutboxRoute] = DEFAULT_ROUTES,
) -> CommitResult:
    """Write ``changes`` in the caller's transaction: state documents, ``cases`` rows, outbox
    rows per endpoint, trace, served ``fhir_resources``, sync state and inbox outcomes."""
    if changes.states or changes.aliases:
        write_states(connection, changes.states, changes.aliases, now, changes.close_checks)
    rows = [_case_row(b, changes.placements[cid]) for cid, b in changes.cases.items()]
    upsert_cases(connection, rows, now)
    entries = outbox_entries(changes.versions, routes)
    enqueue(connection, [*entries, *changes.messages], now)
    record_trace(connection, changes.trace, now)
    current: dict[str, list[ResourceRow]] = {}
    for case_id, built in changes.cases.items():
        patient = built.case.patient.primary
        current[case_id] = served_rows(
            case_id, built.resources, f"{patient.system}|{patient.value}"
        )
    written, removed = sync_resources(connection, current, now)
    record_sync(connection, changes.sync, now)
    settle(connection, changes.outcomes, now)
    return CommitResult(written, removed, len(entries) + len(changes.messages))
