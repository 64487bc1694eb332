"""One batch of inbox rows turned into case state, outbox, trace and FHIR resources. I/O.

:meth:`BatchProcessor.process` runs inside one transaction on a synchronous SQLAlchemy connection
(the async worker calls it through ``run_sync``): it claims rows (per patient, in arrival order),
parses each, locks the patient states the events name (both patients of an A40), applies the
events in ``id`` order with the pure workflow, and writes everything with one statement per table.
The inbox row's ``received_at`` stands in for "now" in the workflow, so a replay gives the same
result. A row whose processing raises is retried (``attempts``) and dead-lettered after
``max_attempts``; its patient's later rows in the batch are left for later. Parse failures are
``failed`` with their position, messages we do not process are ``ignored``. Reasons name error
types and positions, never message content. Bundles are built on the fast path (no validation).
The cyclic garbage collector waits while a batch runs (:func:`collection_paused`), and PostgreSQL
is asked to compress the batch's large values with lz4 where it can.
"""

from __future__ import annotations

import gc
import hashlib
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from cm_fhir.domain.case import Case
from cm_fhir.errors import CmFhirError, Hl7ParseError, MappingError, UnsupportedEventError
from cm_fhir.fhir import case_to_resources, dumps, transaction_bundle
from cm_fhir.hl7v2.adt import parse_adt
from cm_fhir.hl7v2.events import AdtEvent
from cm_fhir.mapping.adt_maps import AdtConceptMaps
from cm_fhir.mapping.registry import MappingRegistry
from cm_fhir.mapping.rules import DischargeRules
from cm_fhir.store.cases import (
    CaseRow,
    ResourceRow,
    lock_states,
    resource_row,
    sync_resources,
    upsert_cases,
    write_states,
)
from cm_fhir.store.outbox import OutboxEntry, enqueue, last_bundle_hashes
from cm_fhir.store.queue import ClaimedMessage, InboxOutcome, claim_batch, settle
from cm_fhir.store.tables import InboxState
from cm_fhir.store.trace import TraceRecord, record_trace
from cm_fhir.worker.states import PatientBook
from cm_fhir.workflow import Outcome, PatientState, apply_event, patient_keys

__all__ = ["ApplyEvent", "BatchProcessor", "BatchResult", "describe_error"]

ApplyEvent = Callable[..., Outcome]
Json = dict[str, Any]
_URN = re.compile(rb'"urn:uuid:([0-9a-f-]{36})"')


def relative_references(resources: list[Json]) -> list[Json]:
    """The case's resources with ``Type/id`` references instead of ``urn:uuid:id``.

    The same as ``case_to_resources(case, registry, ReferenceStyle.RELATIVE)`` (a test checks it)
    without mapping the case a second time.
    """
    local = _relative(resources)
    return [orjson.loads(local(orjson.dumps(r))) for r in resources]


