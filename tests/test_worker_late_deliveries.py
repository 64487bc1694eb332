"""Late deliveries through the worker on SQLite and PostgreSQL: the cases in-order delivery gives.

Each feed (the short form of :mod:`feed_strategies`) arrives in the order written, one message
per batch, through the listener's intake and a real worker; the tests read back the committed
case rows, outbox Bundles and served resources. A visit whose case closed still takes a late
event in its place; a fold evaluates outcomes after every event; a visit belongs to the patient
its first event names, even when it arrives after the merge; a case the survivor opened for the
prior patient's visit is voided; a death is final whenever it arrives; and a case the new order
would not open stays tied to its visit, so its discharge and the clock still reach it.
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncEngine

from cm_fhir.domain import Case, CaseStatus, ClosingReason
from cm_fhir.domain.codes import TaskStatus
from cm_fhir.worker import Worker, WorkerConfig
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
    last = [
        orjson.loads(r.bundle) for r in await rows(worker_engine, outbox) if r.case_id == duplicate
    ]
    episode = next(
        e["resource"] for e in last[-1]["entry"] if e["resource"]["resourceType"] == "EpisodeOfCare"
    )
    assert episode["status"] == "entered-in-error"


async def test_a_late_death_ends_a_case_opened_after_it(worker_engine: AsyncEngine) -> None:
    # The admission (8) arrived before the update reporting the death (3, PID-30 = Y).
    feed = Feed.parse(
        "patients: N:N1/1948/I50.9/PAYER01; N3 A01 N:N1/V1 @8; N1 A08 N:N1/V1 @3 dead"
    )
    (case,) = (await delivered(worker_engine, feed)).values()
    assert case.status == CaseStatus.CLOSED
    assert case.outcome is not None
    assert case.outcome.closing_reason == ClosingReason.DECEASED
    assert case.tasks
    assert {(t.status, t.business_status) for t in case.tasks} == {
        (TaskStatus.CANCELLED, "the patient died")
    }
    (state,) = [r for r in await rows(worker_engine, patient_states) if r.document]
    assert '"deceased":"2024-03-05T12:00:00Z"' in state.document


async def test_a_case_the_new_order_would_not_open_is_discharged_and_closed_on_the_clock(
    worker_engine: AsyncEngine,
) -> None:
    # V2 (10) qualifies only as a readmission after V1's discharge (5); the A13 cancelling that
    # discharge arrives late: the case stays (its resources were sent), flagged, and its visit's
    # discharge (20) and then the clock still reach it.
    feed = Feed.parse(
        "patients: N:N1/1999/S52.5/PAYER01; N1 A01 N:N1/V1 @0; N2 A03 N:N1/V1 @5;"
        " N4 A01 N:N1/V2 @10; N3 A13 N:N1/V1 @6; N5 A03 N:N1/V2 @20"
    )
    (case,) = (await delivered(worker_engine, feed)).values()
    assert case.status == CaseStatus.TRANSITION
    flagged = [r for r in await rows(worker_engine, trace) if "reorder-conflict" in (r.flags or "")]
    assert flagged
    result = await Worker(worker_engine, WorkerConfig()).close_due()
    assert result.closed == 1
    (row,) = await rows(worker_engine, cases)
    assert row.status == "closed"
