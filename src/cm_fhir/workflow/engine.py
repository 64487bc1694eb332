"""``apply_event``: one ADT event applied to one patient's state under the discharge rules. Pure.

Dispatches on the trigger event (A01/A04 admit, A02 transfer, A03 discharge, A05/A14 pre-admit,
A06/A07 class changes, A08 update, A11/A12/A13 cancels, A16 pending discharge, A25 cancel pending
discharge, A27/A38 cancel pre-admit, A40 merge), after the duplicate check: a message whose
control id and content were already applied changes nothing. The event goes to its visit
(:func:`~cm_fhir.workflow.facts.visit_identity`) in event-time order: an event older than the
newest of its visit re-derives the visit (:mod:`cm_fhir.workflow.ordering`). A12 undoes the
transfer it names (by time, then PV1-6 and PV1-3), not simply the last one. Any event reporting
the patient's death ends the patient's open cases. Events without a rule (A15, A26) and events
without a visit number are recorded in the trace, never silently dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Final

from cm_fhir.domain.common import PatientRef
from cm_fhir.hl7v2.events import AdtEvent, Location
from cm_fhir.mapping.rules import DischargeRules
from cm_fhir.workflow import facts, ordering
from cm_fhir.workflow.actions import Step, revalidated
from cm_fhir.workflow.admission import (
    admit,
    cancel_admit,
    refresh_case,
    refresh_visit,
    team_party,
)
from cm_fhir.workflow.lifecycle import (
    cancel_discharge_or_death,
    cancel_pending_discharge,
    cancel_pre_admission,
    discharge_or_death,
    outpatient,
    pre_admit,
    reclassify,
    record_death,
)
from cm_fhir.workflow.merging import merge_patients
from cm_fhir.workflow.outcomes import evaluate_outcomes
from cm_fhir.workflow.planning import plan_discharge
from cm_fhir.workflow.state import (
    Flag,
    Outcome,
    PatientState,
    TransferFrame,
    VisitMemory,
    changed_cases,
    visit_key,
)

__all__ = ["apply_event"]


def apply_event(
    event: AdtEvent,
    state: PatientState,
    rules: DischargeRules,
    *,
    now: datetime,
    merged: Sequence[PatientState] = (),
) -> Outcome:
    """Apply one ADT event to the patient's state.

    ``state`` is the state filed under the event's patient (``PatientState()`` for a new one);
    ``now`` stands in for the event time when the message carries none. For an A40, ``merged``
    holds the states of the prior patients (see :func:`~cm_fhir.workflow.facts.patient_keys`):
    their cases and visits move to the surviving patient and their keys are retired.
    """
    step = Step(state, rules, now, event)
    named = facts.patient_ref(event.patient.identifiers, rules)
    lock = facts.patient_keys(event, rules, named)
    text = facts.event_json(event)
    digest = facts.digest(event, text)
    rule = f"event.{event.event}"
    identity = facts.visit_identity(event, rules) if event.event in _HANDLERS else None
    known = None
    if identity is not None and event.visit is not None:
        known = step.visits.get(visit_key(identity.value, identity.assigning_authority))
    same, reused = ordering.applied(known, event.message_control_id, digest)
    legacy = [p for p in state.processed if p.message_control_id == event.message_control_id]
    if same or any(p.digest == digest for p in legacy):
        step.note(rule, "duplicate-ignored", None, None, Flag.DUPLICATE_MESSAGE)
        return Outcome(state=state, trace=tuple(step.trace), lock_keys=lock)
    if reused or legacy:
        step.note(rule, "applied-again", None, None, Flag.CONTROL_ID_REUSED)
    ref = facts.current_patient(named, state.patient_keys, state.patient)
    step.patient = ref
    step.keys = list(dict.fromkeys([facts.patient_key(ref), *step.keys]))
    retired: tuple[str, ...] = ()
    in_place = False  # a late event folded in its place, followed there by what follows it
    if event.event == "A40":
        retired = merge_patients(step, event, merged, _HANDLERS, _after_event)
    elif event.event not in _HANDLERS:
        step.note(rule, "no-rule", None, None, Flag.NO_RULE)
    elif identity is None or event.visit is None:
        step.note(rule, "no-visit", None, None, Flag.NO_VISIT_NUMBER)
    else:
        visit = step.visit(identity, facts.patient_key(named))
        entry = ordering.Arrival(event, step.at, text, digest)
        if ordering.is_stale(step, visit, entry):
            in_place = ordering.rederive(step, visit, entry, _HANDLERS, after=_after_event)
        else:
            fresh = visit.key not in step.visits
            step.put_visit(ordering.append(_HANDLERS[event.event](step, visit), entry, fresh=fresh))
    # Folded in its place, a death was applied there (and maybe cancelled by a later A13); it
    # still ends the open cases of visits the fold could not re-derive.
    _after_event(step, death=not in_place or step.deceased is not None)
    after = step.state()
    return Outcome(
        state=after,
        changed_cases=(*changed_cases(state, after), *step.retired_cases),
        trace=tuple(step.trace),
        lock_keys=lock,
        retired_keys=retired,
    )


def _after_event(step: Step, *, death: bool = True) -> None:
    """What follows every event, whether applied as it comes or folded again in its place (a
    late event, a merge), so that a fold gives what in-order delivery gives: a death ends the
    patient's open cases, outcomes are evaluated, open cases name the current patient.

    ``death=False`` after a late event the fold already put in its place when the fold leaves the
    patient alive: its death was applied there, and a later A13 in the fold cancelled it.
    """
    if death:
        record_death(step)
    evaluate_outcomes(step)
    if step.patient is not None:
        _refresh_patient(step, step.patient)


# -- handlers: (step, visit memory) -> new visit memory -------------------------------------------


def _admission(step: Step, visit: VisitMemory) -> VisitMemory:
    visit = _relocate(step, refresh_visit(step, visit, with_location=False), record=False)
    visit = admit(step, visit, f"event.{_code(step)}")
    return plan_discharge(step, visit, pending=False)


def _transfer(step: Step, visit: VisitMemory) -> VisitMemory:
    before = visit.patient_class
    visit = refresh_visit(step, visit, with_location=False)
    visit = _relocate(step, visit, record=True)
    return _after_update(step, visit, before)


def _update(step: Step, visit: VisitMemory) -> VisitMemory:
    before = visit.patient_class
    visit = refresh_visit(step, visit, with_location=False)
    visit = _relocate(step, visit, record=False)
    return _after_update(step, visit, before)


def _after_update(step: Step, visit: VisitMemory, class_before: str | None) -> VisitMemory:
    """Screen again when the patient class changed; keep the case's data current."""
    case = step.open_case_of(visit)
    if class_before is not None and visit.patient_class != class_before:
        visit = reclassify(step, visit, f"screening.{_code(step)}")
    elif case is not None:
        refresh_case(step, case, visit)
    return plan_discharge(step, visit, pending=False)


