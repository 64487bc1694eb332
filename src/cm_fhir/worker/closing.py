"""The closing scheduler: cases in transition closed when their follow-up is done or time is up.
I/O (runs in the caller's transaction).

:meth:`CaseCloser.close_due` claims the state documents whose ``close_check_at`` has come
(:func:`~cm_fhir.store.schedule.claim_due_states`: oldest first, locked ``FOR UPDATE SKIP
LOCKED`` on PostgreSQL, so concurrent workers and event batches never check one patient twice at
once), runs :func:`~cm_fhir.workflow.close_due_cases` on each at the wall-clock ``now``, and
commits what closed through the one write path (:func:`~cm_fhir.worker.changes.write_changes`
to :mod:`cm_fhir.store.case_writes`: state, ``cases`` row, outbox, trace, ``fhir_resources``).
The trace rows of a closing name the rule (``discharge.close_after`` or
``discharge.close_when_follow_up_done``) and no inbox message. Every checked state gets its next
check (:mod:`cm_fhir.worker.schedule`); a state whose check raises is looked at again an hour
later, and only its count is logged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection

from cm_fhir.domain.codes import CaseStatus
from cm_fhir.mapping.registry import MappingRegistry
from cm_fhir.mapping.rules import DischargeRules
from cm_fhir.store.case_writes import DEFAULT_ROUTES, CaseChanges, OutboxRoute, build_case
from cm_fhir.store.outbox import last_bundle_hashes
from cm_fhir.store.schedule import claim_due_states, set_close_checks
from cm_fhir.worker.changes import file_outcome, write_changes
from cm_fhir.worker.schedule import next_close_check
from cm_fhir.worker.states import PatientBook
from cm_fhir.workflow import PatientState, close_due_cases

__all__ = ["CaseCloser", "ClosingResult"]

log = logging.getLogger(__name__)
#: When a state whose closing check raised is looked at again.
RETRY_AFTER = timedelta(hours=1)


@dataclass(slots=True)
class ClosingResult:
    """Counts for one closing pass."""

    checked: int = 0
    closed: int = 0
    failed: int = 0
    outbox: int = 0
    trace: int = 0


class CaseCloser:
    """Closes the due cases of up to ``limit`` patients per call; see the module docstring."""

    def __init__(
        self,
        rules: DischargeRules,
        registry: MappingRegistry,
        cache: dict[str, tuple[str, PatientState]] | None = None,
        routes: Sequence[OutboxRoute] = DEFAULT_ROUTES,
    ) -> None:
        self.rules = rules
        self.routes = tuple(routes)
        self.registry = registry
        self._decoded = cache if cache is not None else {}

    def close_due(self, connection: Connection, now: datetime, limit: int) -> ClosingResult:
        """One pass over the states due at ``now`` (caller commits)."""
        rows = claim_due_states(connection, now, limit)
        result = ClosingResult(checked=len(rows))
        if not rows:
            return result
        book = PatientBook(rows, self._decoded)
        book.decode_all()
        hashes = last_bundle_hashes(connection, book.case_ids())
        changes = CaseChanges()
        closed: set[str] = set()
        later: dict[str, datetime | None] = {}
        for key in rows:
            try:
                outcome = close_due_cases(book.state(key), self.rules, now)
                built = [build_case(case, self.registry) for case in outcome.changed_cases]
            except Exception as exc:  # one bad document must not stop the others
                log.error("closing check of a patient state failed (%s)", type(exc).__name__)
                result.failed += 1
                later[key] = now + RETRY_AFTER
                continue
            if not outcome.changed_cases:
                later[key] = next_close_check(book.state(key), self.rules, now)
                continue
            primary = book.replace(key, outcome.state)  # alias rows stay untouched (unlocked)
            closed.add(primary)
            file_outcome(changes, outcome, built, primary, hashes, inbox_id=None, message_key=None)
            result.closed += sum(c.status == CaseStatus.CLOSED for c in outcome.changed_cases)
        committed = write_changes(connection, book, changes, self.rules, now, self.routes)
        set_close_checks(connection, {k: v for k, v in later.items() if k not in closed})
        result.outbox = committed.outbox_rows
        result.trace = len(changes.trace)
        return result
