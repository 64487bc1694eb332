"""The worker's side of the one write path: workflow outcomes of a transaction, committed together.
I/O.

Event processing (:mod:`cm_fhir.worker.processor`) and the closing scheduler
(:mod:`cm_fhir.worker.closing`) collect their workflow outcomes in a
:class:`~cm_fhir.store.case_writes.CaseChanges` with :func:`file_outcome` and write them with
:func:`write_changes`, which adds the patients' changed state documents (with each one's next
closing check) and where each case is filed (team, owner shown without a case manager), then
commits through :func:`~cm_fhir.store.case_writes.commit_case_changes`, the path the cases API
takes too.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection

from cm_fhir.mapping.rules import DischargeRules
from cm_fhir.store.case_writes import (
    DEFAULT_ROUTES,
    BuiltCase,
    CaseChanges,
    CommitResult,
    OutboxRoute,
    Placement,
    commit_case_changes,
)
from cm_fhir.store.trace import TraceRecord
from cm_fhir.worker.schedule import next_close_check
from cm_fhir.worker.states import PatientBook
from cm_fhir.workflow import Outcome

__all__ = ["file_outcome", "finish_changes", "write_changes"]


def file_outcome(
    changes: CaseChanges,
    outcome: Outcome,
    built: Sequence[BuiltCase],
    primary: str,
    hashes: dict[str, str | None],
    *,
    inbox_id: int | None,
    message_key: str | None,
) -> None:
    """The outcome's changed cases (their Bundles unless unchanged) and its trace."""
    for case, b in zip(outcome.changed_cases, built, strict=True):
        assert case.id == b.case.id
        changes.add_case(b, Placement(primary), hashes, inbox_id=inbox_id)
    changes.trace += [TraceRecord(inbox_id, primary, entry, message_key) for entry in outcome.trace]


def finish_changes(
    book: PatientBook, changes: CaseChanges, rules: DischargeRules, now: datetime
) -> None:
    """Add the book's changed states (with their next closing check) and each case's team to
    ``changes``; nothing is written."""
    changes.states, changes.aliases = book.dirty()
    changes.close_checks = {
        key: next_close_check(book.state(key), rules, now) for key in changes.states
    }
    for case_id, place in list(changes.placements.items()):
        team = book.team_of(place.patient_key, case_id)
        owner = rules.teams[team].display if team is not None and team in rules.teams else None
        changes.placements[case_id] = Placement(place.patient_key, team, owner)


def write_changes(
    connection: Connection,
    book: PatientBook,
    changes: CaseChanges,
    rules: DischargeRules,
    now: datetime,
    routes: Sequence[OutboxRoute] = DEFAULT_ROUTES,
) -> CommitResult:
    """Add the book's changed states and each case's team to ``changes`` and commit them."""
    finish_changes(book, changes, rules, now)
    return commit_case_changes(connection, changes, now, routes=routes)
