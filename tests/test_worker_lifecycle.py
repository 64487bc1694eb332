"""Case lifecycle scenarios end to end through the worker and the store, on SQLite and PostgreSQL.

Death, pre-admission, class changes, cancelled pending discharges, A11/A13, planning before the
discharge and unmapped dispositions: raw messages go through the listener's intake into the
inbox, a worker processes them, and the committed state, cases, outbox, trace and served
resources must agree with the pure workflow; every committed resource validates against our
profiles.
"""

from __future__ import annotations

import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from cm_fhir.domain import Case, CaseStatus, ClosingReason, PlanStatus, TaskStatus
from cm_fhir.profiles import default_validator, error_issues
from cm_fhir.workflow import Flag
from test_worker_scenarios import Scenario, _check_store
from worker_fixtures import fhir_resources, ingest, outbox, rows, settle_worker, trace
from workflow_messages import Visit, hours

V = Visit()


def _statuses(case: Case) -> dict[str, TaskStatus]:
    return {t.id: t.status for t in case.tasks}


def _deceased(found: list[Case]) -> None:
    (case,) = found
    assert case.status == CaseStatus.CLOSED
    assert case.outcome is not None
    assert case.outcome.closing_reason == ClosingReason.DECEASED
    assert not any(t.is_open for t in case.tasks)
    assert not [t for t in case.tasks if t.id.endswith("-d1")]  # no follow-up after a death


def _died_after_discharge(found: list[Case]) -> None:
    _deceased_later(found)
    (case,) = found
    assert case.referrals[0].status == PlanStatus.REVOKED


def _deceased_later(found: list[Case]) -> None:
    (case,) = found
    assert case.status == CaseStatus.CLOSED
    assert case.outcome is not None
    assert case.outcome.closing_reason == ClosingReason.DECEASED
    assert _statuses(case)["follow-up-call-d1"] == TaskStatus.CANCELLED


def _planned_then_cancelled(found: list[Case]) -> None:
    (case,) = found
    assert [s.status for s in case.status_history] == [CaseStatus.PLANNED, CaseStatus.CANCELLED]


def _planned_then_admitted(found: list[Case]) -> None:
    (case,) = found
    assert [s.status for s in case.status_history] == [CaseStatus.PLANNED, CaseStatus.ACTIVE]
    assert _statuses(case)["initial-assessment"] == TaskStatus.REQUESTED


def _no_longer_qualifies(found: list[Case]) -> None:
    (case,) = found
    assert case.status == CaseStatus.CLOSED
    assert case.outcome is not None
    assert case.outcome.closing_reason == ClosingReason.NOT_ELIGIBLE


def _planning_undone(found: list[Case]) -> None:
    (case,) = found
    assert case.status == CaseStatus.ACTIVE
    assert all(s == TaskStatus.CANCELLED for i, s in _statuses(case).items() if i.endswith("-p1"))
    assert case.referrals[0].status == PlanStatus.REVOKED


def _entered_in_error(found: list[Case]) -> None:
    (case,) = found
    assert case.status == CaseStatus.ENTERED_IN_ERROR
    assert set(_statuses(case).values()) == {TaskStatus.ENTERED_IN_ERROR}
    assert {r.status for r in case.referrals} == {PlanStatus.ENTERED_IN_ERROR}


def _admitted_after_cancelled_discharge(found: list[Case]) -> None:
    (case,) = found
    assert case.status == CaseStatus.ACTIVE
    assert _statuses(case)["initial-assessment"] == TaskStatus.REQUESTED


def _arranged_before_discharge(found: list[Case]) -> None:
    (case,) = found
    (referral,) = case.referrals
    assert referral.type == "home-health"
    assert referral.authored_on == hours(20)
    assert referral.due < hours(72)  # before the expected discharge day (2024-03-08)
    assert case.task("follow-up-p1").due < hours(72)


def _planned_again(found: list[Case]) -> None:
    (case,) = found
    assert case.status == CaseStatus.PLANNED
    assert [s.status for s in case.status_history] == [CaseStatus.PLANNED]
    assert case.closed is None
    # the admission's work is void (the bundled rules give a pre-admission no work of its own)
    assert set(_statuses(case).values()) == {TaskStatus.ENTERED_IN_ERROR}


def _death_cancelled(found: list[Case]) -> None:
    (case,) = found
    assert case.status == CaseStatus.ACTIVE
    assert [s.status for s in case.status_history] == [CaseStatus.ACTIVE]
    assert case.closed is None
    assert case.outcome is None  # the deceased closing reason is gone
    statuses = _statuses(case)
    # the work of the admission and of the pending discharge is open again, as before the A03
    assert statuses["initial-assessment"] == TaskStatus.REQUESTED
    assert statuses["follow-up-p1"] == TaskStatus.REQUESTED
    assert not [t for t in case.tasks if t.id.endswith("-d1")]
    assert case.discharge_plan is not None
    assert case.discharge_plan.status == PlanStatus.DRAFT
    assert case.discharge_plan.disposition is None


