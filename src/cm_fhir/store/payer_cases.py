"""Payer cases and the utilization reviews on them, as the payer-side API reads them. I/O.

A payer's reviews live on its payer cases (ADR 0017); these read them through the ``cases``
projection, by programme (``ix_cases_programme``), a page of 200 at a time. A member's own cases
are found through the member's state document, under any of the member's keys (one per member
id, :func:`~cm_fhir.workflow.facts.member_keys`): :func:`member_cases` reads them,
:func:`file_member` locks the member and links the keys that hold nothing of their own to the
member's state, so a later message naming any of them finds it. Functions run in the caller's
transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection

from cm_fhir.domain import Case, ReviewDecision, UtilizationReview
from cm_fhir.store.case_repo import CaseFilter, StoredCase, list_cases, read_case
from cm_fhir.store.cases import (
    load_states,
    lock_states,
    member_filing,
    row_resolver,
    write_states,
)
from cm_fhir.workflow.state import PatientState

__all__ = ["file_member", "find_review", "member_cases", "payer_cases", "review_counts"]

_PAGE = 200


def payer_cases(connection: Connection, programme: str) -> list[StoredCase]:
    """Every case of ``programme``."""
    found: list[StoredCase] = []
    after: str | None = None
    filters = CaseFilter(programme=programme)
    while True:
        page, more = list_cases(connection, filters, limit=_PAGE, after=after)
        found += page
        if not more or not page:
            return found
        after = page[-1].case.id


def find_review(
    connection: Connection, programme: str, review_id: str
) -> tuple[Case, UtilizationReview] | None:
    """The payer case holding review ``review_id`` and the review, or None."""
    for stored in payer_cases(connection, programme):
        for review in stored.case.utilization_reviews:
            if review.id == review_id:
                return stored.case, review
    return None


def review_counts(connection: Connection, programme: str, now: datetime) -> tuple[int, int]:
    """How many reviews on the payer's cases are pended, and how many of those are overdue."""
    pended = overdue = 0
    for stored in payer_cases(connection, programme):
        for review in stored.case.utilization_reviews:
            if review.decision == ReviewDecision.PENDED:
                pended += 1
                overdue += review.is_overdue(now)
    return pended, overdue


def file_member(connection: Connection, keys: Sequence[str], now: datetime) -> str:
    """Lock the member's states under ``keys``, link the keys without a document of their own
    to the member's state (:func:`~cm_fhir.store.cases.member_filing`); the key it is filed
    under."""
    rows = lock_states(connection, keys)
    documents = {k for k, r in rows.items() if r.document is not None and r.alias_of is None}
    primary, aliases = member_filing(keys, row_resolver(rows), documents.__contains__)
    write_states(connection, {}, aliases, now, {})
    return primary


def member_cases(connection: Connection, programme: str, keys: Sequence[str]) -> list[StoredCase]:
    """The member's cases of ``programme``: those in the state documents ``keys`` lead to."""
    rows = load_states(connection, keys)
    resolve = row_resolver(rows)
    found: dict[str, StoredCase] = {}
    for key in dict.fromkeys(resolve(k) for k in keys):
        row = rows.get(key)
        if row is None or row.document is None:
            continue
        for case in PatientState.model_validate_json(row.document).cases:
            if case.programme == programme and case.id not in found:
                stored = read_case(connection, case.id)
                if stored is not None:
                    found[case.id] = stored
    return sorted(found.values(), key=lambda s: s.case.id)
