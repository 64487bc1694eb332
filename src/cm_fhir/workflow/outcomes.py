"""Outcome evaluation from the ADT feed: readmissions and ED visits after a discharge, goals met.

Pure. After every event, each case whose visit has been discharged is evaluated against the
patient's other visits: an inpatient admission (encounter class ``IMP``, ``ACUTE`` or ``NONAC``)
starting within ``outcome.window`` (30 days by default) after the discharge is a readmission; an
emergency visit (``EMER``) in the same window is an ED visit. Goals met are the goals whose
achievement is ``achieved``. The counts are derived from the state alone, so the same feed in any
arrival order, replayed or merged, gives the same outcome. A case gets an outcome (or its outcome
changes) only when a count differs from what it holds; the trace says ``outcome-evaluated``.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from cm_fhir.domain.assessment import OutcomeEvaluation
from cm_fhir.domain.codes import GoalAchievement
from cm_fhir.workflow.actions import Step, revalidated
from cm_fhir.workflow.state import VisitMemory

__all__ = ["ED_CLASSES", "INPATIENT_CLASSES", "evaluate_outcomes"]

#: Encounter classes whose admission counts as a readmission.
INPATIENT_CLASSES = frozenset({"IMP", "ACUTE", "NONAC"})
#: Encounter classes that count as an emergency department visit.
ED_CLASSES = frozenset({"EMER"})


def _counts(discharge: datetime, others: list[VisitMemory], window: timedelta) -> tuple[int, int]:
    starts = [
        (v.patient_class, v.admit_time)
        for v in others
        if v.admit_time is not None and discharge < v.admit_time <= discharge + window
    ]
    readmissions = sum(1 for cls, _ in starts if cls in INPATIENT_CLASSES)
    ed_visits = sum(1 for cls, _ in starts if cls in ED_CLASSES)
    return readmissions, ed_visits


def evaluate_outcomes(step: Step) -> None:
    """Bring the outcome of every discharged case of the patient up to date."""
    for case_id in sorted(step.cases):
        case = step.cases[case_id]
        own = [v for v in step.visits.values() if v.case_id == case_id]
        discharges = [v.discharge_time for v in own if v.discharge_time is not None]
        readmissions, ed_visits = 0, 0  # not discharged (or the discharge was cancelled)
        if discharges:
            own_keys = {v.key for v in own}
            others = [v for k, v in step.visits.items() if k not in own_keys]
            window = step.rules.outcome.window
            readmissions, ed_visits = _counts(max(discharges), others, window)
        met = sum(g.achievement == GoalAchievement.ACHIEVED for g in case.goals)
        counts = (readmissions, ed_visits, met, len(case.goals))
        current = case.outcome
        if current is None and not (readmissions or ed_visits):
            continue
        if current is not None and counts == (
            current.readmissions,
            current.ed_visits,
            current.goals_met,
            current.goals_total,
        ):
            continue
        update = {
            "readmissions": readmissions,
            "ed_visits": ed_visits,
            "goals_met": met,
            "goals_total": len(case.goals),
            "evaluated_on": step.at.date(),
        }
        outcome = (
            current.model_copy(update=update)
            if current is not None
            else OutcomeEvaluation.model_validate(update)
        )
        step.cases[case_id] = revalidated(case, outcome=outcome)
        step.note(
            "outcome", "outcome-evaluated", case_id, f"readmissions={readmissions},ed={ed_visits}"
        )