def _class_change(step: Step, visit: VisitMemory) -> VisitMemory:
    visit = _relocate(step, refresh_visit(step, visit, with_location=False), record=False)
    visit = admit(step, visit, "screening.A06")
    return plan_discharge(step, visit, pending=False)


def _pending(step: Step, visit: VisitMemory) -> VisitMemory:
    visit = refresh_visit(step, visit, with_location=visit.location is None)
    case = step.open_case_of(visit)
    if case is not None:
        refresh_case(step, case, visit)
    return plan_discharge(step, visit, pending=True)


def _discharge(step: Step, visit: VisitMemory) -> VisitMemory:
    # Only A02 and A08 move a known visit; other events' PV1-3 sets the unit of a new visit.
    return discharge_or_death(
        step, refresh_visit(step, visit, with_location=visit.location is None)
    )


def _cancel_transfer(step: Step, visit: VisitMemory) -> VisitMemory:
    """A12: undo the transfer the message names; the patient goes back only if it was the last."""
    frame = _cancelled_transfer(step, visit)
    if frame is None:
        step.note("event.A12", "nothing-to-undo", visit.case_id, None, Flag.NOTHING_TO_UNDO)
        return visit
    remaining = tuple(f for f in visit.transfers if f is not frame)
    if frame is not visit.transfers[-1]:
        # A later move stands: the patient stays where it took them.
        step.note("event.A12", "transfer-cancelled", visit.case_id)
        return visit.model_copy(update={"transfers": remaining})
    case = step.open_case_of(visit)
    if case is not None and frame.moved_task_ids:
        new, old = team_party(step.rules, visit.team), team_party(step.rules, frame.team)
        step.reassign(case, new, old, "event.A12", only=frame.moved_task_ids)
    step.note("event.A12", "location-reverted", visit.case_id)
    update = {"location": frame.location, "place": frame.place_before, "team": frame.team}
    return visit.model_copy(update={**update, "transfers": remaining})


