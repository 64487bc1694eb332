"""The worker's one write path: workflow outcomes of a transaction, committed together. I/O.

Event processing (:mod:`cm_fhir.worker.processor`) and the closing scheduler
(:mod:`cm_fhir.worker.closing`) both collect their workflow outcomes in :class:`Changes` and write
them with :func:`write_changes`, in the caller's transaction and with one statement per table: the
patients' state documents (with each one's next closing check), the ``cases`` rows, the outbox
Bundles (never one identical to the case's last), the trace, the served ``fhir_resources`` and the
inbox rows' new states. Bundles are built on the fast path (no validation).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Connection

from cm_fhir.domain.case import Case
from cm_fhir.fhir import case_to_resources, dumps, transaction_bundle
from cm_fhir.mapping.registry import MappingRegistry
from cm_fhir.mapping.rules import DischargeRules
from cm_fhir.store.cases import (
    CaseRow,
    ResourceRow,
    resource_row,
    sync_resources,
    upsert_cases,
    write_states,
)
from cm_fhir.store.outbox import OutboxEntry, enqueue
from cm_fhir.store.queue import InboxOutcome, settle
from cm_fhir.store.trace import TraceRecord, record_trace
from cm_fhir.worker.schedule import next_close_check
from cm_fhir.worker.states import PatientBook
from cm_fhir.workflow import Outcome

__all__ = ["Changes", "build", "served_rows", "write_changes"]

Json = dict[str, Any]
_URN = re.compile(rb'"urn:uuid:([0-9a-f-]{36})"')


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
class _Built:
    """A case's fast-path Bundle, its hash and identifiers, and its resources."""

    bundle: bytes
    sha256: str
    case_identifier: str
    identifiers: tuple[str, ...]
    resources: list[Json]


def build(case: Case, registry: MappingRegistry) -> _Built:
    """Map ``case`` once: the Bundle for the outbox and the resources for ``fhir_resources``."""
    resources = case_to_resources(case, registry)
    data = dumps(transaction_bundle(resources))
    identifiers = []
    for resource in resources:
        first = (resource.get("identifier") or [{}])[0]
        identifiers.append(
            f"{resource['resourceType']}|{first.get('system', '')}|{first.get('value', '')}"
        )
    case_identifier = identifiers[0].split("|", 1)[1] if identifiers else ""
    return _Built(
        data, hashlib.sha256(data).hexdigest(), case_identifier, tuple(identifiers), resources
    )


@dataclass(slots=True)
class Changes:
    """What one transaction writes; :meth:`file` adds one workflow outcome."""

    outcomes: list[InboxOutcome] = field(default_factory=list)
    outbox: list[OutboxEntry] = field(default_factory=list)
    trace: list[TraceRecord] = field(default_factory=list)
    cases: dict[str, tuple[Case, str, list[Json]]] = field(default_factory=dict)

    def file(
        self,
        outcome: Outcome,
        built: list[_Built],
        primary: str,
        hashes: dict[str, str | None],
        *,
        inbox_id: int | None,
        message_key: str | None,
    ) -> None:
        """The outcome's changed cases, their Bundles (unless unchanged) and its trace."""
        for case, b in zip(outcome.changed_cases, built, strict=True):
            self.cases[case.id] = (case, primary, b.resources)
            if hashes.get(case.id) == b.sha256:
                continue
            hashes[case.id] = b.sha256
            self.outbox.append(
                OutboxEntry(
                    case.id, primary, inbox_id, b.case_identifier, b.identifiers, b.sha256, b.bundle
                )
            )
        self.trace += [
            TraceRecord(inbox_id, primary, entry, message_key) for entry in outcome.trace
        ]


def write_changes(
    connection: Connection,
    book: PatientBook,
    hashes: dict[str, str | None],
    changes: Changes,
    rules: DischargeRules,
    now: datetime,
) -> tuple[int, int]:
    """Write ``changes`` and the book's changed states; (resources written, removed)."""
    documents, aliases = book.dirty()
    checks = {key: next_close_check(book.state(key), rules, now) for key in documents}
    write_states(connection, documents, aliases, now, checks)
    case_rows = [
        _case_row(case, key, book, hashes.get(case.id), rules)
        for case, key, _ in changes.cases.values()
    ]
    upsert_cases(connection, case_rows, now)
    enqueue(connection, changes.outbox, now)
    record_trace(connection, changes.trace, now)
    current: dict[str, list[ResourceRow]] = {}
    for case, _, resources in changes.cases.values():
        patient = case.patient.primary
        current[case.id] = served_rows(case.id, resources, f"{patient.system}|{patient.value}")
    written, removed = sync_resources(connection, current, now)
    settle(connection, changes.outcomes, now)
    return written, removed


def _case_row(
    case: Case,
    patient_key: str,
    book: PatientBook,
    bundle_sha: str | None,
    rules: DischargeRules,
) -> CaseRow:
    team = book.team_of(patient_key, case.id)
    owner = case.case_manager.display if case.case_manager is not None else None
    if owner is None and team is not None and team in rules.teams:
        owner = rules.teams[team].display
    return CaseRow(
        case_id=case.id,
        patient_key=patient_key,
        status=case.status.value,
        programme=case.programme,
        team=team,
        owner=owner,
        opened_at=case.status_history[0].start,
        closed_at=case.closed,
        last_bundle_sha256=bundle_sha,
        case_json=case.model_dump_json(),
    )
