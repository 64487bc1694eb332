"""Domain events other than ADT through the one workflow entry point (``apply_domain_event``):
encounter notices on payer cases, review decisions on whichever case holds the review."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from cm_fhir.domain import CaseStatus, Identifier, LevelOfCare, ReviewDecision
from cm_fhir.domain.events import NoticeKind, ReviewDecided
from cm_fhir.fhir.pas_response import claim_response, review_decided
from cm_fhir.mapping.rules import load_discharge_rules
from cm_fhir.workflow import (
    DomainEvent,
    Flag,
    Outcome,
    PatientState,
    apply_domain_event,
    event_keys,
    patient_key,
)
from cm_fhir.workflow.payer_events import notice_case_id
from notification_samples import ADMITTED, DISCHARGED, SPEC, notice
from pas_samples import review, stroke_case

RULES = load_discharge_rules()
NOW = datetime(2026, 3, 10, tzinfo=UTC)
REQUEST = Identifier(system="http://cm-fhir.org/fhir/sid/pas-claim", value="HOSP-1.ur1")


def _apply(event: DomainEvent, state: PatientState) -> Outcome:
    return apply_domain_event(event, state, RULES, now=NOW, payer=SPEC)


def test_admission_then_discharge_then_readmission_of_another_stay() -> None:
    admit = notice(NoticeKind.ADMIT)
    # a payer files the member under its member id
    assert event_keys(admit, RULES) == ("urn:oid:2.16.840.1.113883.3.9001.7|MBR-55512309",)
    first = _apply(admit, PatientState())
    (case,) = first.changed_cases
    assert case.id == notice_case_id(admit)
    assert case.programme == SPEC.payer_programme
    assert case.next_review == ADMITTED.date() + timedelta(days=1)
    state = first.state
    assert _apply(admit, state).changed_cases == ()
    gone = _apply(notice(NoticeKind.DISCHARGE), state)
    (left,) = gone.changed_cases
    assert left.status == CaseStatus.TRANSITION
    assert left.status_history[-1].start == DISCHARGED
    assert left.next_review is None
    other = Identifier(system=admit.encounter.system, value="V-99")
    back = _apply(
        notice(NoticeKind.ADMIT, encounter=other, message_id="m-2", admitted=NOW, at=NOW),
        gone.state,
    )
    (again,) = back.changed_cases
    assert again.id == left.id
    assert again.status == CaseStatus.ACTIVE
    assert again.encounters[-1] == other
    assert again.next_review == date(2026, 3, 11)


def test_a_late_notice_for_a_closed_case_changes_nothing() -> None:
    state = _apply(notice(), PatientState()).state
    (case,) = state.cases
    closed = state.model_copy(update={"cases": (case.transition(CaseStatus.CLOSED, NOW),)})
    late = _apply(notice(NoticeKind.TRANSFER), closed)
    assert late.changed_cases == ()
    assert Flag.CASE_FINAL in late.flags


def _with_review() -> PatientState:
    case = stroke_case()
    asked = review(id="ur1", request_identifier=REQUEST)
    case = case.model_copy(update={"utilization_reviews": (asked,)})
    return PatientState(
        patient_keys=(patient_key(case.patient),), patient=case.patient, cases=(case,)
    )


def _decided(decision: ReviewDecision, **changes: Any) -> ReviewDecided:
    fields: dict[str, Any] = {
        "message_id": "CR-1|1",
        "patient": stroke_case().patient,
        "request_identifier": REQUEST,
        "decision": decision,
        "at": NOW,
        "authorized_quantity": 7,
        "authorization_number": "AUTH-1",
        "next_review": date(2026, 3, 12),
        "reason": "meets criteria",
    }
    fields.update(changes)
    return ReviewDecided(**fields)


def test_a_decision_lands_on_the_review_it_answers_once() -> None:
    state = _with_review()
    event = _decided(ReviewDecision.PARTIALLY_APPROVED)
    done = _apply(event, state)
    (case,) = done.changed_cases
    decided = case.utilization_review("ur1")
    assert decided.decision == ReviewDecision.PARTIALLY_APPROVED
    assert decided.authorized_quantity == 7
    assert decided.authorized_level_of_care == LevelOfCare.INPATIENT_REHABILITATION
    assert decided.authorization_number == "AUTH-1"
    assert decided.next_review == date(2026, 3, 12)
    assert decided.decided == NOW
    resent = _apply(event, done.state)
    assert resent.changed_cases == ()
    assert not resent.flags
    other = _apply(_decided(ReviewDecision.DENIED, authorized_quantity=None), done.state)
    assert other.changed_cases == ()
    assert Flag.DECISION_CONFLICT in other.flags


def test_a_decision_for_no_known_review_is_flagged() -> None:
    unknown = _decided(
        ReviewDecision.APPROVED, request_identifier=Identifier(system="urn:x", value="nope")
    )
    outcome = _apply(unknown, _with_review())
    assert outcome.changed_cases == ()
    assert Flag.UNKNOWN_REVIEW in outcome.flags


def test_a_claim_response_read_as_an_event_decides_the_review_as_the_payer_did() -> None:
    state = _with_review()
    (case,) = state.cases
    asked = case.utilization_review("ur1")
    payer_side = asked.decide(
        ReviewDecision.APPROVED,
        NOW,
        authorized_quantity=4,
        authorization_number="AUTH-9",
        next_review=date(2026, 3, 13),
        reason="meets criteria",
    )
    response = claim_response(payer_side, case.patient, SPEC, "http://cm-fhir.org/fhir", NOW)
    event = review_decided(response, SPEC, received=NOW + timedelta(hours=1))
    assert event.request_identifier == REQUEST
    assert event.at == NOW  # the payer's created time, not when it was read
    outcome = _apply(event, state)
    (changed,) = outcome.changed_cases
    assert changed.utilization_review("ur1") == payer_side
    assert review_decided(response, SPEC, received=NOW).message_id == event.message_id