def served_rows(case_id: str, resources: list[Json], patient: str | None) -> list[ResourceRow]:
    """The ``fhir_resources`` rows of a case's resources: :func:`resource_rows` of
    :func:`relative_references`, serialised once (no decode and encode round trip). Identifiers
    and statuses never hold ``urn:uuid`` references, so they are read from the resources as built.
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


@dataclass(slots=True)
class BatchResult:
    """Counts for one batch (or a whole run, summed)."""

    claimed: int = 0
    processed: int = 0
    ignored: int = 0
    failed: int = 0
    retried: int = 0
    dead_lettered: int = 0
    outbox: int = 0
    trace: int = 0
    resources_written: int = 0
    resources_removed: int = 0

    def add(self, other: BatchResult) -> None:
        for name in self.__slots__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


def describe_error(exc: BaseException) -> str:
    """A reason without PHI: our errors name positions; others are named by type only."""
    if isinstance(exc, Hl7ParseError | UnsupportedEventError):
        where = f" at {exc.location}" if exc.location else ""
        return f"{type(exc).__name__}{where}: {exc}"[:400]
    if isinstance(exc, CmFhirError):
        return f"{type(exc).__name__}: {exc}"[:400]
    return f"{type(exc).__name__} while processing"


@dataclass(slots=True)
class _Parsed:
    row: ClaimedMessage
    event: AdtEvent | None = None
    settled: InboxOutcome | None = None
    keys: tuple[str, ...] = ()


@dataclass(slots=True)
class _Changes:
    outcomes: list[InboxOutcome] = field(default_factory=list)
    outbox: list[OutboxEntry] = field(default_factory=list)
    trace: list[TraceRecord] = field(default_factory=list)
    cases: dict[str, tuple[Case, str, list[Json]]] = field(default_factory=dict)


def _prefer_lz4(connection: Connection, *, probe: bool) -> bool:
    """Have PostgreSQL compress this transaction's large values with lz4; False if it cannot.

    Bundles and state documents are kilobytes each: lz4 stores them at a fraction of the server
    CPU of the default pglz (each stored value records its method; reading is unchanged). The
    first time runs in a savepoint, so a server without lz4 (or before 14) only loses the hint.
    """
    statement = "SET LOCAL default_toast_compression = 'lz4'"
    if not probe:
        connection.exec_driver_sql(statement)
        return True
    try:
        with connection.begin_nested():
            connection.exec_driver_sql(statement)
    except DBAPIError:
        return False
    return True


@contextmanager
def collection_paused() -> Iterator[None]:
    """Hold the cyclic garbage collector off for one batch; it catches up right after.

    A batch allocates hundreds of thousands of short-lived model objects while the decoded states
    of earlier batches stay alive, so the default thresholds run a young collection every few
    hundred allocations and a full one over those states every few batches. Reference counting
    still frees everything at once; only cycles wait for the collection that follows the batch.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class BatchProcessor:
    """Turns claimed inbox rows into committed domain changes; see the module docstring."""

    def __init__(
        self,
        rules: DischargeRules,
        maps: AdtConceptMaps,
        registry: MappingRegistry,
        *,
        max_attempts: int = 5,
        apply: ApplyEvent = apply_event,
    ) -> None:
        self.rules = rules
        self.maps = maps
        self.registry = registry
        self.max_attempts = max_attempts
        self.apply = apply
        self.last_claimed: list[ClaimedMessage] = []
        self._decoded: dict[str, tuple[str, PatientState]] = {}
        self._toast_lz4: bool | None = None  # not known until the first PostgreSQL batch

    def process(
        self, connection: Connection, limit: int, retry_before: datetime | None = None
    ) -> BatchResult:
        """Claim up to ``limit`` rows and commit-ready write their results (caller commits)."""
        with collection_paused():
            return self._process(connection, limit, retry_before)

    def _process(
        self, connection: Connection, limit: int, retry_before: datetime | None
    ) -> BatchResult:
        self.last_claimed = []
        if connection.dialect.name == "postgresql" and self._toast_lz4 is not False:
            self._toast_lz4 = _prefer_lz4(connection, probe=self._toast_lz4 is None)
        rows = claim_batch(connection, limit, retry_before)
        self.last_claimed = rows
        result = BatchResult(claimed=len(rows))
        if not rows:
            return result
        now = datetime.now(UTC)
        parsed = [self._parse(row) for row in rows]
        keys = {k for p in parsed for k in p.keys}
        book = PatientBook(lock_states(connection, keys), self._decoded)
        book.decode_all()
        hashes = last_bundle_hashes(connection, book.case_ids())
        changes = _Changes()
        blocked: set[str] = set()
        for item in parsed:
            if item.settled is not None:
                changes.outcomes.append(item.settled)
            elif item.row.patient_key is not None and item.row.patient_key in blocked:
                continue  # stays received behind the failed row of its patient
            elif not self._apply(item, book, hashes, changes) and item.row.patient_key:
                blocked.add(item.row.patient_key)
        self._write(connection, book, hashes, changes, now, result)
        return result

    def record_failure(self, connection: Connection, row: ClaimedMessage, exc: Exception) -> None:
        """Count a failed attempt for ``row`` when its transaction itself could not commit."""
        settle(connection, [self._failure(row, exc)], datetime.now(UTC))

    # -- stages ----------------------------------------------------------------------------

    def _parse(self, row: ClaimedMessage) -> _Parsed:
        try:
            result = parse_adt(row.raw, self.maps)
            if isinstance(result, AdtEvent):
                # An event without a usable patient fails here.
                return _Parsed(row, event=result, keys=patient_keys(result, self.rules))
            reason = f"unsupported: {result.message_type}^{result.event or '-'} ({result.reason})"
            return _Parsed(row, settled=InboxOutcome(row.id, InboxState.IGNORED, reason))
        except UnsupportedEventError as exc:
            settled = InboxOutcome(row.id, InboxState.IGNORED, describe_error(exc))
        except (Hl7ParseError, MappingError) as exc:
            settled = InboxOutcome(row.id, InboxState.FAILED, describe_error(exc))
        except Exception as exc:  # anything else is retried, then dead-lettered
            settled = self._failure(row, exc)
        return _Parsed(row, settled=settled)

    def _failure(self, row: ClaimedMessage, exc: BaseException) -> InboxOutcome:
        attempt = row.attempts + 1
        if attempt >= self.max_attempts:
            reason = f"dead-lettered after {attempt} attempt(s): {describe_error(exc)}"
            return InboxOutcome(row.id, InboxState.DEAD_LETTERED, reason)
        return InboxOutcome(
            row.id, InboxState.RECEIVED, f"attempt {attempt} failed: {describe_error(exc)}"
        )

    def _apply(
        self,
        item: _Parsed,
        book: PatientBook,
        hashes: dict[str, str | None],
        changes: _Changes,
    ) -> bool:
        event, row = item.event, item.row
        assert event is not None
        keys = item.keys
        try:
            state = book.state(keys[0])
            merged = book.merged(keys[0], keys[1:])
            outcome = self.apply(event, state, self.rules, now=row.received_at, merged=merged)
            bundles = [self._bundle(case) for case in outcome.changed_cases]
        except Exception as exc:
            failure = self._failure(row, exc)
            changes.outcomes.append(failure)
            return False
        primary = book.file(keys[0], outcome.state, outcome.retired_keys)
        for case, (bundle, sha, case_identifier, identifiers, resources) in zip(
            outcome.changed_cases, bundles, strict=True
        ):
            changes.cases[case.id] = (case, primary, resources)
            if hashes.get(case.id) == sha:
                continue
            hashes[case.id] = sha
            changes.outbox.append(
                OutboxEntry(case.id, primary, row.id, case_identifier, identifiers, sha, bundle)
            )
        changes.trace += [TraceRecord(row.id, primary, entry) for entry in outcome.trace]
        changes.outcomes.append(InboxOutcome(row.id, InboxState.PROCESSED))
        return True

    def _bundle(self, case: Case) -> tuple[bytes, str, str, tuple[str, ...], list[Json]]:
        """The case's fast-path Bundle, its hash and identifiers, and its resources."""
        resources = case_to_resources(case, self.registry)
        data = dumps(transaction_bundle(resources))
        identifiers = []
        for resource in resources:
            first = (resource.get("identifier") or [{}])[0]
            identifiers.append(
                f"{resource['resourceType']}|{first.get('system', '')}|{first.get('value', '')}"
            )
        case_identifier = identifiers[0].split("|", 1)[1] if identifiers else ""
        return (
            data,
            hashlib.sha256(data).hexdigest(),
            case_identifier,
            tuple(identifiers),
            resources,
        )

    def _write(
        self,
        connection: Connection,
        book: PatientBook,
        hashes: dict[str, str | None],
        changes: _Changes,
        now: datetime,
        result: BatchResult,
    ) -> None:
        documents, aliases = book.dirty()
        write_states(connection, documents, aliases, now)
        case_rows = [
            self._case_row(case, key, book, hashes.get(case.id))
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
        states = [o.state for o in changes.outcomes]
        result.processed += states.count(InboxState.PROCESSED)
        result.ignored += states.count(InboxState.IGNORED)
        result.failed += states.count(InboxState.FAILED)
        result.retried += states.count(InboxState.RECEIVED)
        result.dead_lettered += states.count(InboxState.DEAD_LETTERED)
        result.outbox += len(changes.outbox)
        result.trace += len(changes.trace)
        result.resources_written += written
        result.resources_removed += removed

    def _case_row(
        self, case: Case, patient_key: str, book: PatientBook, bundle_sha: str | None
    ) -> CaseRow:
        team = book.team_of(patient_key, case.id)
        owner = case.case_manager.display if case.case_manager is not None else None
        if owner is None and team is not None and team in self.rules.teams:
            owner = self.rules.teams[team].display
        return CaseRow(
            case_id=case.id,
            patient_key=patient_key,
            status=case.status.value,
            programme=case.programme.value,
            team=team,
            owner=owner,
            opened_at=case.status_history[0].start,
            closed_at=case.closed,
            last_bundle_sha256=bundle_sha,
            case_json=case.model_dump_json(),
        )
