"""The clinical summary of a utilization review, written from the EHR's Conditions, Observations
and MedicationRequests of the encounter: the text (pure), read from a real FHIR server, and used by
``POST /api/cases/{id}/utilization-reviews`` when the request carries no summary (SQLite and
PostgreSQL)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from api_fixtures import API_KEY
from cm_fhir.api.app import create_app
from cm_fhir.domain import Identifier
from cm_fhir.fhir.clinical_summary import MAX_SUMMARY, clinical_summary
from cm_fhir.fhir_client import FhirClient
from cm_fhir.settings import load_settings
from cm_fhir.sync.clinical import read_clinical_summary
from fhir_server_fixture import FhirFaults
from worker_fixtures import ingest, settle_worker
from workflow_messages import Visit, hours

Json = dict[str, Any]
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"


def condition(text: str | None, code: str = "84114007", **extra: Any) -> Json:
    concept: Json = {"coding": [{"system": SNOMED, "code": code, "display": "Heart failure"}]}
    if text is not None:
        concept["text"] = text
    return {"resourceType": "Condition", "code": concept, **extra}


def observation(**extra: Any) -> Json:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "33762-6", "display": "NT-proBNP"}]},
        **extra,
    }


def medication(name: str, dose: str | None = None, **extra: Any) -> Json:
    out: Json = {
        "resourceType": "MedicationRequest",
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {"text": name},
        **extra,
    }
    if dose is not None:
        out["dosageInstruction"] = [{"text": dose}]
    return out


def test_each_resource_is_one_line_in_its_own_words() -> None:
    text = clinical_summary(
        [condition("Acute on chronic systolic heart failure"), condition(None)],
        [
            observation(
                valueQuantity={"value": 8420, "unit": "pg/mL"},
                effectiveDateTime="2026-03-01T08:00:00Z",
            ),
            observation(valueString="crackles at both bases"),
            observation(valueBoolean=True),
            observation(valueCodeableConcept={"coding": [{"code": "H", "display": "High"}]}),
        ],
        [medication("Furosemide 40 mg IV", "40 mg IV twice daily"), medication("Metoprolol")],
    )
    assert text == (
        "Conditions:\n"
        "- Acute on chronic systolic heart failure\n"
        "- Heart failure\n"
        "Observations:\n"
        "- NT-proBNP: 8420 pg/mL (2026-03-01T08:00:00Z)\n"
        "- NT-proBNP: crackles at both bases\n"
        "- NT-proBNP: true\n"
        "- NT-proBNP: High\n"
        "Medications:\n"
        "- Furosemide 40 mg IV, 40 mg IV twice daily\n"
        "- Metoprolol"
    )


def test_what_was_entered_in_error_or_refuted_is_left_out_and_nothing_is_none() -> None:
    refuted = condition(
        "Pneumonia",
        verificationStatus={"coding": [{"code": "refuted"}]},
    )
    wrong = observation(status="entered-in-error", valueString="x")
    stopped = medication("Heparin", status="cancelled")
    assert clinical_summary([refuted], [wrong], [stopped]) is None
    assert clinical_summary([], [], []) is None
    coded_only = {
        "resourceType": "Condition",
        "code": {"coding": [{"system": SNOMED, "code": "1"}]},
    }
    assert clinical_summary([coded_only], [], []) == f"Conditions:\n- {SNOMED}|1"


def test_the_summary_keeps_to_the_reviews_limit() -> None:
    many = [condition("x" * 500) for _ in range(100)]
    text = clinical_summary(many, [], [])
    assert text is not None
    assert len(text) == MAX_SUMMARY
    assert text.endswith("…")


# -- a real FHIR server ----------------------------------------------------------------------


async def post(client: FhirClient, resource: Json) -> str:
    created = await client.create(resource)
    assert created.status == 201
    assert isinstance(created.resource, dict)
    return str(created.resource["id"])


async def seed_encounter(base_url: str, visit: str) -> None:
    """A patient, the encounter with this visit number, and its clinical resources."""
    async with FhirClient(base_url) as client:
        patient = await post(
            client,
            {
                "resourceType": "Patient",
                "identifier": [{"system": "urn:test:mrn", "value": uuid.uuid4().hex}],
            },
        )
        encounter = await post(
            client,
            {
                "resourceType": "Encounter",
                "status": "in-progress",
                "class": {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                    "code": "IMP",
                },
                "identifier": [{"system": "urn:test:visit", "value": visit}],
                "subject": {"reference": f"Patient/{patient}"},
            },
        )
        refs = {
            "subject": {"reference": f"Patient/{patient}"},
            "encounter": {"reference": f"Encounter/{encounter}"},
        }
        await post(client, condition("Acute decompensated heart failure", **refs))
        await post(
            client,
            observation(valueQuantity={"value": 8420, "unit": "pg/mL"}, **refs),
        )
        await post(client, medication("Furosemide 40 mg IV", "twice daily", **refs))
        # another encounter's data stays out
        other = await post(
            client,
            {
                "resourceType": "Encounter",
                "status": "finished",
                "class": {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                    "code": "AMB",
                },
                "subject": {"reference": f"Patient/{patient}"},
            },
        )
        await post(
            client,
            condition(
                "Ankle sprain",
                subject={"reference": f"Patient/{patient}"},
                encounter={"reference": f"Encounter/{other}"},
            ),
        )


async def test_the_summary_is_read_from_the_ehr_for_the_encounter(fhir_server: str) -> None:
    visit = f"V-{uuid.uuid4().hex[:10]}"
    await seed_encounter(fhir_server, visit)
    async with FhirClient(fhir_server) as client:
        text = await read_clinical_summary(client, Identifier(system="urn:test:visit", value=visit))
        unknown = await read_clinical_summary(
            client, Identifier(system="urn:test:visit", value="V-nobody")
        )
    assert text == (
        "Conditions:\n- Acute decompensated heart failure\n"
        "Observations:\n- NT-proBNP: 8420 pg/mL\n"
        "Medications:\n- Furosemide 40 mg IV, twice daily"
    )
    assert unknown is None


@pytest.fixture
async def hospital(
    worker_engine: AsyncEngine, fhir_server: str
) -> AsyncIterator[httpx.AsyncClient]:
    settings = load_settings(overrides={"api_keys": API_KEY, "ehr_url": fhir_server})
    app = create_app(settings, engine=worker_engine)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app),
            base_url="http://cm-fhir.test",
            headers={"Authorization": f"Bearer {API_KEY}"},
        ) as http,
    ):
        yield http


async def test_a_review_without_a_summary_gets_the_ehrs(
    worker_engine: AsyncEngine, hospital: httpx.AsyncClient, fhir_server: str
) -> None:
    tag = uuid.uuid4().hex[:8]
    visit = Visit(mrn=f"MRN-{tag}", visit=f"V-{tag}")
    await ingest(worker_engine, [visit.raw("A01", f"{tag}-1", hours(0))])
    await settle_worker(worker_engine)
    case_id = (await hospital.get("/api/cases")).json()["items"][0]["id"]
    case = (await hospital.get(f"/api/cases/{case_id}")).json()
    encounter = case["encounters"][-1]
    await seed_encounter(fhir_server, encounter["value"])
    # the EHR's visit system is the case's: put the seeded one under it
    async with FhirClient(fhir_server) as client:
        async for found in client.search(
            "Encounter", {"identifier": f"urn:test:visit|{encounter['value']}"}
        ):
            found["identifier"] = [{"system": encounter["system"], "value": encounter["value"]}]
            await client.update(found)
    body = {"review_type": "concurrent", "level_of_care": "inpatient", "requested_days": 3}
    asked = await hospital.post(f"/api/cases/{case_id}/utilization-reviews", json=body)
    assert asked.status_code == 200, asked.text
    review = (await hospital.get(f"/api/cases/{case_id}/utilization-reviews/ur1")).json()
    assert review["clinical_summary"].startswith("Conditions:\n- Acute decompensated heart failure")
    given = await hospital.post(
        f"/api/cases/{case_id}/utilization-reviews",
        json={**body, "clinical_summary": "As written by the case manager."},
    )
    assert given.status_code == 200, given.text
    second = (await hospital.get(f"/api/cases/{case_id}/utilization-reviews/ur2")).json()
    assert second["clinical_summary"] == "As written by the case manager."


async def test_an_ehr_that_does_not_answer_in_time_does_not_hold_the_review(
    worker_engine: AsyncEngine, faulty_fhir_server: FhirFaults
) -> None:
    """The summary read as a whole, retries included, gets the endpoint's ``timeout``; then the
    review is asked for without one (before, a down EHR held the request for its retries)."""
    tag = uuid.uuid4().hex[:8]
    visit = Visit(mrn=f"MRN-{tag}", visit=f"V-{tag}")
    await ingest(worker_engine, [visit.raw("A01", f"{tag}-1", hours(0))])
    await settle_worker(worker_engine)
    endpoint = {"name": "ehr", "base_url": faulty_fhir_server.base_url, "timeout": 1.0}
    settings = load_settings(overrides={"api_keys": API_KEY, "ehr": {"endpoints": [endpoint]}})
    app = create_app(settings, engine=worker_engine)
    faulty_fhir_server.set(fail_ratio_503=1.0, retry_after=5)
    body = {"review_type": "concurrent", "level_of_care": "inpatient", "requested_days": 3}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app),
            base_url="http://cm-fhir.test",
            headers={"Authorization": f"Bearer {API_KEY}"},
        ) as http,
    ):
        case_id = (await http.get("/api/cases")).json()["items"][0]["id"]
        async with asyncio.timeout(20):  # the retries alone would take longer than this
            asked = await http.post(f"/api/cases/{case_id}/utilization-reviews", json=body)
        assert asked.status_code == 200, asked.text
        review = (await http.get(f"/api/cases/{case_id}/utilization-reviews/ur1")).json()
    assert review["clinical_summary"] is None
    assert faulty_fhir_server.requests()["total"] >= 1  # it was asked, and did not answer
