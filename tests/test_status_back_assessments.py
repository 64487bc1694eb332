"""Status back covers the assessment Tasks too, against the real test FHIR server, on SQLite and
PostgreSQL: an assessment is written as a Task in the assessment identifier system; the EHR takes
it over (owner), starts and completes it with a summary, and each change comes home by poll
through the Task state machine; a completion without a summary, and a move the machine forbids,
change nothing.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from cm_fhir.domain import AssessmentStatus, Case
from cm_fhir.fhir import map_case
from cm_fhir.fhir_client import FhirClient
from cm_fhir.mapping.registry import default_registry
from cm_fhir.store.case_repo import create_case
from cm_fhir.sync.status_back import StatusBack, StatusBackEndpoint
from test_status_back import EXAMPLE, current, ehr_changes

Json = dict[str, Any]
ASSESSMENT_SYSTEM = default_registry().system("assessment")


@pytest.fixture
async def fhir(fhir_server: str) -> AsyncIterator[FhirClient]:
    async with FhirClient(fhir_server) as client:
        yield client


@pytest.fixture
async def stored(worker_engine: AsyncEngine, fhir: FhirClient) -> Case:
    """A case with one requested assessment, in our store and on the server."""
    doc = json.loads(EXAMPLE.read_text())
    doc["id"] = f"SA-{uuid.uuid4().hex[:12]}"
    first = {**doc["assessments"][0], "status": "requested", "summary": None, "findings": []}
    small = {"referral_source": None, "care_team": None, "referrals": [], "risk": None}
    case = Case.model_validate({**doc, **small, "assessments": [first], "tasks": []})
    async with worker_engine.begin() as connection:
        await connection.run_sync(create_case, case, default_registry(), datetime.now(UTC))
    written = await fhir.write_bundle(map_case(case))
    assert {r.status for r in written} == {201}
    return case


async def assessment_task(fhir: FhirClient, case: Case) -> Json:
    value = f"{case.id}.{case.assessments[0].id}"
    query = {"identifier": f"{ASSESSMENT_SYSTEM}|{value}"}
    (found,) = [r async for r in fhir.search("Task", query)]
    return found


def back(engine: AsyncEngine, fhir: FhirClient) -> StatusBack:
    endpoint = StatusBackEndpoint(f"ehr-{uuid.uuid4().hex[:8]}", fhir.base_url, overlap=0.5)
    return StatusBack(engine, default_registry(), endpoint, fhir)


async def test_an_assessment_task_taken_over_started_and_completed_on_the_ehr_comes_home(
    worker_engine: AsyncEngine, fhir: FhirClient, stored: Case
) -> None:
    status_back = back(worker_engine, fhir)
    task = await assessment_task(fhir, stored)
    owner = {"type": "Practitioner", "display": "Sam Ortiz, SW"}
    started = await ehr_changes(fhir, task, status="in-progress", owner=owner)
    assert (await status_back.poll()).counts.get("applied") == 1
    after = (await current(worker_engine, stored)).assessments[0]
    assert after.status is AssessmentStatus.IN_PROGRESS
    assert after.performer.display == "Sam Ortiz, SW"

    # completed without a summary: the case cannot say completed, so nothing changes
    bare = await ehr_changes(fhir, started, status="completed")
    assert (await status_back.poll()).counts.get("illegal") == 1
    assert (await current(worker_engine, stored)).assessments[0].status is (
        AssessmentStatus.IN_PROGRESS
    )
    summary = {"type": {"text": "summary"}, "valueString": "Lives alone; needs meals at home."}
    await ehr_changes(fhir, bare, output=[summary])
    assert (await status_back.poll()).counts.get("applied") == 1
    done = (await current(worker_engine, stored)).assessments[0]
    assert done.status is AssessmentStatus.COMPLETED
    assert done.summary == "Lives alone; needs meals at home."


async def test_a_move_the_task_state_machine_forbids_leaves_the_assessment(
    worker_engine: AsyncEngine, fhir: FhirClient, stored: Case
) -> None:
    status_back = back(worker_engine, fhir)
    task = await assessment_task(fhir, stored)
    await ehr_changes(fhir, task, status="cancelled")
    await status_back.poll()
    assert (await current(worker_engine, stored)).assessments[0].status is (
        AssessmentStatus.CANCELLED
    )
    again = await assessment_task(fhir, stored)
    await ehr_changes(fhir, again, status="in-progress")  # cancelled is final
    assert (await status_back.poll()).counts.get("illegal") == 1
    assert (await current(worker_engine, stored)).assessments[0].status is (
        AssessmentStatus.CANCELLED
    )
