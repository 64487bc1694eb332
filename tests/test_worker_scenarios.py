"""Discharge-planning scenarios end to end through the store, on SQLite and PostgreSQL.

Raw messages go into the inbox through the listener's intake (one scenario over a real MLLP
socket), a worker processes them, and the test reads back what it committed: the patient state
must equal the pure workflow's result for the same messages, and the cases, outbox, trace and
fhir_resources rows must agree with it. Every resource in the outbox and in fhir_resources
validates against our profiles and the fhir.resources R4B models.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from cm_fhir.domain import Case, CaseStatus, TaskStatus
from cm_fhir.fhir import (
    ReferenceStyle,
    case_to_resources,
    map_case_json,
    validate_bundle,
    validate_resource,
)
from cm_fhir.listener import ListenerConfig, MllpListener
from cm_fhir.mapping.registry import default_registry
from cm_fhir.mllp_client import MllpClient, read_ack
from cm_fhir.profiles import default_validator, error_issues
from cm_fhir.store.writer import InboxWriter
from cm_fhir.workflow import Flag, PatientState
from worker_fixtures import (
    cases,
    expected_states,
    fhir_resources,
    inbox_messages,
    ingest,
    outbox,
    patient_states,
    rows,
    settle_worker,
    trace,
)
from workflow_messages import Visit, hours, rules

V = Visit()
ALPHA = Visit(mrn="MRN-A1", visit="VA1")
BETA = Visit(mrn="MRN-B2", visit="VB2")
YOUNG = Visit(birth="19990101", diagnosis="S52.5", payer=None)
NORTH = Visit(mrn="MRN-N1", visit="V500", facility="NORTHSIDE")
SOUTH = Visit(mrn="MRN-S1", visit="V500", facility="SOUTHSIDE")
ACCOUNT = Visit(mrn="MRN-AC1", visit="", account="ACC-31^^^BILLING")


@dataclass(frozen=True)
class Scenario:
    messages: list[str]
    check: Callable[[list[Case]], None]


def _statuses(case: Case) -> dict[str, TaskStatus]:
    return {t.id: t.status for t in case.tasks}


def _admit_transfer_discharge(found: list[Case]) -> None:
    (case,) = found
    assert case.status == CaseStatus.TRANSITION
    assert case.referrals[0].type == "skilled-nursing"


def _cancel_admit(found: list[Case]) -> None:
    first, second = found
    assert first.status == CaseStatus.ENTERED_IN_ERROR
    assert set(_statuses(first).values()) == {TaskStatus.ENTERED_IN_ERROR}
    assert second.status == CaseStatus.TRANSITION


def _discharge_again(found: list[Case]) -> None:
    (case,) = found
    assert _statuses(case)["follow-up-p1"] == TaskStatus.CANCELLED
    assert _statuses(case)["follow-up-p2"] == TaskStatus.REQUESTED
    assert {r.id: r.type for r in case.referrals}["referral-d2"] == "hospice"


def _cancel_transfer(found: list[Case]) -> None:
    (case,) = found
    assert case.task("initial-assessment").owner.display == rules().teams["cm-medicine"].display
    assert case.referrals == ()


def _duplicates(found: list[Case]) -> None:
    (case,) = found
    assert case.status == CaseStatus.TRANSITION
    # one cancelled discharge and one live one: the resends under new control ids added nothing
    assert sorted(t.id for t in case.tasks if t.id.startswith("med-rec")) == [
        "med-rec-d1",
        "med-rec-d2",
    ]
    assert len(case.referrals) == 2


def _two_admits(found: list[Case]) -> None:
    (case,) = found
    assert sum(t.id == "initial-assessment" for t in case.tasks) == 1
    assert case.referrals[0].status.value == "revoked"


def _merge(found: list[Case]) -> None:
    assert len(found) == 2
    assert {c.patient.primary.value for c in found} == {ALPHA.mrn}
    assert {c.status for c in found} == {CaseStatus.ACTIVE, CaseStatus.TRANSITION}


def _none(found: list[Case]) -> None:
    assert found == []


def _unmapped(found: list[Case]) -> None:
    (case,) = found
    assert case.referrals == ()
    assert not any(t.id.startswith("post-acute") for t in case.tasks)


def _two_facilities(found: list[Case]) -> None:
    north, south = sorted(found, key=lambda c: c.patient.primary.value)
    assert (north.patient.primary.value, south.patient.primary.value) == (NORTH.mrn, SOUTH.mrn)
    assert north.id != south.id
    assert north.status == CaseStatus.TRANSITION  # the southern admit did not overwrite it
    assert south.status == CaseStatus.ACTIVE
    assert north.encounters[0].value == south.encounters[0].value == NORTH.visit
    assert north.encounters[0].system != south.encounters[0].system


def _account_number(found: list[Case]) -> None:
    (case,) = found
    assert [(e.value, e.assigner) for e in case.encounters] == [("ACC-31", "BILLING")]


def _late_transfer(found: list[Case]) -> None:
    (case,) = found
    # the transfer to surgery is the newest: the late one to ED moves nothing
    assert case.task("initial-assessment").owner.display == rules().teams["cm-surgery"].display


def _bed_move_cancelled(found: list[Case]) -> None:
    (case,) = found
    # back to the bed before the move, on the surgical unit, not to the first unit
    assert case.task("initial-assessment").owner.display == rules().teams["cm-surgery"].display
    assert case.task("med-rec-d1").owner.display == rules().teams["cm-surgery"].display


SCENARIOS = {
    "admit-transfer-discharge": Scenario(
        [
            V.raw("A01", "M1", hours(0)),
            V.raw("A02", "M2", hours(6), location="5NORTH", prior_location="4WEST"),
            V.raw("A03", "M3", hours(72), disposition="03", discharge=hours(72)),
        ],
        _admit_transfer_discharge,
    ),
    "admit-cancel-admit-transfer-discharge": Scenario(
        [
            V.raw("A01", "M1", hours(0)),
            V.raw("A11", "M2", hours(1)),
            V.raw("A01", "M3", hours(2)),
            V.raw("A02", "M4", hours(5), location="5NORTH"),
            V.raw("A03", "M5", hours(48), disposition="06", discharge=hours(48)),
        ],
        _cancel_admit,
    ),
    "discharge-cancel-discharge-again": Scenario(
        [
            V.raw("A01", "M1", hours(0)),
            V.raw("A02", "M2", hours(4), location="5NORTH"),
            V.raw("A03", "M3", hours(48), disposition="03", discharge=hours(48)),
            V.raw("A13", "M4", hours(49)),
            V.raw("A03", "M5", hours(60), disposition="50", discharge=hours(60)),
        ],
        _discharge_again,
    ),
    "transfers-and-cancel-transfer": Scenario(
        [
            V.raw("A01", "M1", hours(0)),
            V.raw("A02", "M2", hours(3), location="5NORTH"),
            V.raw("A02", "M3", hours(6), location="ED"),
            V.raw("A12", "M4", hours(7), location="5NORTH"),
            V.raw("A02", "M5", hours(9), location="3EAST"),
            V.raw("A03", "M6", hours(30), disposition="01", discharge=hours(30)),
        ],
        _cancel_transfer,
    ),
    "duplicates": Scenario(
        [
            message
            for message in (
                V.raw("A01", "M1", hours(0)),
                V.raw("A02", "M2", hours(3), location="5NORTH"),
                V.raw("A03", "M3", hours(30), disposition="06", discharge=hours(30)),
                V.raw("A13", "M4", hours(31)),
            )
            for _ in range(2)  # each sent twice: the inbox answers the resend from its row
        ]
        + [
            V.raw("A03", "M9", hours(32), disposition="06", discharge=hours(32)),
            V.raw("A03", "M10", hours(33), disposition="06", discharge=hours(32)),
        ],
        _duplicates,
    ),
    "two-admits-then-cancel-discharge": Scenario(
        [
            V.raw("A01", "M1", hours(0)),
            V.raw("A01", "M2", hours(1), location="5NORTH"),
            V.raw("A03", "M3", hours(40), disposition="62", discharge=hours(40)),
            V.raw("A13", "M4", hours(41)),
        ],
        _two_admits,
    ),
    "merge": Scenario(
        [
            ALPHA.raw("A01", "A1", hours(0)),
            BETA.raw("A01", "B1", hours(1)),
            BETA.raw("A02", "B2", hours(2), location="5NORTH"),
            ALPHA.raw("A40", "A2", hours(3), prior_mrn=BETA.mrn),
            Visit(mrn=ALPHA.mrn, visit=BETA.visit).raw(
                "A03", "A4", hours(30), disposition="03", discharge=hours(30)
            ),
        ],
        _merge,
    ),
    "non-qualifying": Scenario(
        [
            YOUNG.raw("A01", "Y1", hours(0)),
            YOUNG.raw("A03", "Y2", hours(20), disposition="01", discharge=hours(20)),
        ],
        _none,
    ),
    "two-facilities-one-visit-number": Scenario(
        [
            NORTH.raw("A01", "N1", hours(0)),
            NORTH.raw("A03", "N2", hours(20), disposition="01", discharge=hours(20)),
            SOUTH.raw("A01", "S1", hours(21)),
        ],
        _two_facilities,
    ),
    "account-number-names-the-visit": Scenario(
        [ACCOUNT.raw("A01", "AC1", hours(0))],
        _account_number,
    ),
    "late-transfer": Scenario(
        [
            V.raw("A01", "L1", hours(0)),
            V.raw("A02", "L2", hours(5), location="5NORTH", prior_location="4WEST"),
            V.raw("A02", "L3", hours(3), location="ED", prior_location="4WEST"),
        ],
        _late_transfer,
    ),
    "cancel-bed-move": Scenario(
        [
            V.raw("A01", "B1", hours(0)),
            V.raw("A02", "B2", hours(2), location="5NORTH", room="501"),
            V.raw("A02", "B3", hours(4), location="5NORTH", room="502", bed="B"),
            V.raw(
                "A12",
                "B4",
                hours(5),
                occurred=hours(4),
                location="5NORTH",
                room="501",
                prior_location="5NORTH^502^B",
            ),
            V.raw("A03", "B5", hours(30), disposition="01", discharge=hours(30)),
        ],
        _bed_move_cancelled,
    ),
    "unmapped-disposition": Scenario(
        [
            V.raw("A01", "U1", hours(0)),
            V.raw("A03", "U2", hours(20), disposition="ZZ", discharge=hours(20)),
        ],
        _unmapped,
    ),
}


async def _check_store(engine: AsyncEngine, scenario: Scenario) -> None:
    stored = {r.patient_key: r for r in await rows(engine, patient_states)}
    documents = {
        k: PatientState.model_validate_json(r.document) for k, r in stored.items() if r.document
    }
    assert documents == expected_states(scenario.messages)
    final = {c.id: c for state in documents.values() for c in state.cases}
    scenario.check(list(final.values()))

    case_rows = {r.case_id: r for r in await rows(engine, cases)}
    assert set(case_rows) == set(final)
    registry = default_registry()
    for case_id, case in final.items():
        row = case_rows[case_id]
        assert Case.model_validate_json(row.case_json) == case
        assert row.status == case.status.value
        assert row.patient_key == next(k for k, s in documents.items() if s.case(case_id))

    queued = await rows(engine, outbox)
    for case_id, case in final.items():
        bundles = [r.bundle for r in queued if r.case_id == case_id]
        assert bundles, "every case has at least one write"
        assert all(a != b for a, b in itertools.pairwise(bundles)), "no repeats"
        assert bundles[-1] == map_case_json(case, registry, validate=False)
    for row in queued:
        validate_bundle(orjson.loads(row.bundle))
        identifiers = orjson.loads(row.identifiers)
        assert row.case_identifier == identifiers[0].split("|", 1)[1]

    served = await rows(engine, fhir_resources)
    expected = {
        (r["resourceType"], r["id"]): r
        for case in final.values()
        for r in case_to_resources(case, registry, ReferenceStyle.RELATIVE)
    }
    assert {(r.resource_type, r.id): orjson.loads(r.resource) for r in served} == expected
    collection = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": f"urn:uuid:{rid}", "resource": r} for (_, rid), r in expected.items()
        ],
    }
    if expected:
        validate_bundle(collection)
        for resource in expected.values():
            validate_resource(resource)

    inbox = await rows(engine, inbox_messages)
    assert [r.state for r in inbox] == ["processed"] * len(dict.fromkeys(scenario.messages))
    assert all(r.attempts == 1 for r in inbox)
    traced = await rows(engine, trace)
    assert {t.inbox_message_id for t in traced} == {r.id for r in inbox}
    assert [t.inbox_message_id for t in traced] == sorted(t.inbox_message_id for t in traced)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_scenario_through_the_store(worker_engine: AsyncEngine, name: str) -> None:
    scenario = SCENARIOS[name]
    acks = await ingest(worker_engine, scenario.messages)
    assert all(b"MSA|AA|" in ack for ack in acks)
    result = await settle_worker(worker_engine, batch_size=3)  # several batches per scenario
    assert result.processed == len(dict.fromkeys(scenario.messages))
    await _check_store(worker_engine, scenario)


async def test_replaying_the_whole_inbox_duplicates_nothing(worker_engine: AsyncEngine) -> None:
    from cm_fhir.worker import replay

    scenario = SCENARIOS["discharge-cancel-discharge-again"]
    await ingest(worker_engine, scenario.messages)
    await settle_worker(worker_engine)
    before = {t: await rows(worker_engine, t) for t in (cases, outbox, fhir_resources)}
    states = [r.document for r in await rows(worker_engine, patient_states)]
    assert await replay(worker_engine) == len(scenario.messages)
    result = await settle_worker(worker_engine)
    assert result.processed == len(scenario.messages)
    assert result.outbox == 0
    assert [r.document for r in await rows(worker_engine, patient_states)] == states
    for table in (outbox, fhir_resources):
        assert await rows(worker_engine, table) == before[table]
    assert [r.case_json for r in await rows(worker_engine, cases)] == [
        r.case_json for r in before[cases]
    ]
    replayed = [t for t in await rows(worker_engine, trace) if t.action == "duplicate-ignored"]
    assert len(replayed) == len(scenario.messages)
    assert all(t.flags == Flag.DUPLICATE_MESSAGE.value for t in replayed)


async def test_scenario_over_a_real_mllp_socket(worker_engine: AsyncEngine) -> None:
    scenario = SCENARIOS["admit-transfer-discharge"]
    async with InboxWriter(worker_engine) as writer:
        listener = MllpListener(ListenerConfig(host="127.0.0.1", port=0), writer)
        await listener.start()
        try:
            async with await MllpClient.connect("127.0.0.1", listener.port) as client:
                for message in scenario.messages:
                    (ack,) = read_ack(await client.send(message))
                    assert ack.code == "AA"
        finally:
            await listener.stop()
    await settle_worker(worker_engine)
    await _check_store(worker_engine, scenario)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_every_committed_resource_validates_against_our_profiles(
    worker_engine: AsyncEngine, name: str
) -> None:
    await ingest(worker_engine, SCENARIOS[name].messages)
    await settle_worker(worker_engine)
    validator = default_validator()
    errors = []
    for row in await rows(worker_engine, outbox):
        errors += error_issues(validator.validate(orjson.loads(row.bundle)))
    for row in await rows(worker_engine, fhir_resources):
        errors += error_issues(validator.validate(orjson.loads(row.resource)))
    assert errors == []
