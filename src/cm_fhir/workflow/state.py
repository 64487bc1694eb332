"""What the discharge-planning workflow remembers about a patient, and what one step returns. Pure.

:class:`PatientState` is a frozen, JSON-serialisable document the store keeps per patient: the
patient keys, the cases (the domain truth) and, separately, per-visit workflow memory
(:class:`VisitMemory`): what the visit looks like now, the transfer stack that A12 pops, and one
:class:`EventEffect` per triggering event naming exactly the task and referral ids it created, so
A11 and A13 undo exactly what they cancel. :class:`Outcome` is the result of one step: the new
state, the changed cases, the trace, and the patient keys the caller must hold locked.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from cm_fhir.domain.case import Case
from cm_fhir.domain.common import Instant, LocalId, PatientRef
from cm_fhir.domain.referral import DischargePlan

__all__ = [
    "PROCESSED_MEMORY",
    "EffectKind",
    "EventEffect",
    "Flag",
    "Outcome",
    "PatientState",
    "ProcessedMessage",
    "TraceEntry",
    "TransferFrame",
    "VisitMemory",
]

#: How many processed messages a patient state remembers for duplicate detection.
PROCESSED_MEMORY = 500


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
    undone: bool = False


class TransferFrame(_State):
    """One A02 on the stack: where the patient was and which tasks moved with the transfer."""

    message_control_id: str
    location: str | None = None
    team: str
    moved_task_ids: tuple[LocalId, ...] = ()


class VisitMemory(_State):
    """The workflow's view of one visit (PV1-19), kept apart from the case itself."""

    visit_number: str
    case_id: LocalId | None = Field(default=None, description="The case of this visit, if any")
    admissions: int = Field(default=0, ge=0, description="Cases opened for this visit so far")
    patient_class: str | None = None
    location: str | None = None
    hospital_service: str | None = None
    team: str | None = None
    admit_time: Instant | None = None
    discharge_time: Instant | None = None
    expected_discharge: date | None = None
    discharges: int = Field(default=0, ge=0, description="A03s applied so far (never decreases)")
    transfers: tuple[TransferFrame, ...] = ()
    effects: tuple[EventEffect, ...] = ()

    @property
    def discharged(self) -> bool:
        return self.discharge_time is not None

    def live_effects(self, kind: EffectKind) -> list[EventEffect]:
        return [e for e in self.effects if e.kind == kind and not e.undone]


class ProcessedMessage(_State):
    """A message already applied: its control id and a digest of its content."""

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
    processed: tuple[ProcessedMessage, ...] = ()
    deceased: Instant | None = Field(
        default=None, description="When the patient died (PV1-36 expired or PID-30), if known"
    )

    def case(self, case_id: str) -> Case | None:
        return next((c for c in self.cases if c.id == case_id), None)

    def visit(self, visit_number: str) -> VisitMemory | None:
        return next((v for v in self.visits if v.visit_number == visit_number), None)


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
    PATIENT_DECEASED = "patient-deceased"
    NO_LONGER_QUALIFIED = "no-longer-qualified"
    PRE_DISCHARGE_WORK_OPEN = "pre-discharge-work-open"
    LATE_REFERRAL = "late-referral"


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


def changed_cases(before: PatientState, after: PatientState) -> tuple[Case, ...]:
    """The cases of ``after`` that are new or differ from ``before``."""
    old = {c.id: c for c in before.cases}
    return tuple(c for c in after.cases if old.get(c.id) != c)


def latest(values: list[datetime | None]) -> datetime | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None
