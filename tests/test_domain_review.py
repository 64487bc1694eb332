"""Utilization review in the domain: deadline from urgency, overdue, decisions, on the case."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from cm_fhir.domain import (
    CaseStatus,
    LevelOfCare,
    Period,
    ReviewDecision,
    ReviewUrgency,
)
from cm_fhir.errors import DomainError
from pas_samples import REQUESTED, review, stroke_case

LATER = REQUESTED + timedelta(hours=5)


@pytest.mark.parametrize(
    ("urgency", "window"),
    [(ReviewUrgency.EXPEDITED, timedelta(hours=72)), (ReviewUrgency.STANDARD, timedelta(days=7))],
)
def test_the_deadline_follows_the_urgency_and_a_pended_review_past_it_is_overdue(
    urgency: ReviewUrgency, window: timedelta
) -> None:
    pended = review(urgency=urgency)
    assert pended.deadline == REQUESTED + window
    assert not pended.is_overdue(REQUESTED + window)
    assert pended.is_overdue(REQUESTED + window + timedelta(seconds=1))


def test_a_decided_review_is_never_overdue() -> None:
    decided = review().decide(ReviewDecision.DENIED, LATER, reason="Criteria not met")
    assert not decided.is_overdue(REQUESTED + timedelta(days=30))


def test_an_approval_grants_what_was_asked_unless_it_says_otherwise() -> None:
    approved = review().decide(
        ReviewDecision.APPROVED,
        LATER,
        authorization_number="AUTH-1",
        next_review=date(2026, 3, 5),
    )
    assert approved.decided == LATER
    assert approved.authorized_quantity == 10
    assert approved.authorized_level_of_care == LevelOfCare.INPATIENT_REHABILITATION
    assert (approved.authorization_number, approved.next_review) == ("AUTH-1", date(2026, 3, 5))
    three = review().decide(ReviewDecision.APPROVED, LATER, authorized_quantity=3)
    assert three.authorized_quantity == 3


def test_a_denial_authorizes_nothing() -> None:
    with pytest.raises(DomainError, match="authorizes nothing"):
        review().decide(ReviewDecision.DENIED, LATER, authorized_quantity=3)
    period = Period(start=LATER)
    with pytest.raises(DomainError, match="authorizes nothing"):
        review().decide(ReviewDecision.DENIED, LATER, authorized_period=period)


def test_a_partial_approval_grants_less_or_another_level() -> None:
    with pytest.raises(DomainError, match="partial approval"):
        review().decide(ReviewDecision.PARTIALLY_APPROVED, LATER, authorized_quantity=10)
    fewer = review().decide(ReviewDecision.PARTIALLY_APPROVED, LATER, authorized_quantity=4)
    assert fewer.authorized_quantity == 4
    snf = review().decide(
        ReviewDecision.PARTIALLY_APPROVED,
        LATER,
        authorized_quantity=10,
        authorized_level_of_care=LevelOfCare.SKILLED_NURSING,
    )
    assert snf.authorized_level_of_care == LevelOfCare.SKILLED_NURSING


def test_a_decision_is_final_but_the_same_answer_again_is_accepted() -> None:
    approved = review().decide(ReviewDecision.APPROVED, LATER, authorized_quantity=3)
    again = approved.decide(
        ReviewDecision.APPROVED, LATER + timedelta(hours=1), authorized_quantity=3
    )
    assert again is approved
    with pytest.raises(DomainError, match="already approved"):
        approved.decide(ReviewDecision.DENIED, LATER)
    with pytest.raises(DomainError, match="cannot be pended"):
        approved.decide(ReviewDecision.PENDED, LATER)
    assert review().decide(ReviewDecision.PENDED, LATER).decided is None


def test_a_decision_cannot_predate_the_request() -> None:
    with pytest.raises(DomainError, match="before it was requested"):
        review().decide(ReviewDecision.APPROVED, REQUESTED - timedelta(minutes=1))


def test_decided_is_set_exactly_when_decided() -> None:
    with pytest.raises(ValueError, match="'decided'"):
        review(decided=LATER)
    with pytest.raises(ValueError, match="'decided'"):
        review(decision=ReviewDecision.APPROVED)


def test_the_case_holds_its_reviews_by_unique_id_and_replaces_one_when_decided() -> None:
    case = stroke_case().add_utilization_review(review())
    assert case.utilization_review("ur1").decision == ReviewDecision.PENDED
    with pytest.raises(ValueError, match="utilization review id 'ur1' is used twice"):
        case.add_utilization_review(review())
    decided = case.utilization_review("ur1").decide(ReviewDecision.APPROVED, LATER)
    case = case.with_utilization_review(decided)
    assert case.utilization_review("ur1").decision == ReviewDecision.APPROVED
    assert len(case.utilization_reviews) == 1
    with pytest.raises(DomainError, match="no utilization review 'ur2'"):
        case.with_utilization_review(review(id="ur2"))


def test_a_closed_case_takes_no_new_review_but_keeps_its_reviews_document_intact() -> None:
    case = stroke_case().add_utilization_review(review())
    closed = case.transition(CaseStatus.CLOSED, case.status_history[-1].start + timedelta(days=9))
    with pytest.raises(DomainError, match="no new utilization reviews"):
        closed.add_utilization_review(review(id="ur2"))
    decided = closed.with_utilization_review(
        closed.utilization_review("ur1").decide(ReviewDecision.DENIED, LATER)
    )
    assert decided.utilization_review("ur1").decision == ReviewDecision.DENIED
    reread = type(case).model_validate_json(decided.model_dump_json())
    assert reread == decided
