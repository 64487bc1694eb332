"""Clinical order: a visit's events take effect by event time, not by arrival. Pure.

Every event applied to a visit is kept in the visit's log (:class:`~.state.LoggedEvent`), ordered
by event time (EVN-6, else EVN-2, else MSH-7), a cancel after what it cancels at the same time,
and events of equal time in arrival order (control ids carry no order). An event in order is
applied to the current state and appended. An event older than the newest of its visit is
*stale*: it is put where it belongs in the log and the visit is re-derived, folding the log in
that order from the state before the visit's first event, each event followed by what follows
every event in :func:`~cm_fhir.workflow.engine.apply_event` (death, outcomes, patient), so the
fold gives what in-order delivery gives. Ids are deterministic, so the re-derivation yields the
same resources wherever the order did not matter.

What the re-derivation changes is merged into the current cases three ways, against the fold of
the old log: a field, task, referral or goal that someone else changed since (the API, the
closing tick) keeps their value; the rest takes the re-derived value. A stale event that cannot be
re-derived (the log lost its start: the visit is older than this version or longer than
``LOG_LIMIT``, or settled) is recorded and changes nothing. Both are traced with ``stale-event``.
A case the new order does not make leaves the state (:func:`retire`), as after a merge.
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from pydantic import ValidationError

from cm_fhir.domain.case import Case
from cm_fhir.domain.codes import CaseStatus
from cm_fhir.errors import DomainError
from cm_fhir.hl7v2.events import AdtEvent
from cm_fhir.workflow import facts
from cm_fhir.workflow.actions import Step
from cm_fhir.workflow.lifecycle import is_death
from cm_fhir.workflow.state import (
    LOG_LIMIT,
    Flag,
    LoggedEvent,
    PatientState,
    VisitMemory,
    latest,
)

__all__ = [
    "CANCELS",
    "Arrival",
    "Handler",
    "append",
    "applied",
    "case_ids",
    "fold",
    "is_stale",
    "logged_events",
    "merge_case",
    "rederive",
    "retire",
]

Handler = Callable[[Step, VisitMemory], VisitMemory]

#: Cancel events: at the same time as the event they cancel, they come after it.
CANCELS = frozenset({"A11", "A12", "A13", "A25", "A27", "A38"})

#: Case fields that change together (a status and its history).
_STATUS = ("status", "status_history", "closed")
#: Case fields holding items with ids, merged item by item.
_ITEMS = ("tasks", "referrals", "goals", "assessments")


@dataclass(frozen=True, slots=True)
class Arrival:
    """An event about to be logged: when it happened, its JSON and the digest of that JSON."""

    event: AdtEvent
    at: datetime
    text: str
    digest: str

    @property
    def order(self) -> tuple[datetime, int]:
        return (self.at, _rank(self.event))


def _rank(event: AdtEvent) -> int:
    return 1 if event.event in CANCELS else 0


def append(visit: VisitMemory, new: Arrival, *, fresh: bool) -> VisitMemory:
    """The visit with ``new`` at the end of its log (``fresh``: the event created the visit)."""
    basis = visit.log_basis
    update: dict[str, object] = {}
    if basis is None:
        basis = _deflate(new.text.encode(), b"")
        update["log_basis"] = basis
    logged = LoggedEvent.model_construct(  # every value is already valid
        at=new.at,
        rank=_rank(new.event),
        message_control_id=new.event.message_control_id,
        digest=new.digest,
        payload=_deflate(new.text.encode(), _dictionary(basis)),
    )
    log = (*visit.log, logged)
    complete = visit.log_complete and (fresh or bool(visit.log))  # older visits had no log
    if len(log) > LOG_LIMIT:
        log, complete = log[-LOG_LIMIT:], False
    return visit.model_copy(update={**update, "log": log, "log_complete": complete})


def logged_events(visit: VisitMemory) -> list[Arrival]:
    """The visit's logged events, in order, read back."""
    if visit.log_basis is None:
        return []
    zdict = _dictionary(visit.log_basis)
    found = []
    for item in visit.log:
        text = _inflate(item.payload, zdict)
        found.append(Arrival(AdtEvent.model_validate_json(text), item.at, text, item.digest))
    return found


def applied(visit: VisitMemory | None, control_id: str, digest: str) -> tuple[bool, bool]:
    """Whether the visit's log holds this message (same control id and content), and whether it
    holds another message under the same control id."""
    if visit is None:
        return False, False
    same = reused = False
    for item in visit.log:
        if item.message_control_id == control_id:
            if item.digest == digest:
                same = True
            elif item.digest:  # entries logged before digests were kept say nothing
                reused = True
    return same, reused


def _deflate(data: bytes, zdict: bytes) -> str:
    packer = zlib.compressobj(1, zdict=zdict) if zdict else zlib.compressobj(1)
    return base64.b64encode(packer.compress(data) + packer.flush()).decode("ascii")


