"""Encounter notices and review decisions applied to a patient's state. Pure.

:func:`apply_notice` is the payer's side of an admission, transfer or discharge notification: the
member's open payer case (programme ``payer_programme`` of ``payer-exchange.yaml``) takes the stay's
encounter, opening a case when the member has none. An admission schedules the first concurrent
review (``notifications.concurrent_review_every`` days after the admission) unless one is
scheduled; a discharge moves the case to ``transition`` and ends the schedule; a transfer only
records the stay. Applying a notice twice changes nothing: each step is a no-op when its result
is already there.

:func:`apply_decision` records a payer's decision on the review whose request identifier it
names, on whichever case of the patient holds it. A decision for no known review, or one that
contradicts the decision already made, changes nothing and is flagged (the worker files the
message under ``needs_attention``).
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from cm_fhir.domain.case import Case, Coverage, StatusChange
from cm_fhir.domain.codes import CaseStatus
from cm_fhir.domain.common import PartyRef, PatientRef
from cm_fhir.domain.events import EncounterNotice, NoticeKind, ReviewDecided
from cm_fhir.errors import DomainError
from cm_fhir.mapping.payer_exchange import PayerExchange
from cm_fhir.workflow.facts import patient_key
from cm_fhir.workflow.state import Flag, Outcome, PatientState, TraceEntry, changed_cases

__all__ = ["apply_decision", "apply_notice", "new_payer_case", "notice_case_id"]

_OPEN = (CaseStatus.ACTIVE, CaseStatus.ON_HOLD)


def notice_case_id(notice: EncounterNotice) -> str:
    """The id of the payer case a member's first notice opens: from the patient and the stay."""
    identity = "|".join(
        (patient_key(notice.patient), notice.encounter.system, notice.encounter.value)
    )
    return f"PCM-{hashlib.sha256(identity.encode()).hexdigest()[:16]}"


def new_payer_case(
    case_id: str,
    programme: str,
    patient: PatientRef,
    at: datetime,
    payer: PartyRef | None,
    member_id: str | None,
) -> Case:
    """A new, active case of the payer's ``programme`` for the member, opened at ``at``."""
    coverage = (Coverage(payer=payer, member_id=member_id),) if payer and member_id else ()
    return Case(
        id=case_id,
        patient=patient,
        programme=programme,
        status=CaseStatus.ACTIVE,
        status_history=(StatusChange(status=CaseStatus.ACTIVE, start=at),),
        managing_organization=payer,
        coverage=coverage,
    )


def _with_state(state: PatientState, patient: PatientRef, cases: dict[str, Case]) -> PatientState:
    keys = state.patient_keys or (patient_key(patient),)
    return state.model_copy(
        update={
            "patient_keys": keys,
            "patient": state.patient or patient,
            "cases": (*cases.values(),),
        }
    )


def _outcome(before: PatientState, after: PatientState, trace: list[TraceEntry]) -> Outcome:
    return Outcome(
        state=after,
        changed_cases=changed_cases(before, after),
        trace=tuple(trace),
        lock_keys=after.patient_keys[:1],
    )


def apply_notice(
    notice: EncounterNotice, state: PatientState, spec: PayerExchange, *, now: datetime
) -> Outcome:
    """Apply an admission, transfer or discharge notice to the member's payer case."""
    programme = spec.payer_programme
    rule = f"notifications.events.{notice.kind.value}"
    event = f"notice-{notice.kind.value}"
    trace: list[TraceEntry] = []

    def note(action: str, case_id: str | None, *flags: Flag) -> None:
        trace.append(
            TraceEntry(
                message_control_id=notice.message_id,
                event=event,
                rule=rule,
                action=action,
                case_id=case_id,
                flags=flags,
            )
        )

    cases = {c.id: c for c in state.cases}
    case = next((c for c in state.cases if c.programme == programme and not c.is_final), None)
    if case is None:
        case_id = notice_case_id(notice)
        if case_id in cases:  # this stay's case was closed: a late notice changes nothing
            note("unchanged", case_id, Flag.CASE_FINAL)
            return _outcome(state, state, trace)
        at = min(notice.admitted or notice.at, notice.at)
        case = new_payer_case(
            case_id, programme, notice.patient, at, notice.payer, notice.member_id
        )
        note("payer-case-opened", case_id)
    before = case
    readmitted = notice.encounter not in case.encounters and case.status == CaseStatus.TRANSITION
    case = case.with_encounter(notice.encounter)
    at = max(notice.at, case.status_history[-1].start)
    if notice.kind == NoticeKind.ADMIT:
        if readmitted:
            case = case.transition(CaseStatus.ACTIVE, at)
        if case.next_review is None and case.status in _OPEN:
            first = (notice.admitted or notice.at).date()
            case = case.with_next_review(
                first + timedelta(days=spec.notifications.concurrent_review_every)
            )
            note("concurrent-review-scheduled", case.id)
    elif notice.kind == NoticeKind.DISCHARGE and case.status in _OPEN:
        case = case.with_next_review(None).transition(CaseStatus.TRANSITION, at)
        note("transition", case.id)
    if case == before:
        note("unchanged", case.id)
    elif case.encounters != before.encounters:
        note("encounter-recorded", case.id)
    cases[case.id] = case
    return _outcome(state, _with_state(state, notice.patient, cases), trace)


def apply_decision(event: ReviewDecided, state: PatientState, *, now: datetime) -> Outcome:
    """Record the payer's decision on the review it answers (see the module docstring)."""
    trace: list[TraceEntry] = []

    def note(action: str, case_id: str | None, target: str | None, *flags: Flag) -> None:
        trace.append(
            TraceEntry(
                message_control_id=event.message_id,
                event="review-decided",
                rule="review.decision",
                action=action,
                case_id=case_id,
                target=target,
                flags=flags,
            )
        )

    held = next(
        (
            (case, review)
            for case in state.cases
            for review in case.utilization_reviews
            if review.request_identifier == event.request_identifier
        ),
        None,
    )
    if held is None:
        note("no-such-review", None, None, Flag.UNKNOWN_REVIEW)
        return _outcome(state, state, trace)
    case, review = held
    try:
        decided = review.decide(
            event.decision,
            max(event.at, review.requested),
            authorized_quantity=event.authorized_quantity,
            authorized_level_of_care=event.authorized_level_of_care,
            authorized_period=event.authorized_period,
            authorization_number=event.authorization_number,
            next_review=event.next_review,
            reason=event.reason,
            reviewer=event.reviewer,
        )
    except DomainError:
        note("decision-refused", case.id, review.id, Flag.DECISION_CONFLICT)
        return _outcome(state, state, trace)
    if decided == review:
        note("unchanged", case.id, review.id)
        return _outcome(state, state, trace)
    note(f"review-{decided.decision.value}", case.id, review.id)
    cases = {c.id: c for c in state.cases}
    cases[case.id] = case.with_utilization_review(decided)
    return _outcome(state, _with_state(state, event.patient, cases), trace)
