"""Domain events other than ADT: what the workflow learns from payers, providers and the API. Pure.

The workflow takes events from any source; parsing stays at the edges. An HL7v2 ADT message is
read into :class:`~cm_fhir.hl7v2.events.AdtEvent` (the union of all kinds is
:data:`cm_fhir.workflow.events.DomainEvent`); the kinds here carry no wire format at all:

- :class:`EncounterNotice`: a stay's admission, transfer or discharge as a notification told it
  (a Da Vinci Unsolicited Notification, read by :mod:`cm_fhir.fhir.notification`).
- :class:`ReviewDecided`: a payer's decision on a utilization review (a PAS ClaimResponse read by
  the requester, or a reviewer's decision through the API).

Each event names itself (``message_id``, with its ``source``): the workflow uses that in the
trace and to recognise an event it has already applied.
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Literal

from pydantic import Field

from cm_fhir.domain.codes import LevelOfCare, ReviewDecision
from cm_fhir.domain.common import DomainModel, Identifier, Instant, PartyRef, PatientRef, Period

__all__ = ["EncounterNotice", "NoticeKind", "ReviewDecided"]


class NoticeKind(StrEnum):
    """What happened to the stay a notice is about."""

    ADMIT = "admit"
    TRANSFER = "transfer"
    DISCHARGE = "discharge"


class EncounterNotice(DomainModel):
    """An admission, transfer or discharge of a member's stay, as a notification told it."""

    kind_of_event: Literal["encounter-notice"] = "encounter-notice"
    message_id: str = Field(min_length=1, max_length=199)
    """The notification's identity as its sender gave it (Bundle identifier or MessageHeader id)."""
    source: str | None = Field(default=None, max_length=255)
    """Who sent it (the MessageHeader source endpoint), for the trace."""
    kind: NoticeKind
    at: Instant
    """When it happened: the admission or discharge time, else when the notice was sent."""
    patient: PatientRef
    encounter: Identifier
    """The stay's business identifier (the hospital's visit number)."""
    admitted: Instant | None = None
    discharged: Instant | None = None
    encounter_class: str | None = Field(default=None, max_length=64)
    """The encounter class code (IMP, EMER, OBSENC...), as sent."""
    location: str | None = Field(default=None, max_length=255)
    """Where the member is (the last location's name or identifier), as sent."""
    facility: PartyRef | None = None
    """The hospital (the Encounter's service provider, else the notice's sender)."""
    payer: PartyRef | None = None
    member_id: str | None = Field(default=None, max_length=100)


class ReviewDecided(DomainModel):
    """A payer's decision on a utilization review, whatever carried it."""

    kind_of_event: Literal["review-decided"] = "review-decided"
    message_id: str = Field(min_length=1, max_length=199)
    """The decision's identity (the ClaimResponse identifier and version, or the API request)."""
    source: str | None = Field(default=None, max_length=255)
    patient: PatientRef
    request_identifier: Identifier
    """The business identifier of the request decided (the PAS Claim identifier)."""
    decision: ReviewDecision
    at: Instant
    """When the payer decided (or, when it does not say, when the decision was received)."""
    authorized_quantity: int | None = Field(default=None, ge=0, le=366)
    authorized_level_of_care: LevelOfCare | None = None
    authorized_period: Period | None = None
    authorization_number: str | None = Field(default=None, max_length=100)
    next_review: date | None = None
    reason: str | None = Field(default=None, max_length=2_000)
    reviewer: PartyRef | None = None
