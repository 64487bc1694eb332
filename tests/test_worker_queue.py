"""The worker's queue rules: poison messages, dead letters, parse failures, ignored messages."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from cm_fhir.hl7v2.events import AdtEvent
from cm_fhir.store.inbox import NewMessage, store_messages
from cm_fhir.store.queue import replay
from cm_fhir.worker import replay_dead_letter
from cm_fhir.workflow import Outcome, PatientState, apply_event
from worker_fixtures import cases, inbox_messages, ingest, patient_states, rows, settle_worker
from workflow_messages import Visit, hours

SICK = Visit(mrn="MRN-POISON", visit="VP1")
WELL = Visit(mrn="MRN-WELL", visit="VW1")


class Poison:
    """``apply_event``, except that it raises for one control id while ``armed``."""

    def __init__(self, control_id: str) -> None:
        self.control_id = control_id
        self.armed = True
        self.calls = 0

    def __call__(self, event: AdtEvent, state: PatientState, *args: Any, **kw: Any) -> Outcome:
        if self.armed and event.message_control_id == self.control_id:
            self.calls += 1
            raise RuntimeError(f"boom for {event.patient.identifiers[0].value}")  # PHI inside
        return apply_event(event, state, *args, **kw)


async def test_poison_message_is_dead_lettered_and_blocks_only_its_patient(
    worker_engine: AsyncEngine,
) -> None:
    await ingest(
        worker_engine,
        [
            SICK.raw("A01", "P1", hours(0)),
            WELL.raw("A01", "W1", hours(0)),
            SICK.raw("A02", "P2", hours(1), location="5NORTH"),
            WELL.raw("A02", "W2", hours(1), location="5NORTH"),
        ],
    )
    poison = Poison("P1")
    result = await settle_worker(worker_engine, max_attempts=3, apply=poison)
    assert poison.calls == 3
    assert result.dead_lettered == 1
    inbox = {r.control_id: r for r in await rows(worker_engine, inbox_messages)}
    dead = inbox["P1"]
    assert dead.state == "dead_lettered"
    assert dead.attempts == 3
    assert "RuntimeError" in dead.reason
    assert SICK.mrn not in dead.reason  # the exception text held PHI; the reason does not
    assert inbox["P2"].state == "received"
    assert inbox["P2"].reason == f"waits behind dead letter #{dead.id}"
    assert [inbox["W1"].state, inbox["W2"].state] == ["processed", "processed"]
    assert {c.patient_key.rsplit("|", 1)[1] for c in await rows(worker_engine, cases)} == {WELL.mrn}

    # a later message of the same patient waits too
    await ingest(worker_engine, [SICK.raw("A08", "P3", hours(2))])
    await settle_worker(worker_engine, apply=poison)
    assert {r.control_id: r.state for r in await rows(worker_engine, inbox_messages)}["P3"] == (
        "received"
    )

    poison.armed = False
    assert await replay_dead_letter(worker_engine, dead.id)
    assert not await replay_dead_letter(worker_engine, dead.id)  # no longer a dead letter
    await settle_worker(worker_engine, apply=poison)
    inbox = {r.control_id: r for r in await rows(worker_engine, inbox_messages)}
    assert all(r.state == "processed" for r in inbox.values())
    assert inbox["P2"].reason is None
    states = [
        PatientState.model_validate_json(r.document)
        for r in await rows(worker_engine, patient_states)
        if r.document
    ]
    sick = next(s for s in states if s.patient_keys[0].endswith(SICK.mrn))
    assert [e.message_control_id for v in sick.visits for e in v.log] == ["P1", "P2", "P3"]


async def test_failed_attempt_is_retried_and_then_succeeds(worker_engine: AsyncEngine) -> None:
    await ingest(worker_engine, [SICK.raw("A01", "P1", hours(0))])
    poison = Poison("P1")
    first = await settle_worker(worker_engine, max_attempts=5, retry_delay=3600.0, apply=poison)
    assert (first.retried, poison.calls) == (1, 1)  # retry_delay holds the second attempt back
    (row,) = await rows(worker_engine, inbox_messages)
    assert (row.state, row.attempts) == ("received", 1)
    assert row.reason.startswith("attempt 1 failed: RuntimeError")
    poison.armed = False
    await settle_worker(worker_engine, max_attempts=5, apply=poison)
    (row,) = await rows(worker_engine, inbox_messages)
    assert (row.state, row.attempts, row.reason) == ("processed", 2, None)


async def test_parse_failures_fail_and_unsupported_messages_are_ignored(
    worker_engine: AsyncEngine,
) -> None:
    broken = WELL.raw("A01", "X1", hours(0)).replace("PID|1||MRN-WELL^^^NSH^MR", "PID|1||")
    other = WELL.raw("A01", "X2", hours(0)).replace("ADT^A01", "ORU^R01")
    fine = WELL.raw("A01", "X3", hours(1))
    await ingest(worker_engine, [fine])
    # intake refuses both (AE for the PID, AR for the ORU); rows from another intake path still
    # reach the worker
    async with worker_engine.begin() as connection:
        await store_messages(
            connection,
            [
                NewMessage(broken.encode(), "1" * 64, "received", None, None, control_id="X1"),
                NewMessage(other.encode(), "0" * 64, "received", None, None, control_id="X2"),
            ],
        )
    result = await settle_worker(worker_engine)
    inbox = {r.control_id: r for r in await rows(worker_engine, inbox_messages)}
    assert inbox["X3"].state == "processed"
    assert inbox["X1"].state == "failed", inbox["X1"].reason
    assert "PID-3" in inbox["X1"].reason
    assert inbox["X2"].state == "ignored"
    assert inbox["X1"].attempts == inbox["X2"].attempts == 1  # the worker decided, not intake
    assert result.processed == 1


async def test_replay_leaves_messages_refused_at_the_door_alone(worker_engine: AsyncEngine) -> None:
    good = Visit(mrn="MRN-RPL", visit="VRPL").raw("A01", "RPL-1", hours(0))
    await ingest(worker_engine, [good, "this is not HL7 at all"])
    await settle_worker(worker_engine)
    states = {r.control_id: r.state for r in await rows(worker_engine, inbox_messages)}
    assert sorted(states.values()) == ["processed", "refused"]
    assert await replay(worker_engine) == 1  # the processed row only
    after = {r.control_id: r.state for r in await rows(worker_engine, inbox_messages)}
    assert sorted(after.values()) == ["received", "refused"]
