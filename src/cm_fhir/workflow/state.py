"""What the discharge-planning workflow remembers about a patient, and what one step returns. Pure.

:class:`PatientState` is a frozen, JSON-serialisable document the store keeps per patient: the
patient keys, the cases (the domain truth) and, separately, per-visit workflow memory
(:class:`VisitMemory`): the visit's identity (number, assigning authority, the patient it was
first seen for), what the visit looks like now, its live transfers (:class:`TransferFrame`, which
A12 matches), one :class:`EventEffect` per triggering event naming exactly the task and referral
ids it created, so A11 and A13 undo exactly what they cancel, and the visit's applied events in
event-time order (:class:`LoggedEvent`, with a digest of each message's content), from which a
late event or a merge re-derives the visit and by which a resent message is recognised.
:class:`Outcome` is the result of one step: the new state, the changed cases, the trace, and the
patient keys the caller must hold locked.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from cm_fhir.domain.case import Case
from cm_fhir.domain.common import Instant, LocalId, PatientRef
from cm_fhir.domain.referral import DischargePlan

__all__ = [
    "LOG_LIMIT",
    "EffectKind",
    "EventEffect",
    "Flag",
    "LoggedEvent",
    "Outcome",
    "PatientState",
    "ProcessedMessage",
    "TraceEntry",
    "TransferFrame",
    "VisitMemory",
    "visit_key",
]

#: How many events a visit's log keeps; a visit with more cannot be re-derived (see ordering).
LOG_LIMIT = 200


class _State(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class EffectKind(StrEnum):
    """Which step of the workflow an event triggered."""

    PRE_ADMISSION = "pre-admission"
    ADMISSION = "admission"
    PENDING_DISCHARGE = "pending-discharge"
    DISCHARGE = "discharge"
    DEATH = "death"


class EventEffect(_State):
    """What one triggering event did to a case, so that a cancel event can undo exactly that."""

    kind: EffectKind
    message_control_id: str
    sequence: int = Field(ge=1, description="The discharge sequence it belongs to")
    case_id: LocalId
    opened_case: bool = False
    task_ids: tuple[LocalId, ...] = ()
    referral_ids: tuple[LocalId, ...] = ()
    withdrawn_task_ids: tuple[LocalId, ...] = Field(
        default=(), description="Earlier work this event cancelled (A03: open planning tasks)"
    )
    plan_before: DischargePlan | None = Field(
        default=None, description="The discharge plan before a discharge changed it"
    )
    last_discharge_before: Instant | None = None
    case_before: Case | None = Field(
        default=None, description="DEATH: the case as it was before the death ended it (A13)"
    )
    deceased_before: Instant | None = Field(
        default=None, description="DEATH: when the patient was known to have died before"
    )
    undone: bool = False


class TransferFrame(_State):
    """One live A02: where the patient was and went, when, and which tasks moved with it."""

    message_control_id: str
    at: Instant | None = Field(default=None, description="The transfer's event time")
    location: str | None = Field(default=None, description="The unit before (PV1-3.1)")
    place_before: str | None = Field(default=None, description="Unit^room^bed before")
    place: str | None = Field(default=None, description="Unit^room^bed after")
    team: str
    moved_task_ids: tuple[LocalId, ...] = ()


class LoggedEvent(_State):
    """One event applied to a visit, with the time it is ordered by.

    The event itself is only needed to re-derive the visit, while the state document is written
    after every batch: ``payload`` is its JSON, deflated against the visit's first event
    (:attr:`VisitMemory.log_basis`) and base64-encoded (:mod:`cm_fhir.workflow.ordering`).
    """

    at: Instant = Field(description="EVN-6, else EVN-2, else MSH-7, else when it was processed")
    rank: int = Field(default=0, description="Breaks a tie of times: a cancel after what it undoes")
    message_control_id: str
    digest: str = Field(default="", description="The message's content digest (duplicates)")
    payload: str

    @property
    def order(self) -> tuple[datetime, int]:
        """What the log is sorted by; equal orders keep their arrival order."""
        return (self.at, self.rank)


class VisitMemory(_State):
    """The workflow's view of one visit, kept apart from the case itself.

    A visit is its number qualified by its assigning authority (:attr:`key`); ``patient_key`` is
    the patient it was first seen for. Both go into the ids of its cases.
    """

    visit_number: str
    visit_authority: str | None = Field(default=None, description="PV1-19.4, else MSH-4")
    patient_key: str | None = Field(default=None, description="The patient's key at first sight")
    case_id: LocalId | None = Field(default=None, description="The case of this visit, if any")
    admissions: int = Field(default=0, ge=0, description="Cases opened for this visit so far")
    patient_class: str | None = None
    location: str | None = None
    place: str | None = Field(default=None, description="Unit^room^bed, as the last move named it")
    hospital_service: str | None = None
    team: str | None = None
    admit_time: Instant | None = None
    discharge_time: Instant | None = None
    expected_discharge: date | None = None
    discharges: int = Field(default=0, ge=0, description="A03s applied so far (never decreases)")
    transfers: tuple[TransferFrame, ...] = ()
    effects: tuple[EventEffect, ...] = ()
    log: tuple[LoggedEvent, ...] = Field(
        default=(), description="The visit's applied events, in event-time order"
    )
    log_basis: str | None = Field(
        default=None, description="The first logged event, deflated: the log's dictionary"
    )
    log_complete: bool = Field(
        default=True, description="False once the log lost its oldest events (see LOG_LIMIT)"
    )

    @property
    def key(self) -> str:
        """``authority|number``: the visit's identity within the patient's state."""
        return visit_key(self.visit_number, self.visit_authority)

    @property
    def discharged(self) -> bool:
        return self.discharge_time is not None

    def live_effects(self, kind: EffectKind) -> list[EventEffect]:
        return [e for e in self.effects if e.kind == kind and not e.undone]


class ProcessedMessage(_State):
    """A message applied by an earlier version, which remembered the last 500 per patient; kept
    only so that states stored then still recognise those messages (see ``PatientState``)."""

    message_control_id: str
    digest: str


class PatientState(_State):
    """Everything the workflow knows about one patient; ``PatientState()`` is a new patient."""

    patient_keys: tuple[str, ...] = Field(
        default=(), description="The patient's keys, the current one first, merged ones after"
    )
    patient: PatientRef | None = None
    cases: tuple[Case, ...] = ()
    visits: tuple[VisitMemory, ...] = ()
    last_discharge: Instant | None = Field(
        default=None, description="The latest discharge of any visit, for readmission screening"
    )
    processed: tuple[ProcessedMessage, ...] = Field(
        default=(),
        description="Legacy: messages applied before visit logs held digests; never added to",
    )
    deceased: Instant | None = Field(
        default=None, description="When the patient died (PV1-36 expired or PID-30), if known"
    )

    def case(self, case_id: str) -> Case | None:
        return next((c for c in self.cases if c.id == case_id), None)

    def visit(self, visit_number: str, authority: str | None = None) -> VisitMemory | None:
        """The visit with this number (and authority, when given)."""
        return next(
            (
                v
                for v in self.visits
                if v.visit_number == visit_number
                and (authority is None or v.visit_authority == authority)
            ),
            None,
        )


class Flag(StrEnum):
    """Things a person should look at; they appear in the trace, never silently dropped."""

    DUPLICATE_MESSAGE = "duplicate-message"
    CONTROL_ID_REUSED = "control-id-reused"
    NO_VISIT_NUMBER = "no-visit-number"
    UNMAPPED_DISPOSITION = "unmapped-disposition"
    NO_DISPOSITION = "no-disposition"
    UNMAPPED_PATIENT_CLASS = "unmapped-patient-class"
    NOT_QUALIFIED = "not-qualified"
    NOTHING_TO_UNDO = "nothing-to-undo"
    CASE_FINAL = "case-final"
    TASK_DONE = "task-done"
    NO_RULE = "no-rule"
    NO_PRIOR_STATE = "no-prior-state"
    STALE_EVENT = "stale-event"
    REORDER_CONFLICT = "reorder-conflict"
    PATIENT_DECEASED = "patient-deceased"
    NO_LONGER_QUALIFIED = "no-longer-qualified"
    PRE_DISCHARGE_WORK_OPEN = "pre-discharge-work-open"
    LATE_REFERRAL = "late-referral"
    UNKNOWN_REVIEW = "unknown-review"
    DECISION_CONFLICT = "decision-conflict"


class TraceEntry(_State):
    """One thing the workflow did or noticed, with the message and the rule that caused it."""

    message_control_id: str | None = None
    event: str | None = None
    rule: str = Field(description="Key path in discharge-rules.yaml, or the event's own step")
    action: str
    case_id: LocalId | None = None
    target: str | None = Field(default=None, description="The task, referral or plan id")
    flags: tuple[Flag, ...] = ()


class Outcome(_State):
    """The result of one workflow step."""

    state: PatientState
    changed_cases: tuple[Case, ...] = ()
    trace: tuple[TraceEntry, ...] = ()
    lock_keys: tuple[str, ...] = Field(
        default=(), description="Patient keys the caller must hold locked while committing"
    )
    retired_keys: tuple[str, ...] = Field(
        default=(), description="Keys merged into this patient (A40); their state now lives here"
    )

    @property
    def flags(self) -> set[Flag]:
        return {flag for entry in self.trace for flag in entry.flags}


def visit_key(visit_number: str, authority: str | None) -> str:
    """The key of a visit in a patient's state: ``authority|number`` (``|number`` without one)."""
    return f"{authority or ''}|{visit_number}"


def changed_cases(before: PatientState, after: PatientState) -> tuple[Case, ...]:
    """The cases of ``after`` that are new or differ from ``before``."""
    old = {c.id: c for c in before.cases}
    return tuple(c for c in after.cases if (found := old.get(c.id)) is not c and found != c)


def latest(values: list[datetime | None]) -> datetime | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None