def _inflate(payload: str, zdict: bytes) -> str:
    unpacker = zlib.decompressobj(zdict=zdict) if zdict else zlib.decompressobj()
    return (unpacker.decompress(base64.b64decode(payload)) + unpacker.flush()).decode()


@lru_cache(maxsize=1024)
def _dictionary(basis: str) -> bytes:
    """The deflate dictionary of a log: its first event's JSON."""
    return _inflate(basis, b"").encode()


def rederive(
    step: Step,
    visit: VisitMemory,
    new: Arrival,
    handlers: Mapping[str, Handler],
    *,
    after: Callable[[Step], None] = lambda step: None,
) -> bool:
    """Apply a stale event: re-derive its visit, and the patient's other visits with events after
    it (a discharge counts for readmission screening), with the event in its place. True when the
    event was folded in its place (``after`` ran for it there); False when it was applied as it
    came or not at all (``after`` is the caller's: a death stays final whenever it arrives)."""
    rule = f"event.{new.event.event}"
    own_stale = bool(visit.log) and new.order < visit.log[-1].order
    if not visit.log_complete:
        if own_stale:
            step.note(rule, "stale-not-applied", visit.case_id, None, Flag.STALE_EVENT)
            step.put_visit(visit)
        else:  # late only against other visits: applied as it comes
            fresh = visit.key not in step.visits
            step.put_visit(append(handlers[new.event.event](step, visit), new, fresh=fresh))
        return False
    group = _group(step, visit, new)
    old = [(k, a) for k, v in group.items() for a in logged_events(v)]
    events = sorted([*old, (visit.key, new)], key=lambda e: e[1].order)  # stable: ties keep
    old.sort(key=lambda e: e[1].order)  # arrival order
    try:
        before = fold(step, group, old, handlers, after)
        folded = fold(step, group, events, handlers, after)
    except (DomainError, ValidationError):
        # This order breaks a domain rule: keep the visits as they are and say so.
        flags = (Flag.STALE_EVENT, Flag.REORDER_CONFLICT)
        step.note(rule, "stale-not-applied", visit.case_id, None, *flags)
        step.put_visit(visit)
        return False
    step.note(rule, "stale-event", visit.case_id, None, Flag.STALE_EVENT)
    ids: set[str] = set()
    for key, current in group.items():
        ids |= case_ids(current) | case_ids(before.visits[key]) | case_ids(folded.visits[key])
    for case_id in sorted(ids):
        merge_case(step, case_id, before.cases.get(case_id), folded.cases.get(case_id))
    for key in group:
        step.put_visit(folded.visits[key])
    step.last_discharge = folded.last_discharge
    step.deceased = folded.deceased
    step.patient = folded.patient  # as named by the newest event
    return True


def is_stale(step: Step, visit: VisitMemory, new: Arrival) -> bool:
    """Whether ``new`` is older than the newest event of its visit or of another of the
    patient's visits (whose screening may depend on it)."""
    if visit.log and new.order < visit.log[-1].order:
        return True
    return any(_after(v, new) for k, v in step.visits.items() if k != visit.key)


def _group(step: Step, visit: VisitMemory, new: Arrival) -> dict[str, VisitMemory]:
    """The visits folded again with ``new``: its own, and every visit with a complete log that
    has events after the earliest event the fold replays (their discharges count in screening)
    or was ever discharged (its outcome counts the admissions after its discharge); for a death,
    or once the patient is known to have died, every visit with a complete log (the death ends
    them all, and is found again in its place whichever visit reported it)."""
    group = {visit.key: visit}
    start = min([new.order, *(e.order for e in visit.log[:1])])
    died = step.deceased is not None or is_death(new.event)
    while True:
        more = {
            k: v
            for k, v in step.visits.items()
            if k not in group
            and v.log_complete
            and v.log
            and (died or v.discharges > 0 or start < v.log[-1].order)
        }
        if not more:
            return group
        group.update(more)
        start = min([start, *(v.log[0].order for v in more.values())])


def _after(visit: VisitMemory, new: Arrival) -> bool:
    return bool(visit.log) and new.order < visit.log[-1].order


def case_ids(visit: VisitMemory) -> set[str]:
    ids = {e.case_id for e in visit.effects}
    return ids | {visit.case_id} if visit.case_id is not None else ids


