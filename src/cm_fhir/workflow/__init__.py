"""The case workflow: domain events drive cases, care plans and tasks. Pure: no I/O.

Events come from any source (:mod:`.events`): HL7v2 ADT, FHIR admit/transfer/discharge
notifications, payers' review decisions. :func:`apply_domain_event` takes any of them; ADT events go
to :func:`apply_event` (below), the others to :mod:`.payer_events`.

The seam between this package and the worker that runs it::

    rules = load_discharge_rules()                      # mappings/discharge-rules.yaml, once
    keys = patient_keys(event, rules)                   # lock these (an A40 names both patients)
    state = <the PatientState filed under keys[0]>      # PatientState() for a new patient
    merged = <the states filed under keys[1:]>          # A40 only
    outcome = apply_event(event, state, rules, now=now, merged=merged)
    # commit in one transaction: outcome.state under outcome.state.patient_keys[0],
    # outcome.changed_cases to the outbox (map_case), outcome.trace to the audit trail;
    # file outcome.retired_keys as aliases of the surviving patient.

    outcome = close_due_cases(state, rules, now)        # a periodic tick, same commit rules

The worker claims inbox rows per patient in arrival order and calls :func:`apply_event` once per
event; the workflow itself puts a visit's events in event-time order (:mod:`.ordering`).
:class:`PatientState` is a frozen, JSON-serialisable document (``model_dump_json`` /
``model_validate_json``): the patient keys, the cases (:class:`~cm_fhir.domain.Case`, the domain
truth) and, kept apart from them, per-visit workflow memory (the visit's number and authority,
class, unit, team, admit and discharge times, the live transfers A12 matches, which task and
referral ids each triggering event created, so cancels undo exactly what they cancel, and the
visit's applied events). :class:`Outcome` carries the new state, the cases that changed, the trace
(:class:`TraceEntry`: message control id, the rule's key path in the rules file, the action, the
case and item, and flags such as ``unmapped-disposition`` or ``stale-event``) and the keys to
lock. Re-applying a message with the same control id and content changes nothing (its visit's
log holds its digest); an A40 re-derives both records' visits together (:mod:`.merging`); ids derive
from the patient, the visit (number and authority), the rule and the sequence numbers only, so
replaying an inbox gives identical cases.
"""

from cm_fhir.workflow.closing import close_due_cases
from cm_fhir.workflow.engine import apply_event
from cm_fhir.workflow.events import (
    DomainEvent,
    apply_domain_event,
    event_id,
    event_keys,
    event_label,
)
from cm_fhir.workflow.facts import case_id, patient_key, patient_keys, visit_identity, visit_slug
from cm_fhir.workflow.screening import ScreeningFacts, ScreeningResult, screen
from cm_fhir.workflow.state import (
    EffectKind,
    EventEffect,
    Flag,
    LoggedEvent,
    Outcome,
    PatientState,
    TraceEntry,
    TransferFrame,
    VisitMemory,
)

__all__ = [
    "DomainEvent",
    "EffectKind",
    "EventEffect",
    "Flag",
    "LoggedEvent",
    "Outcome",
    "PatientState",
    "ScreeningFacts",
    "ScreeningResult",
    "TraceEntry",
    "TransferFrame",
    "VisitMemory",
    "apply_domain_event",
    "apply_event",
    "case_id",
    "close_due_cases",
    "event_id",
    "event_keys",
    "event_label",
    "patient_key",
    "patient_keys",
    "screen",
    "visit_identity",
    "visit_slug",
]
