"""The building blocks of one workflow step: the working copy of a patient's state, and the domain
changes the rules make (open a case, add a task or referral, withdraw them, move them). Pure.

A :class:`Step` holds the cases and visit memory while one event is applied, records every change
in the trace with the message and the rule that caused it, and hands back a new
:class:`~cm_fhir.workflow.state.PatientState`. Every case change goes through
:func:`revalidated`, so no rule can leave a case that breaks a domain invariant.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from cm_fhir.domain.case import Case, StatusChange
from cm_fhir.domain.codes import CaseStatus, PlanStatus, TaskStatus
from cm_fhir.domain.common import PartyRef, PatientRef
from cm_fhir.domain.referral import Referral
from cm_fhir.domain.task import OPEN_TASK_STATUSES, UNTOUCHED_TASK_STATUSES, Task
from cm_fhir.hl7v2.events import AdtEvent, VisitIdentifier
from cm_fhir.mapping.rule_types import ReferralRule, TaskRule
from cm_fhir.mapping.rules import DischargeRules
from cm_fhir.workflow.facts import DISCHARGE_PLAN_ID, event_time, party
from cm_fhir.workflow.state import (
    Flag,
    PatientState,
    TraceEntry,
    VisitMemory,
    latest,
    visit_key,
)

__all__ = ["Step", "Withdrawal", "revalidated"]

#: How an undo treats what it withdraws: ``cancel`` always cancels; ``void`` marks what nobody
#: has acted on as entered-in-error and cancels the rest; ``error`` marks everything
#: entered-in-error (the case itself never should have existed).
Withdrawal = Literal["cancel", "void", "error"]


def revalidated(case: Case, **update: object) -> Case:
    """``case`` with ``update`` applied, re-validated as a whole."""
    return Case.model_validate({**dict(case), **update})


class Step:
    """The working copy of one patient's state while one event (or a clock tick) is applied."""

    def __init__(
        self,
        state: PatientState,
        rules: DischargeRules,
        now: datetime,
        event: AdtEvent | None = None,
    ) -> None:
        self.rules = rules
        self.now = now
        self.event: AdtEvent | None = None
        self.at = now
        self.control_id: str | None = None
        if event is not None:
            self.begin(event, event_time(event, rules, now))
        self.keys = list(state.patient_keys)
        self.patient = state.patient
        self.cases = {c.id: c for c in state.cases}
        self.visits = {v.key: v for v in state.visits}
        self.last_discharge = state.last_discharge
        self.deceased = state.deceased
        self.processed = list(state.processed)  # legacy entries only (see PatientState)
        self.trace: list[TraceEntry] = []
        #: Cases that left the state in this step (a merge's duplicates): sent once more.
        self.retired_cases: list[Case] = []

    def begin(self, event: AdtEvent, at: datetime) -> None:
        """Work on ``event``, which happened ``at``, next (re-deriving a visit replays its log)."""
        self.event = event
        self.at = at
        self.control_id = event.message_control_id

    # -- bookkeeping ---------------------------------------------------------------------------

    def note(
        self,
        rule: str,
        action: str,
        case_id: str | None = None,
        target: str | None = None,
        *flags: Flag,
    ) -> None:
        self.trace.append(
            TraceEntry.model_construct(  # plain strings and flags: valid by construction
                message_control_id=self.control_id,
                event=self.event.event if self.event is not None else None,
                rule=rule,
                action=action,
                case_id=case_id,
                target=target,
                flags=flags,
            )
        )

    def state(self) -> PatientState:
        """The new state: cases by id and visits by key (the same whatever the arrival order),
        and the latest discharge of any visit. A settled visit's log is dropped."""
        visits = [self._settled(self.visits[key]) for key in sorted(self.visits)]
        # Every part is a validated model already: no need to validate them again.
        return PatientState.model_construct(
            patient_keys=tuple(self.keys),
            patient=self.patient,
            cases=tuple(self.cases[case_id] for case_id in sorted(self.cases)),
            visits=tuple(visits),
            last_discharge=latest([v.discharge_time for v in visits]),
            processed=tuple(self.processed),
            deceased=self.deceased,
        )

    def _settled(self, visit: VisitMemory) -> VisitMemory:
        """The visit without its log once late events can no longer matter: it is done (its case
        is closed, or it has no case and was discharged) and ``discharge.close_after`` has passed
        since its newest event (or its discharge), by the time of the event applied (or of the
        clock). Until then a late event is still applied in its place."""
        if not (visit.log and visit.log_complete):
            return visit
        case = self.cases.get(visit.case_id) if visit.case_id is not None else None
        done = case.status == CaseStatus.CLOSED if case is not None else visit.discharged
        if not done:
            return visit
        active = latest([visit.log[-1].at, visit.discharge_time])
        if active is None or self.at < active + self.rules.discharge.close_after:
            return visit
        # The newest entry stays, without its event, to tell late events from new ones.
        last = visit.log[-1].model_copy(update={"payload": ""})
        return visit.model_copy(update={"log": (last,), "log_basis": None, "log_complete": False})

    def visit(self, identity: VisitIdentifier, patient_key: str) -> VisitMemory:
        """The visit's memory; for a visit not seen yet, a new one tied to ``patient_key``: the
        patient the event names, even one merged into this patient already (in event-time order
        the visit was first seen under that patient's own record)."""
        found = self.visits.get(visit_key(identity.value, identity.assigning_authority))
        if found is not None:
            return found
        return VisitMemory(
            visit_number=identity.value,
            visit_authority=identity.assigning_authority,
            patient_key=patient_key,
        )

    def put_visit(self, visit: VisitMemory) -> None:
        self.visits[visit.key] = visit

    def open_case_of(self, visit: VisitMemory) -> Case | None:
        case = self.cases.get(visit.case_id) if visit.case_id is not None else None
        return case if case is not None and not case.is_final else None

    # -- case changes --------------------------------------------------------------------------

    def open_case(
        self, case_id: str, patient: PatientRef, status: CaseStatus, **fields: object
    ) -> Case:
        case = Case.model_validate(
            {
                "id": case_id,
                "patient": patient,
                "programme": self.rules.programme,
                "status": status,
                "status_history": (StatusChange(status=status, start=self.at),),
                **fields,
            }
        )
        self.cases[case.id] = case
        return case

    def rewind(self, case: Case, entries: int, rule: str) -> Case:
        """Undo the status changes after the first ``entries`` of the case's history, as if they
        never happened (the event that made them was cancelled)."""
        if entries < 1 or entries >= len(case.status_history):
            return case
        kept = case.status_history[:entries]
        last = kept[-1].model_copy(update={"end": None})
        changed = revalidated(
            case, status=last.status, status_history=(*kept[:-1], last), closed=None
        )
        self.cases[case.id] = changed
        self.note(rule, f"case-{last.status.value}-again", case.id)
        return changed

    def move(self, case: Case, target: CaseStatus, rule: str) -> Case:
        """Move ``case`` to ``target`` no earlier than its current status began."""
        if case.status == target:
            return case
        when = max(self.at, case.status_history[-1].start)
        changed = case.transition(target, when)
        self.cases[case.id] = changed
        self.note(rule, f"case-{target.value}", case.id)
        return changed

    def add_task(
        self,
        case: Case,
        rule_path: str,
        rule: TaskRule,
        task_id: str,
        owner: PartyRef,
        due: datetime | None = None,
    ) -> tuple[Case, bool]:
        """Add a task unless the case already has one with this id (no work is duplicated).

        ``due`` overrides the rule's due date (counted from the event time).
        """
        if any(t.id == task_id for t in case.tasks):
            return case, False
        plan = DISCHARGE_PLAN_ID if case.discharge_plan is not None else None
        task = Task(
            id=task_id,
            kind=rule.kind,
            description=rule.description,
            priority=rule.priority,
            owner=owner,
            authored_on=self.at,
            not_before=self.at + rule.not_before if rule.not_before is not None else None,
            due=due or self.at + rule.due,
            care_plan=plan,
        )
        case = case.add_task(task)
        self.cases[case.id] = case
        self.note(rule_path, "task-created", case.id, task_id)
        return case, True

    def add_referral(
        self,
        case: Case,
        rule_path: str,
        rule: ReferralRule,
        referral_id: str,
        requester: PartyRef,
        due: datetime | None = None,
    ) -> tuple[Case, bool]:
        if any(r.id == referral_id for r in case.referrals):
            return case, False
        referral = Referral(
            id=referral_id,
            type=rule.type,
            priority=rule.priority,
            performer=party(rule.performer),
            requester=requester,
            authored_on=self.at,
            due=due or self.at + rule.due,
            reasons=case.reasons,
            note=rule.note,
            care_plan=DISCHARGE_PLAN_ID if case.discharge_plan is not None else None,
        )
        case = case.add_referral(referral)
        self.cases[case.id] = case
        self.note(rule_path, "referral-created", case.id, referral_id)
        return case, True

    def withdraw(
        self,
        case: Case,
        task_ids: tuple[str, ...],
        referral_ids: tuple[str, ...],
        how: Withdrawal,
        rule: str,
        reason: str | None = None,
    ) -> Case:
        """Cancel (or void) the given tasks and referrals; finished work is left as it is
        (``error`` marks finished work entered-in-error too). ``reason`` becomes the business
        status of what is withdrawn."""
        tasks = []
        for task in case.tasks:
            erase = how == "error" and task.status != TaskStatus.ENTERED_IN_ERROR
            if task.id in task_ids and (task.is_open or erase):
                target = _withdrawn_task_status(task.status, how)
                self.note(rule, f"task-{target.value}", case.id, task.id)
                task = task.transition(target, business_status=reason)
            elif task.id in task_ids:
                self.note(rule, "task-kept", case.id, task.id, Flag.TASK_DONE)
            tasks.append(task)
        referrals = []
        for ref in case.referrals:
            erase = how == "error" and ref.status != PlanStatus.ENTERED_IN_ERROR
            if ref.id in referral_ids and (ref.status in _LIVE_REFERRAL or erase):
                untouched = ref.fulfilment_status in UNTOUCHED_TASK_STATUSES
                void = erase or (how == "void" and untouched)
                status = PlanStatus.ENTERED_IN_ERROR if void else PlanStatus.REVOKED
                fulfilment = ref.fulfilment_status
                if erase or fulfilment in OPEN_TASK_STATUSES:
                    fulfilment = TaskStatus.ENTERED_IN_ERROR if void else TaskStatus.CANCELLED
                update: dict[str, object] = {"status": status, "fulfilment_status": fulfilment}
                if reason is not None:
                    update["fulfilment_business_status"] = reason
                ref = ref.model_copy(update=update)
                self.note(rule, f"referral-{status.value}", case.id, ref.id)
            referrals.append(ref)
        changed = revalidated(case, tasks=tuple(tasks), referrals=tuple(referrals))
        self.cases[case.id] = changed
        return changed

    def reassign(
        self, case: Case, old: PartyRef | None, new: PartyRef, rule: str, only: tuple[str, ...] = ()
    ) -> tuple[Case, tuple[str, ...]]:
        """Give the open tasks owned by ``old`` (or just ``only``) to ``new``; the moved ids."""
        moved: list[str] = []
        tasks = []
        for task in case.tasks:
            chosen = task.id in only if only else True
            if chosen and task.is_open and task.owner == old and task.owner != new:
                task = task.reassign(new)
                moved.append(task.id)
                self.note(rule, "task-reassigned", case.id, task.id)
            tasks.append(task)
        if not moved:
            return case, ()
        changed = revalidated(case, tasks=tuple(tasks))
        self.cases[case.id] = changed
        return changed, tuple(moved)


_LIVE_REFERRAL = frozenset({PlanStatus.DRAFT, PlanStatus.ACTIVE, PlanStatus.ON_HOLD})


def _withdrawn_task_status(status: TaskStatus, how: Withdrawal) -> TaskStatus:
    if how == "error" or (how == "void" and status in UNTOUCHED_TASK_STATUSES):
        return TaskStatus.ENTERED_IN_ERROR
    return TaskStatus.CANCELLED
