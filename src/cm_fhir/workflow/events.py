"""The domain events the workflow consumes, whatever their source, and the one entry point. Pure.

:data:`DomainEvent` is every kind: an HL7v2 ADT event (:class:`~cm_fhir.hl7v2.events.AdtEvent`),
an admission/transfer/discharge notice (:class:`~cm_fhir.domain.events.EncounterNotice`, from a
FHIR notification) and a payer's review decision (:class:`~cm_fhir.domain.events.ReviewDecided`,
from a ClaimResponse or the API). Each source's parser lives at its edge; the worker and the API
hand the typed event to :func:`apply_domain_event`, lock :func:`event_keys` first, and commit the
:class:`~cm_fhir.workflow.state.Outcome` through the one write path.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from cm_fhir.domain.events import EncounterNotice, ReviewDecided
from cm_fhir.hl7v2.events import AdtEvent
from cm_fhir.mapping.payer_exchange import PayerExchange, default_payer_exchange
from cm_fhir.mapping.rules import DischargeRules
from cm_fhir.workflow.engine import apply_event
from cm_fhir.workflow.facts import member_keys, patient_key, patient_keys
from cm_fhir.workflow.payer_events import apply_decision, apply_notice
from cm_fhir.workflow.state import Outcome, PatientState

__all__ = ["DomainEvent", "apply_domain_event", "event_id", "event_keys", "event_label"]

DomainEvent = AdtEvent | EncounterNotice | ReviewDecided


def event_keys(event: DomainEvent, rules: DischargeRules) -> tuple[str, ...]:
    """The patient keys to lock for ``event``: an A40 names two patients, a notice its member by
    each member id (:func:`~cm_fhir.workflow.facts.member_keys`; the member's state may be filed
    under any of them), a decision one patient."""
    if isinstance(event, AdtEvent):
        return patient_keys(event, rules)
    if isinstance(event, EncounterNotice):
        return member_keys(event.patient)
    return (patient_key(event.patient),)


def event_label(event: DomainEvent) -> str:
    """What the event is, for the trace and logs: ``A01``, ``notice-admit``..."""
    if isinstance(event, AdtEvent):
        return event.event
    if isinstance(event, EncounterNotice):
        return f"notice-{event.kind.value}"
    return "review-decided"


def event_id(event: DomainEvent) -> str:
    """The event's own identity: MSH-10 of an ADT message, the message id of the others."""
    return event.message_control_id if isinstance(event, AdtEvent) else event.message_id


def apply_domain_event(
    event: DomainEvent,
    state: PatientState,
    rules: DischargeRules,
    *,
    now: datetime,
    merged: Sequence[PatientState] = (),
    payer: PayerExchange | None = None,
) -> Outcome:
    """Apply any domain event to the state filed under its first key (see :func:`event_keys`).

    ``payer`` is the payer exchange spec a notice is applied under (the bundled one if None);
    ``merged`` only concerns an A40.
    """
    if isinstance(event, AdtEvent):
        return apply_event(event, state, rules, now=now, merged=merged)
    if isinstance(event, EncounterNotice):
        return apply_notice(event, state, payer or default_payer_exchange(), now=now)
    return apply_decision(event, state, now=now)