def fold(
    step: Step,
    group: Mapping[str, VisitMemory],
    events: list[tuple[str, Arrival]],
    handlers: Mapping[str, Handler],
    after: Callable[[Step], None],
    own: set[str] | None = None,
) -> Step:
    """The patient's state after applying ``events`` (each to its visit of ``group``) in order,
    from before those visits began; the patient's other visits and cases stay as they are.

    ``own``: the ids of the cases the fold replaces (default: those of the group's visits).
    """
    if own is None:
        own = set().union(*(case_ids(v) for v in group.values()))
    others = [v for key, v in step.visits.items() if key not in group]
    start = PatientState(
        patient_keys=tuple(step.keys),
        patient=step.patient,
        cases=tuple(c for c in step.cases.values() if c.id not in own),
        visits=tuple(others),
        last_discharge=latest([v.discharge_time for v in others]),
        # a death among these events is found again; one reported elsewhere stands
        deceased=None if any(is_death(a.event) for _, a in events) else step.deceased,
    )
    folding = Step(start, step.rules, step.now)
    # A visit belongs to the patient its first event names (in any order of arrival).
    first: dict[str, str] = {}
    for key, item in events:
        if key not in first:
            named = facts.patient_ref(item.event.patient.identifiers, step.rules)
            first[key] = facts.patient_key(named)
    fresh = {
        key: VisitMemory(
            visit_number=v.visit_number,
            visit_authority=v.visit_authority,
            patient_key=first.get(key, v.patient_key),
        )
        for key, v in group.items()
    }
    for key, item in events:
        # As between two steps: the latest discharge of any visit (see Step.state).
        folding.last_discharge = latest([v.discharge_time for v in folding.visits.values()])
        folding.begin(item.event, item.at)
        named = facts.patient_ref(item.event.patient.identifiers, step.rules)
        folding.patient = facts.current_patient(named, step.keys, step.patient)
        handler = handlers.get(item.event.event)
        memory = folding.visits.get(key) or fresh[key]
        if handler is not None:
            memory = handler(folding, memory)
        folding.put_visit(append(memory, item, fresh=True))
        after(folding)
    for key, memory in fresh.items():
        folding.visits.setdefault(key, memory)
    return folding


def retire(step: Step, case: Case, rule: str, *flags: Flag) -> None:
    """A case the new order does not make: out of the state, as if it never was; a live one is
    first marked entered-in-error with its work and sent once more, so that no receiver keeps a
    case that in-order delivery would not have made."""
    if case.is_final:
        del step.cases[case.id]
        step.note(rule, "case-superseded", case.id, None, *flags)
        return
    tasks = tuple(t.id for t in case.tasks)
    referrals = tuple(r.id for r in case.referrals)
    case = step.withdraw(case, tasks, referrals, "error", rule)
    case = step.move(case, CaseStatus.ENTERED_IN_ERROR, rule)
    step.cases.pop(case.id, None)
    step.retired_cases.append(case)
    step.note(rule, "duplicate-case-voided", case.id, None, *flags)


def merge_case(step: Step, case_id: str, base: Case | None, theirs: Case | None) -> None:
    """Bring the re-derived case into the current one, keeping what others changed."""
    ours = step.cases.get(case_id)
    if ours is None:
        if theirs is not None:
            step.cases[case_id] = theirs
            step.note("ordering", "case-rederived", case_id)
        return
    if theirs is None:
        if base is not None:  # the old order made it, the new one does not
            retire(step, ours, "ordering", Flag.REORDER_CONFLICT)
        return
    if base is None:
        # The new order makes a case the old one did not, and it is there already: kept.
        step.note("ordering", "case-kept", case_id, None, Flag.REORDER_CONFLICT)
        return
    try:
        merged = merge3(base, ours, theirs)
    except (ValidationError, DomainError):
        step.note("ordering", "case-kept", case_id, None, Flag.REORDER_CONFLICT)
        return
    if merged != ours:
        step.cases[case_id] = merged
        step.note("ordering", "case-rederived", case_id)


def merge3(base: Case, ours: Case, theirs: Case) -> Case:
    """``theirs`` (re-derived) where ``ours`` (current) still equals ``base`` (the old fold).

    Per field; tasks, referrals, goals and assessments per item (an item is taken whole); status,
    status history and closing time together. The result is validated as a case.
    """
    if ours == base:
        return theirs
    if theirs == base:
        return ours
    values: dict[str, Any] = {}
    for name in type(ours).model_fields:
        b, o, t = getattr(base, name), getattr(ours, name), getattr(theirs, name)
        if name in _ITEMS:
            values[name] = _merge_items(b, o, t)
        elif name not in _STATUS:
            values[name] = t if o == b else o
    status_source = theirs if all(getattr(ours, n) == getattr(base, n) for n in _STATUS) else ours
    values.update({n: getattr(status_source, n) for n in _STATUS})
    return Case.model_validate(values)


def _merge_items(
    base: tuple[Any, ...], ours: tuple[Any, ...], theirs: tuple[Any, ...]
) -> tuple[Any, ...]:
    old = {i.id: i for i in base}
    mine = {i.id: i for i in ours}
    out = []
    for item in theirs:
        current = mine.get(item.id)
        out.append(item if current is None or current == old.get(item.id) else current)
    kept = {i.id for i in theirs}
    # Items the new order does not make go, unless someone else added or changed them.
    out += [i for i in ours if i.id not in kept and old.get(i.id) != i]
    return tuple(out)
