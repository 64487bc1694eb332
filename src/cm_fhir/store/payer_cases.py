"""Payer cases and the utilization reviews on them, as the payer-side API reads them. I/O.

A payer's reviews live on its payer cases (ADR 0017); these read them through the ``cases``
projection, by programme (``ix_cases_programme``) and, when the member is known, by patient key
(``ix_cases_patient_key``), a page of 200 at a time. Functions run in the caller's transaction.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection

from cm_fhir.domain import Case, ReviewDecision, UtilizationReview
from cm_fhir.store.case_repo import CaseFilter, StoredCase, list_cases

__all__ = ["find_review", "payer_cases", "review_counts"]

_PAGE = 200


def payer_cases(
    connection: Connection, programme: str, patient: tuple[str, str] | None = None
) -> list[StoredCase]:
    """Every case of ``programme`` (of one patient, ``(system, value)``, when given)."""
    found: list[StoredCase] = []
    after: str | None = None
    filters = CaseFilter(patient=patient, programme=programme)
    while True:
        page, more = list_cases(connection, filters, limit=_PAGE, after=after)
        found += page
        if not more or not page:
            return found
        after = page[-1].case.id


def find_review(
    connection: Connection,
    programme: str,
    review_id: str,
    patient: tuple[str, str] | None = None,
) -> tuple[Case, UtilizationReview] | None:
    """The payer case holding review ``review_id`` and the review, or None."""
    for stored in payer_cases(connection, programme, patient):
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
