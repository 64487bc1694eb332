"""When a patient's cases must next be checked for closing. Pure: no I/O.

The worker stores :func:`next_close_check` with every state document it writes
(``patient_states.close_check_at``) and its closing scheduler (:mod:`cm_fhir.worker.closing`)
reads only the due rows. :func:`~cm_fhir.workflow.close_due_cases` stays the one judge of what
closes; the schedule only says when to ask it: at once when it would close something now (the
follow-up work is done), else at the earliest end of ``discharge.close_after`` among the
patient's cases in transition, else never (until the state is written again). A check that
closes nothing reschedules the same way, so a case is never checked in a loop.
"""

from __future__ import annotations

from datetime import UTC, datetime

from cm_fhir.domain.codes import CaseStatus
from cm_fhir.mapping.rules import DischargeRules
from cm_fhir.workflow import PatientState, close_due_cases

__all__ = ["next_close_check"]


def next_close_check(state: PatientState, rules: DischargeRules, now: datetime) -> datetime | None:
    """``now`` if a case of ``state`` is due, the next time one may be, or None."""
    waiting = {c.id: c for c in state.cases if c.status == CaseStatus.TRANSITION}
    if not waiting:
        return None
    if close_due_cases(state, rules, now).changed_cases:
        return now
    deadlines = [
        (visit.discharge_time or case.status_history[-1].start) + rules.discharge.close_after
        for visit in state.visits
        if visit.case_id is not None and (case := waiting.get(visit.case_id)) is not None
    ]
    due = min((d for d in deadlines if d > now), default=None)
    return due.astimezone(UTC) if due is not None else None  # SQLite keeps no offset: store UTC
