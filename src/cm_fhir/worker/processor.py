"""One batch of inbox rows turned into case state, outbox, trace and FHIR resources. I/O.

:meth:`BatchProcessor.process` runs inside one transaction on a synchronous SQLAlchemy connection
(the async worker calls it through ``run_sync``): it claims rows (per patient, in arrival order),
parses each, locks the patient states the events name (both patients of an A40), applies the
events in ``id`` order with the pure workflow, and writes everything with one statement per table.
The inbox row's ``received_at`` stands in for "now" in the workflow, so a replay gives the same
result. A row whose processing raises is retried (``attempts``) and dead-lettered after
``max_attempts``; its patient's later rows in the batch are left for later. Parse failures are
``failed`` with their position, messages we do not process are ``ignored``, and so are training
and debugging messages (MSH-11, see :mod:`cm_fhir.worker.policy`); an event the workflow could not
apply to a visit ends ``needs_attention``. Reasons name error types and positions, never message
content. The writes go through :func:`cm_fhir.worker.changes.write_changes` to the one write path
of cases (:mod:`cm_fhir.store.case_writes`), the path the closing scheduler and the API use too.
The cyclic garbage collector waits while a batch runs (:func:`collection_paused`), and PostgreSQL
is asked to compress the batch's large values with lz4 where it can.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any

from sqlalchemy import Connection

from cm_fhir.domain.case import Case
from cm_fhir.domain.events import EncounterNotice, ReviewDecided
from cm_fhir.errors import (
    Hl7ParseError,
    MappingError,
    UnsupportedEventError,
    ValidationError,
)
from cm_fhir.fhir.notification import parse_notification
from cm_fhir.fhir.pas_response import review_decided
from cm_fhir.hl7v2.adt import parse_adt_message
from cm_fhir.hl7v2.events import AdtEvent
from cm_fhir.hl7v2.normalise import normalise_message
from cm_fhir.hl7v2.parse import parse_er7
from cm_fhir.mapping.adt_maps import AdtConceptMaps
from cm_fhir.mapping.payer_exchange import PayerExchange, default_payer_exchange
from cm_fhir.mapping.registry import MappingRegistry
from cm_fhir.mapping.rules import DischargeRules
from cm_fhir.store.case_writes import (
    DEFAULT_ROUTES,
    CaseChanges,
    OutboxRoute,
    build_case,
    commit_case_changes,
)
from cm_fhir.store.cases import load_states, lock_states, member_filing, state_versions
from cm_fhir.store.fhir_inbox import CLAIM_RESPONSE
from cm_fhir.store.outbox import last_bundle_hashes
from cm_fhir.store.queue import (
    ClaimedMessage,
    InboxOutcome,
    claim_batch,
    claims_unchanged,
    settle,
)
from cm_fhir.store.tables import InboxFormat, InboxState
from cm_fhir.store.trace import TraceRecord
from cm_fhir.worker.batch import (
    Applied,
    BatchResult,
    Parsed,
    PreparedBatch,
    collection_paused,
    describe_error,
    keys_of,
    prefer_lz4,
)
from cm_fhir.worker.changes import file_outcome, finish_changes
from cm_fhir.worker.journal import outcome_lines
from cm_fhir.worker.notify import PayerNotifier
from cm_fhir.worker.policy import (
    DEFAULT_PROCESSING_IDS,
    NOT_APPLIED_RULE,
    attention_reason,
    not_applied_reason,
    processing_id,
)
from cm_fhir.worker.states import PatientBook
from cm_fhir.workflow import (
    Outcome,
    PatientState,
    TraceEntry,
    apply_domain_event,
    event_keys,
    patient_keys,
)

__all__ = ["NOTIFICATION", "ApplyEvent", "BatchProcessor"]

ApplyEvent = Callable[..., Outcome]
#: The message types of the FHIR rows the worker applies: ``$process-message`` notifications
#: (payer side) and the payer's ClaimResponses to the hospital's reviews (hospital side).
NOTIFICATION = "NOTIFICATION"


class BatchProcessor:
    """Turns claimed inbox rows into committed domain changes; see the module docstring."""

    def __init__(
        self,
        rules: DischargeRules,
        maps: AdtConceptMaps,
        registry: MappingRegistry,
        *,
        max_attempts: int = 5,
        apply: ApplyEvent | None = None,
        apply_processing_ids: Collection[str] = DEFAULT_PROCESSING_IDS,
        cache: dict[str, tuple[str, PatientState]] | None = None,
        routes: Sequence[OutboxRoute] = DEFAULT_ROUTES,
        notifier: PayerNotifier | None = None,
        payer: PayerExchange | None = None,
    ) -> None:
        self.rules = rules
        self.notifier = notifier
        self.payer = payer or default_payer_exchange()
        self.routes = tuple(routes)
        self.maps = maps
        self.registry = registry
        self.max_attempts = max_attempts
        self.workflow = apply or partial(apply_domain_event, payer=self.payer)
        self.apply_processing_ids = frozenset(p.upper() for p in apply_processing_ids)
        self.last_claimed: list[ClaimedMessage] = []
        self.last_outcomes: list[dict[str, Any]] = []  # logged once the batch commits
        self._decoded = cache if cache is not None else {}
        self._toast_lz4: bool | None = None  # not known until the first PostgreSQL batch

    def process(
        self, connection: Connection, limit: int, retry_before: datetime | None = None
    ) -> BatchResult:
        """Claim up to ``limit`` rows and commit-ready write their results (caller commits)."""
        with collection_paused():
            return self._write(connection, self._prepare(connection, limit, retry_before))

    def prepare(
        self, connection: Connection, limit: int, retry_before: datetime | None = None
    ) -> PreparedBatch:
        """The read half of a batch: claim, parse, read the states and apply, writing nothing
        and locking nothing (SQLite, where one worker claims: the write lock is then held for
        :meth:`write_prepared` only)."""
        with collection_paused():
            return self._prepare(connection, limit, retry_before, lock=False)

    def write_prepared(self, connection: Connection, prepared: PreparedBatch) -> BatchResult | None:
        """The write half of :meth:`prepare`'s batch; None, writing nothing, when a claimed row
        or a patient state it read changed in between (the caller then runs the batch whole)."""
        rows, versions = prepared.rows, prepared.versions or {}
        if not claims_unchanged(connection, rows) or state_versions(connection, versions) != {
            k: v for k, v in versions.items() if v >= 0
        }:
            return None
        with collection_paused():
            return self._write(connection, prepared)

    def _prepare(
        self,
        connection: Connection,
        limit: int,
        retry_before: datetime | None,
        *,
        lock: bool = True,
    ) -> PreparedBatch:
        self.last_claimed, self.last_outcomes = [], []
        if connection.dialect.name == "postgresql" and self._toast_lz4 is not False:
            self._toast_lz4 = prefer_lz4(connection, probe=self._toast_lz4 is None)
        rows = claim_batch(connection, limit, retry_before)
        self.last_claimed = rows
        prepared = PreparedBatch(rows, CaseChanges(), datetime.now(UTC))
        if not rows:
            return prepared
        parsed = self.parse(rows)
        keys = keys_of(parsed)
        states = lock_states(connection, keys) if lock else load_states(connection, keys)
        if not lock:  # absent keys as -1: a row filed under one in between is a change too
            found = state_versions(connection, states)
            prepared.versions = {k: found.get(k, -1) for k in keys | set(states)}
        book = PatientBook(states, self._decoded)
        book.decode_all()
        hashes = last_bundle_hashes(connection, book.case_ids())
        self.apply(parsed, book, hashes, prepared.changes)
        finish_changes(book, prepared.changes, self.rules, prepared.now)
        return prepared

    def _write(self, connection: Connection, prepared: PreparedBatch) -> BatchResult:
        rows, changes = prepared.rows, prepared.changes
        result = BatchResult(claimed=len(rows))
        if not rows:
            return result
        committed = commit_case_changes(connection, changes, prepared.now, routes=self.routes)
        self.last_outcomes = outcome_lines(changes, rows)
        states = [o.state for o in changes.outcomes]
        result.processed += states.count(InboxState.PROCESSED)
        result.ignored += states.count(InboxState.IGNORED)
        result.failed += states.count(InboxState.FAILED)
        result.needs_attention += states.count(InboxState.NEEDS_ATTENTION)
        result.retried += states.count(InboxState.RECEIVED)
        result.dead_lettered += states.count(InboxState.DEAD_LETTERED)
        result.outbox += committed.outbox_rows
        result.trace += len(changes.trace)
        result.resources_written += committed.resources_written
        result.resources_removed += committed.resources_removed
        return result

    def parse(self, rows: list[ClaimedMessage]) -> list[Parsed]:
        """Parse each row; rows that are not applied (unparsable, unsupported, MSH-11) come back
        settled."""
        return [self._parse(row) for row in rows]

    def apply(
        self,
        parsed: list[Parsed],
        book: PatientBook,
        hashes: dict[str, str | None],
        changes: CaseChanges,
        report: list[Applied] | None = None,
    ) -> None:
        """Apply the parsed rows in order to the states in ``book``, collecting what to write in
        ``changes`` (and, if given, what each row came to in ``report``: the dry run)."""
        blocked: set[str] = set()
        for item in parsed:
            outcome: Outcome | None = None
            before: tuple[Case, ...] = ()
            if item.settled is not None:
                changes.outcomes.append(item.settled)
                changes.trace += item.trace
                settled = item.settled
                trace = tuple(t.entry for t in item.trace)
            elif item.row.patient_key is not None and item.row.patient_key in blocked:
                continue  # stays received behind the failed row of its patient
            else:
                outcome, before = self._apply(item, book, hashes, changes)
                settled = changes.outcomes[-1]
                trace = outcome.trace if outcome is not None else ()
                if outcome is None and item.row.patient_key:
                    blocked.add(item.row.patient_key)
            if report is not None:
                report.append(Applied(item, settled, outcome, before, trace))

    def record_failure(self, connection: Connection, row: ClaimedMessage, exc: Exception) -> None:
        """Count a failed attempt for ``row`` when its transaction itself could not commit."""
        settle(connection, [self._failure(row, exc)], datetime.now(UTC))

    # -- stages ----------------------------------------------------------------------------

    def _parse(self, row: ClaimedMessage) -> Parsed:
        if row.format == InboxFormat.FHIR.value:
            return self._parse_fhir(row)
        try:
            message = parse_er7(normalise_message(row.raw))
            result = parse_adt_message(message, self.maps)
            if isinstance(result, AdtEvent):
                # An event without a usable patient fails here.
                keys = patient_keys(result, self.rules)
                processing = processing_id(message)
                reason = not_applied_reason(processing, self.apply_processing_ids)
                if reason is None:
                    return Parsed(row, event=result, keys=keys)
                return self._not_applied(row, result, keys[0], processing, reason)
            reason = f"unsupported: {result.message_type}^{result.event or '-'} ({result.reason})"
            return Parsed(row, settled=InboxOutcome(row.id, InboxState.IGNORED, reason))
        except UnsupportedEventError as exc:
            settled = InboxOutcome(row.id, InboxState.IGNORED, describe_error(exc))
        except (Hl7ParseError, MappingError) as exc:
            settled = InboxOutcome(row.id, InboxState.FAILED, describe_error(exc))
        except Exception as exc:  # anything else is retried, then dead-lettered
            settled = self._failure(row, exc)
        return Parsed(row, settled=settled)

    def _parse_fhir(self, row: ClaimedMessage) -> Parsed:
        """A FHIR message: a notification accepted at ``$process-message``, or a payer's
        ClaimResponse to one of our reviews (a :class:`ReviewDecided` event).

        A PAS request was applied by the request that submitted it: replayed, it is ignored."""
        if row.message_type not in (NOTIFICATION, CLAIM_RESPONSE):
            reason = f"not applied: a {row.message_type or '-'} message is applied when received"
            return Parsed(row, settled=InboxOutcome(row.id, InboxState.IGNORED, reason))
        try:
            body = json.loads(row.raw)
            event: EncounterNotice | ReviewDecided
            keys: tuple[str, ...] = ()
            if row.message_type == CLAIM_RESPONSE:
                event = review_decided(body, self.payer, row.received_at)
                # Filed by whoever stored it under the key of the case the review is on: the
                # payer may name the patient by another identifier (its member id).
                keys = (row.patient_key,) if row.patient_key else ()
            else:
                event = parse_notification(body, self.payer)
            return Parsed(row, event=event, keys=keys or event_keys(event, self.rules))
        except (MappingError, ValidationError, ValueError) as exc:
            settled = InboxOutcome(row.id, InboxState.FAILED, describe_error(exc))
        except Exception as exc:  # anything else is retried, then dead-lettered
            settled = self._failure(row, exc)
        return Parsed(row, settled=settled)

    def _not_applied(
        self, row: ClaimedMessage, event: AdtEvent, key: str, processing: str, reason: str
    ) -> Parsed:
        """A training or debugging message: ignored, with a trace row saying why."""
        entry = TraceEntry(
            message_control_id=event.message_control_id,
            event=event.event,
            rule=NOT_APPLIED_RULE,
            action=f"not-applied-processing-id-{processing[:8]}",
        )
        settled = InboxOutcome(row.id, InboxState.IGNORED, reason)
        return Parsed(
            row, settled=settled, trace=(TraceRecord(row.id, key, entry, row.message_key),)
        )

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
        item: Parsed,
        book: PatientBook,
        hashes: dict[str, str | None],
        changes: CaseChanges,
    ) -> tuple[Outcome | None, tuple[Case, ...]]:
        event, row = item.event, item.row
        assert event is not None
        keys = item.keys
        member = isinstance(event, EncounterNotice)  # keys: the member's ids, any may hold it
        key = member_filing(keys, book.resolve, book.has_document)[0] if member else keys[0]
        try:
            state = book.state(key)
            merged = [] if member else book.merged(key, keys[1:])
            outcome = self.workflow(event, state, self.rules, now=row.received_at, merged=merged)
            built = [build_case(case, self.registry) for case in outcome.changed_cases]
            messages = (
                self.notifier.messages(
                    event, outcome.state, self.rules, key, row.id, row.received_at
                )
                if self.notifier is not None and isinstance(event, AdtEvent)
                else []
            )
        except Exception as exc:
            failure = self._failure(row, exc)
            changes.outcomes.append(failure)
            return None, ()
        attention = attention_reason(outcome.flags)
        primary = book.file(key, outcome.state, outcome.retired_keys)
        if member:  # the member's ids that led nowhere now lead to its state
            book.link(member_filing(keys, book.resolve, book.has_document)[1])
        file_outcome(
            changes, outcome, built, primary, hashes, inbox_id=row.id, message_key=row.message_key
        )
        changes.messages += messages
        if attention is None:
            changes.outcomes.append(InboxOutcome(row.id, InboxState.PROCESSED))
        else:
            changes.outcomes.append(InboxOutcome(row.id, InboxState.NEEDS_ATTENTION, attention))
        return outcome, tuple(c for s in (state, *merged) for c in s.cases)
