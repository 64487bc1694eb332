"""Late deliveries through the worker on SQLite and PostgreSQL: the cases in-order delivery gives.

Each feed (the short form of :mod:`feed_strategies`) arrives in the order written, one message
per batch, through the listener's intake and a real worker; the tests read back the committed
case rows, outbox Bundles and served resources. A visit whose case closed still takes a late
event in its place; a fold evaluates outcomes after every event; a visit belongs to the patient
its first event names, even when it arrives after the merge; a case the survivor opened for the
prior patient's visit is voided; a late death ends the cases it ends in order; and a case the new
order would not open (after the death, or without the discharge it was a readmission after) is
voided and sent once more, so the committed states are those of in-order delivery.
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncEngine

from cm_fhir.domain import Case, CaseStatus, ClosingReason
from cm_fhir.domain.codes import TaskStatus
from cm_fhir.workflow import PatientState
from feed_strategies import Feed
from worker_fixtures import (
    cases,
    fhir_resources,
    inbox_messages,
    ingest,
    outbox,
    patient_states,
    rows,
    settle_worker,
    trace,
)


async def delivered(engine: AsyncEngine, feed: Feed) -> dict[str, Case]:
    """Empty the worker's tables, send the feed's arrivals, run a worker dry: the case rows."""
    async with engine.begin() as connection:
        for table in (trace, outbox, fhir_resources, cases, patient_states, inbox_messages):
            await connection.execute(delete(table))
    acks = await ingest(engine, [feed.raw(m) for m in feed.arrivals])
    assert all(b"MSA|AA|" in ack for ack in acks)
    await settle_worker(engine, batch_size=1)
    assert {r.state for r in await rows(engine, inbox_messages)} == {"processed"}
    return {r.case_id: Case.model_validate_json(r.case_json) for r in await rows(engine, cases)}


async def as_in_order(engine: AsyncEngine, feed: Feed) -> dict[str, Case]:
    """The case rows of the feed delivered late, checked against in-order delivery."""
    in_order = await delivered(engine, feed.in_order())
    late = await delivered(engine, feed)
    assert late == in_order
    return late


def json_of(case: Case) -> Any:
    return case.model_dump(mode="json")


async def test_a_late_pending_discharge_reaches_a_case_closed_by_a_class_change(
    worker_engine: AsyncEngine,
) -> None:
    # Readmission (the discharge at 1) opens the case at 10; the ED class at 16 closes it; the A16
    # with its expected date (5) arrives last. A closed case's visit once dropped its events at
    # once, and the expected date was lost.
    feed = Feed.parse(
        "patients: N:N1/1999/S52.5/PAYER01; N6 A01 N:N1/V2 @10; N1 A03 N:N1/V2 @1;"
        " N11 A08 N:N1/V2 @16 class=E; N4 A16 N:N1/V2 @5 edd"
    )
    (case,) = (await as_in_order(worker_engine, feed)).values()
    assert case.status == CaseStatus.CLOSED
    assert case.outcome is not None
    assert case.outcome.closing_reason == ClosingReason.NOT_ELIGIBLE
    assert case.discharge_plan is not None
    assert str(case.discharge_plan.expected_discharge) == "2024-03-07"


async def test_a_late_readmission_leaves_the_outcome_in_order_delivery_gives(
    worker_engine: AsyncEngine,
) -> None:
    # V2's admission (3) falls after V1's first discharge (2) but before its last (7): in order
    # the readmission is counted, then reset to zero by the second discharge.
    feed = Feed.parse(
        "patients: N:N1/1948/I50.9/PAYER01; N7 A03 N:N1/V1 @7; N2 A03 N:N1/V1 @2; N3 A01 N:N1/V2 @3"
    )
    found = await as_in_order(worker_engine, feed)
    (first,) = [c for c in found.values() if c.encounters[0].value == "V1"]
    assert first.outcome is not None
    assert (first.outcome.readmissions, first.outcome.ed_visits) == (0, 0)


async def test_the_prior_patients_visit_arriving_after_the_merge_keeps_its_case_id(
    worker_engine: AsyncEngine,
) -> None:
    # V2 was first seen (5) under the prior patient's MRN; the merge (6) arrived before it.
    feed = Feed.parse(
        "patients: N:N1/1948/I50.9/PAYER01 N:N2/1948/I50.9/PAYER01; N6 A40 N:N1 @6 prior=N:N2;"
        " N5 A01 N:N2/V2 @5"
    )
    (case,) = (await as_in_order(worker_engine, feed)).values()
    assert [i.value for i in case.patient.identifiers] == ["N1"]  # the survivor


async def test_a_case_the_survivor_opened_for_the_prior_patients_visit_is_voided(
    worker_engine: AsyncEngine,
) -> None:
    # The survivor's EHR admitted V2 (8) under the surviving MRN before the prior patient's own
    # admission of V2 (1) and the merge (2) arrived: V2 is the prior patient's visit.
    feed = Feed.parse(
        "patients: N:N1/1948/I50.9/PAYER01 N:N2/1948/I50.9/PAYER01; N8 A01 N:N1/V2 @8;"
        " N2 A40 N:N1 @2 prior=N:N2; N1 A01 N:N2/V2 @1"
    )
    first = Feed.parse(
        "patients: N:N1/1948/I50.9/PAYER01 N:N2/1948/I50.9/PAYER01; N8 A01 N:N1/V2 @8"
    )
    (duplicate,) = await delivered(worker_engine, first)  # the case the survivor's message opens
    in_order = await delivered(worker_engine, feed.in_order())
    assert duplicate not in in_order
    found = await delivered(worker_engine, feed)
    voided = found.pop(duplicate)  # its row stays, entered-in-error, as it was last sent
    assert found == in_order
    assert voided.status == CaseStatus.ENTERED_IN_ERROR
    assert {t.status for t in voided.tasks} == {TaskStatus.ENTERED_IN_ERROR}
    assert await last_episode_status(worker_engine, duplicate) == "entered-in-error"


async def states(engine: AsyncEngine) -> dict[str, PatientState]:
    return {
        r.patient_key: PatientState.model_validate_json(r.document)
        for r in await rows(engine, patient_states)
        if r.document is not None and r.alias_of is None
    }


async def last_episode_status(engine: AsyncEngine, case_id: str) -> str:
    """The EpisodeOfCare status of the last Bundle queued for ``case_id``."""
    bundles = [orjson.loads(r.bundle) for r in await rows(engine, outbox) if r.case_id == case_id]
    assert bundles, f"nothing sent for {case_id}"
    entries = bundles[-1]["entry"]
    episode = next(
        e["resource"] for e in entries if e["resource"]["resourceType"] == "EpisodeOfCare"
    )
    return str(episode["status"])


async def test_a_late_death_ends_the_case_it_ended_and_voids_one_opened_after_it(
    worker_engine: AsyncEngine,
) -> None:
    # V1 admitted (1); the discharge reporting the death (3, PV1-36 expired) arrives after V2's
    # admission (5), which opened a case no in-order delivery makes (the patient had died).
    feed = Feed.parse(
        "patients: N:N1/1948/I50.9/PAYER01; N1 A01 N:N1/V1 @1; N3 A01 N:N1/V2 @5;"
        " N2 A03 N:N1/V1 @3 disp=20"
    )
    await delivered(worker_engine, feed.in_order())
    in_order = await states(worker_engine)
    found = await delivered(worker_engine, feed)
    assert await states(worker_engine) == in_order
    by_visit = {c.encounters[0].value: c for c in found.values()}
    died = by_visit["V1"]
    assert died.status == CaseStatus.CLOSED
    assert died.outcome is not None
    assert died.outcome.closing_reason == ClosingReason.DECEASED
    assert {(t.status, t.business_status) for t in died.tasks} == {
        (TaskStatus.CANCELLED, "the patient died")
    }
    voided = by_visit["V2"]
    assert voided.status == CaseStatus.ENTERED_IN_ERROR
    assert {t.status for t in voided.tasks} == {TaskStatus.ENTERED_IN_ERROR}
    assert await last_episode_status(worker_engine, voided.id) == "entered-in-error"
    (state,) = (await states(worker_engine)).values()
    assert [c.id for c in state.cases] == [died.id]
    assert state.deceased is not None


async def test_a_case_the_new_order_would_not_open_is_voided(worker_engine: AsyncEngine) -> None:
    # V2 (10) qualifies only as a readmission after V1's discharge (5); the A13 cancelling that
    # discharge arrives late: in order no case opens for V2, so the case sent is retracted, and
    # V2's discharge (20) opens none either.
    feed = Feed.parse(
        "patients: N:N1/1999/S52.5/PAYER01; N1 A01 N:N1/V1 @0; N2 A03 N:N1/V1 @5;"
        " N4 A01 N:N1/V2 @10; N3 A13 N:N1/V1 @6; N5 A03 N:N1/V2 @20"
    )
    assert await delivered(worker_engine, feed.in_order()) == {}
    in_order = await states(worker_engine)
    (case,) = (await delivered(worker_engine, feed)).values()
    assert await states(worker_engine) == in_order
    assert case.status == CaseStatus.ENTERED_IN_ERROR
    assert await last_episode_status(worker_engine, case.id) == "entered-in-error"
    flagged = [r for r in await rows(worker_engine, trace) if "reorder-conflict" in (r.flags or "")]
    assert [r.case_id for r in flagged] == [case.id]