SCENARIOS = {
    "death-at-discharge": Scenario(
        [
            V.raw("A01", "D1", hours(0)),
            V.raw("A16", "D2", hours(20), expected="20240309"),
            V.raw("A03", "D3", hours(30), disposition="20", discharge=hours(30)),
        ],
        _deceased,
    ),
    "death-indicator": Scenario(
        [
            V.raw("A01", "I1", hours(0)),
            V.raw(
                "A03", "I2", hours(30), disposition="01", discharge=hours(30), death_indicator="Y"
            ),
        ],
        _deceased,
    ),
    "death-after-discharge": Scenario(
        [
            V.raw("A01", "E1", hours(0)),
            V.raw("A03", "E2", hours(30), disposition="06", discharge=hours(30)),
            V.raw("A08", "E3", hours(50), died=hours(49), death_indicator="Y"),
        ],
        _died_after_discharge,
    ),
    "pre-admit-cancelled": Scenario(
        [
            V.raw("A05", "P1", hours(-48), patient_class="P"),
            V.raw("A38", "P2", hours(-24), patient_class="P"),
        ],
        _planned_then_cancelled,
    ),
    "pending-admit-cancelled": Scenario(
        [
            V.raw("A14", "P1", hours(-48), patient_class="P"),
            V.raw("A27", "P2", hours(-24), patient_class="P"),
        ],
        _planned_then_cancelled,
    ),
    "pre-admit-admitted": Scenario(
        [V.raw("A05", "P1", hours(-48), patient_class="P"), V.raw("A01", "P2", hours(0))],
        _planned_then_admitted,
    ),
    "inpatient-to-outpatient": Scenario(
        [V.raw("A01", "O1", hours(0)), V.raw("A07", "O2", hours(10), patient_class="O")],
        _no_longer_qualifies,
    ),
    "class-change-update": Scenario(
        [V.raw("A01", "O1", hours(0)), V.raw("A08", "O2", hours(10), patient_class="O")],
        _no_longer_qualifies,
    ),
    "cancel-pending-discharge": Scenario(
        [
            V.raw("A01", "Q1", hours(0)),
            V.raw("A16", "Q2", hours(20), expected="20240309", disposition="06"),
            V.raw("A25", "Q3", hours(22)),
        ],
        _planning_undone,
    ),
    "cancel-admit-entered-in-error": Scenario(
        [
            V.raw("A01", "A1", hours(0), disposition="03"),
            V.raw("A11", "A2", hours(2)),
        ],
        _entered_in_error,
    ),
    "discharge-without-admit-cancelled": Scenario(
        [
            V.raw("A03", "N1", hours(30), disposition="03", discharge=hours(30)),
            V.raw("A13", "N2", hours(31)),
        ],
        _admitted_after_cancelled_discharge,
    ),
    "pre-admit-admitted-then-admit-cancelled": Scenario(
        [
            V.raw("A05", "R1", hours(-48), patient_class="P"),
            V.raw("A01", "R2", hours(0)),
            V.raw("A11", "R3", hours(1)),
        ],
        _planned_again,
    ),
    "death-discharge-cancelled": Scenario(
        [
            V.raw("A01", "X1", hours(0)),
            V.raw("A16", "X2", hours(20), expected="20240309"),
            V.raw("A03", "X3", hours(30), disposition="20", discharge=hours(30)),
            V.raw("A13", "X4", hours(31)),
        ],
        _death_cancelled,
    ),
    "planning-before-discharge": Scenario(
        [
            V.raw("A01", "T1", hours(0)),
            V.raw("A08", "T2", hours(20), disposition="06", expected="20240308"),
            V.raw("A03", "T3", hours(70), disposition="06", discharge=hours(70)),
        ],
        _arranged_before_discharge,
    ),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_lifecycle_scenario_through_the_store(worker_engine: AsyncEngine, name: str) -> None:
    scenario = SCENARIOS[name]
    acks = await ingest(worker_engine, scenario.messages)
    assert all(b"MSA|AA|" in ack for ack in acks)
    result = await settle_worker(worker_engine, batch_size=2)
    assert result.processed == len(scenario.messages)
    await _check_store(worker_engine, scenario)
    validator = default_validator()
    errors = []
    for row in await rows(worker_engine, outbox):
        errors += error_issues(validator.validate(orjson.loads(row.bundle)))
    for row in await rows(worker_engine, fhir_resources):
        errors += error_issues(validator.validate(orjson.loads(row.resource)))
    assert errors == []


async def test_unmapped_disposition_is_flagged_in_the_committed_trace(
    worker_engine: AsyncEngine,
) -> None:
    messages = [
        V.raw("A01", "U1", hours(0)),
        V.raw("A03", "U2", hours(20), disposition="ZZ", discharge=hours(20)),
    ]
    await ingest(worker_engine, messages)
    await settle_worker(worker_engine)
    await _check_store(worker_engine, Scenario(messages, lambda found: None))
    flagged = [t for t in await rows(worker_engine, trace) if t.flags]
    assert [(t.rule, t.flags) for t in flagged] == [
        ("adt-concept-maps.discharge_disposition", Flag.UNMAPPED_DISPOSITION.value)
    ]
    served = [orjson.loads(r.resource) for r in await rows(worker_engine, fhir_resources)]
    assert not [r for r in served if r["resourceType"] == "ServiceRequest"]


async def test_a_disposition_outside_a_discharge_is_not_flagged(worker_engine: AsyncEngine) -> None:
    """PV1-36 on an admit, transfer or update is not checked against the disposition map."""
    messages = [
        V.raw("A01", "W1", hours(0), disposition="ZZ"),
        V.raw("A02", "W2", hours(2), disposition="ZZ", location="5NORTH"),
        V.raw("A08", "W3", hours(4), disposition="ZZ"),
    ]
    await ingest(worker_engine, messages)
    await settle_worker(worker_engine)
    await _check_store(worker_engine, Scenario(messages, lambda found: None))
    committed = await rows(worker_engine, trace)
    assert {t.action for t in committed} >= {"case-opened", "location-changed"}
    assert [t for t in committed if Flag.UNMAPPED_DISPOSITION.value in (t.flags or "")] == []
