"""A40: two patient records are one patient; their visits are re-derived together. Pure.

An A40 says the prior patient (MRG-1) was the surviving patient (PID-3) all along. The prior
patient's cases and visits move to the survivor, and every visit of both whose log reaches back
to its start is folded again from the combined logs in event-time order, as one patient
(:func:`~cm_fhir.workflow.ordering.fold`): a visit both records hold (the survivor's EHR sent
events for the prior patient's visit before the merge reached us) becomes one visit, readmission
screening sees the discharges of both, and the result is the same whatever the order the merge
and the visits' events arrived in. A visit's patient key (part of its case ids) is the key of the
patient its first event by event time names (see :meth:`~cm_fhir.workflow.actions.Step.visit`).

What the fold changes is merged three ways into the current cases, as for a late event (fields
someone else changed keep their value). A live case the combined fold does not make (the
survivor's duplicate of the prior patient's case for the same visit) is marked entered-in-error,
sent once more, and leaves the state; a final one just leaves the state. A visit held by both
records without a complete log on both sides cannot be combined: both are kept, the newer memory
wins, and the step is flagged ``reorder-conflict``. The retired keys stay in the state's
``patient_keys`` (after the survivor's), so a message still sent under a prior patient's
identifiers is applied to the survivor.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime

from pydantic import ValidationError

from cm_fhir.domain.case import Case
from cm_fhir.errors import DomainError
from cm_fhir.hl7v2.events import AdtEvent
from cm_fhir.workflow import facts
from cm_fhir.workflow.actions import Step
from cm_fhir.workflow.ordering import (
    Handler,
    case_ids,
    fold,
    logged_events,
    merge_case,
    retire,
)
from cm_fhir.workflow.state import Flag, PatientState, VisitMemory

__all__ = ["merge_patients"]

_RULE = "event.A40"
_NEVER = (datetime.min.replace(tzinfo=UTC), 0)


def merge_patients(
    step: Step,
    event: AdtEvent,
    merged: Sequence[PatientState],
    handlers: Mapping[str, Handler],
    after: Callable[[Step], None],
) -> tuple[str, ...]:
    """Merge the states of the A40's prior patients into ``step`` (the survivor); the keys
    retired."""
    retired: list[str] = []
    sources: list[PatientState] = []
    for merge in event.merges:
        key = facts.patient_key(facts.patient_ref(merge.prior_identifiers, step.rules))
        if key == step.keys[0]:
            continue
        retired.append(key)
        step.keys = list(dict.fromkeys([*step.keys, key]))
        source = next((s for s in merged if key in s.patient_keys), None)
        if source is None:
            step.note(_RULE, "no-prior-state", None, None, Flag.NO_PRIOR_STATE)
        elif all(source is not s for s in sources):
            sources.append(source)
            step.keys = list(dict.fromkeys([*step.keys, *source.patient_keys]))
    if sources:
        _combine(step, sources, handlers, after)
    return tuple(dict.fromkeys(retired))


def _combine(
    step: Step,
    sources: list[PatientState],
    handlers: Mapping[str, Handler],
    after: Callable[[Step], None],
) -> None:
    parts = [Step(_state_of(step), step.rules, step.now)]
    parts += [Step(s, step.rules, step.now) for s in sources]
    # The current cases of both records (the survivor's win a clash of ids), and their visits.
    held: dict[str, list[VisitMemory]] = {}
    for part in parts:
        for case in part.cases.values():
            step.cases.setdefault(case.id, case)
        for key, visit in part.visits.items():
            held.setdefault(key, []).append(visit)
        step.processed = list(dict.fromkeys([*step.processed, *part.processed]))
    group: dict[str, VisitMemory] = {}
    own: set[str] = set()
    for key, visits in held.items():
        if all(v.log_complete and v.log for v in visits):
            # One visit of one patient; the fold keys it to the patient its first event names.
            group[key] = min(visits, key=lambda v: v.log[0].order)
            own |= set().union(*(case_ids(v) for v in visits))
            step.visits[key] = group[key]
        else:
            if len(visits) > 1:
                note = "visit-not-combined"
                step.note(_RULE, note, visits[0].case_id, None, Flag.REORDER_CONFLICT)
            step.visits[key] = max(visits, key=lambda v: v.log[-1].order if v.log else _NEVER)
    events = sorted(
        ((k, a) for k in group for v in held[k] for a in logged_events(v)),
        key=lambda e: e[1].order,
    )
    try:
        base: dict[str, Case] = {}
        for part in parts:
            mine = {k: v for k, v in part.visits.items() if k in group}
            logged = sorted(
                ((k, a) for k, v in mine.items() for a in logged_events(v)),
                key=lambda e: e[1].order,
            )
            base.update(fold(part, mine, logged, handlers, after).cases)
        start = Step(_state_of(step), step.rules, step.now)
        start.deceased = min((p.deceased for p in parts if p.deceased), default=None)
        folded = fold(start, group, events, handlers, after, own)
    except (DomainError, ValidationError):
        step.note(_RULE, "merge-not-rederived", None, None, Flag.REORDER_CONFLICT)
        return
    for case_id in sorted(own | {c for v in folded.visits.values() for c in case_ids(v)}):
        theirs = folded.cases.get(case_id)
        if theirs is None and case_id in step.cases:
            retire(step, step.cases[case_id], _RULE)
        else:
            merge_case(step, case_id, base.get(case_id), theirs)
    for key in group:
        step.put_visit(folded.visits[key])
    step.last_discharge = folded.last_discharge
    step.deceased = folded.deceased


def _state_of(step: Step) -> PatientState:
    """The step's working copy as a state (visits and cases as they are now)."""
    return PatientState(
        patient_keys=tuple(step.keys),
        patient=step.patient,
        cases=tuple(step.cases.values()),
        visits=tuple(step.visits.values()),
        last_discharge=step.last_discharge,
        processed=tuple(step.processed),
        deceased=step.deceased,
    )