def _cancelled_transfer(step: Step, visit: VisitMemory) -> TransferFrame | None:
    """The live transfer an A12 names: the one at its EVN-6 time, else the one to its PV1-6
    (the cancelled location) from its PV1-3 (where the patient goes back), else the latest."""
    event = step.event
    assert event is not None
    assert event.visit is not None
    if not visit.transfers:
        return None
    when = facts.aware(event.occurred_time, step.rules) if event.occurred_time else None
    cancelled, back = event.visit.prior_location, event.visit.location

    def score(frame: TransferFrame) -> int:
        return (
            4 * (when is not None and frame.at == when)
            + 2 * _names(cancelled, frame.place)
            + _names(back, frame.place_before)
        )

    return max(reversed(visit.transfers), key=score)


def _place(location: Location | None) -> str | None:
    """``unit^room^bed`` of a PV1-3/PV1-6 location (None without a unit)."""
    if location is None or location.point_of_care is None:
        return None
    return f"{location.point_of_care}^{location.room or ''}^{location.bed or ''}"


def _names(location: Location | None, place: str | None) -> bool:
    """Whether a location from a message names ``place`` (the parts it gives must match)."""
    given = _place(location)
    if given is None or place is None:
        return False
    return all(g in ("", p) for g, p in zip(given.split("^"), place.split("^"), strict=True))


def _relocate(step: Step, visit: VisitMemory, *, record: bool) -> VisitMemory:
    """Move the visit to the event's PV1-3 location and the open tasks to that unit's team.

    A move within a unit (a new room or bed) is recorded too, so an A12 can undo exactly it.
    """
    event = step.event
    assert event is not None
    assert event.visit is not None
    place = _place(event.visit.location)
    new = event.visit.location.point_of_care if event.visit.location is not None else None
    if new is None or place is None or (new == visit.location and place == visit.place):
        return visit
    if new == visit.location and visit.place is None:
        return visit.model_copy(update={"place": place})  # first detail of the current unit
    rules = step.rules
    old_team = visit.team or rules.team(visit.location)
    new_team = rules.team(new)
    moved: tuple[str, ...] = ()
    case = step.open_case_of(visit)
    if case is not None and rules.transfer.move_open_tasks and new_team != old_team:
        old, target = team_party(rules, old_team), team_party(rules, new_team)
        _, moved = step.reassign(case, old, target, "transfer.move_open_tasks")
    step.note(f"event.{event.event}", "location-changed", visit.case_id)
    update: dict[str, object] = {"location": new, "place": place, "team": new_team}
    if record:
        frame = TransferFrame(
            message_control_id=event.message_control_id,
            at=step.at,
            location=visit.location,
            place_before=visit.place,
            place=place,
            team=old_team,
            moved_task_ids=moved,
        )
        update["transfers"] = (*visit.transfers, frame)
    return visit.model_copy(update=update)


_Handler = Callable[[Step, VisitMemory], VisitMemory]
_HANDLERS: Final[dict[str, _Handler]] = {
    "A01": _admission,
    "A04": _admission,
    "A02": _transfer,
    "A03": _discharge,
    "A05": pre_admit,
    "A06": _class_change,
    "A07": outpatient,
    "A08": _update,
    "A11": cancel_admit,
    "A12": _cancel_transfer,
    "A13": cancel_discharge_or_death,
    "A14": pre_admit,
    "A16": _pending,
    "A25": cancel_pending_discharge,
    "A27": cancel_pre_admission,
    "A38": cancel_pre_admission,
}


def _code(step: Step) -> str:
    return step.event.event if step.event is not None else "tick"


# -- merge and patient identity -------------------------------------------------------------------


def _refresh_patient(step: Step, ref: PatientRef) -> None:
    """Open cases follow the patient's current identifiers (A08 demographics); every case of a
    patient merged into this one names the survivor (A40)."""
    retired = set(step.keys[1:])
    for case_id, case in list(step.cases.items()):
        merged_away = bool(retired) and facts.patient_key(case.patient) in retired
        if (merged_away or not case.is_final) and case.patient != ref:
            step.cases[case_id] = revalidated(case, patient=ref)
            step.note(f"event.{_code(step)}", "patient-updated", case_id)
