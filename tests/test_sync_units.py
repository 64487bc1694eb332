"""Outbox delivery in small pieces: the pure Bundle preparation, the endpoint settings, and the
delivery's handling of refusals, outages and per-patient order against a respx-mocked endpoint
(the store is real: SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
import respx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from cm_fhir.errors import ConfigError
from cm_fhir.service import Service
from cm_fhir.settings import Role, load_settings
from cm_fhir.store.case_tables import outbox
from cm_fhir.store.outbox import claim_patients
from cm_fhir.sync.prepare import KnownResource, prepare_bundle, server_id_of
from sync_fixtures import FAST, sync_worker
from worker_fixtures import ingest, rows, settle_worker
from workflow_messages import Visit, hours

EHR = "http://ehr.test/fhir"
PATIENT = {"system": "urn:oid:1.2.3", "value": "MRN-U1"}


def _bundle() -> dict[str, Any]:
    def entry(rtype: str, rid: str, **body: Any) -> dict[str, Any]:
        ident = {"system": f"urn:sys:{rtype}", "value": rid}
        return {
            "fullUrl": f"urn:uuid:{rid}",
            "resource": {"resourceType": rtype, "identifier": [ident], **body},
            "request": {"method": "PUT", "url": f"{rtype}?identifier=urn:sys:{rtype}|{rid}"},
        }

    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            entry("EpisodeOfCare", "e1", patient={"type": "Patient", "identifier": PATIENT}),
            entry("CareTeam", "t1", subject={"type": "Patient", "identifier": PATIENT}),
            entry("Task", "k1", focus={"reference": "urn:uuid:t1"}, status="requested"),
        ],
    }


# -- the pure preparation ---------------------------------------------------------------------


def test_prepare_drops_types_the_endpoint_does_not_receive_keeping_logical_references() -> None:
    original = _bundle()
    prepared = prepare_bundle(original, resource_types=("EpisodeOfCare", "Task"))
    entries = prepared.bundle["entry"]
    assert [e["resource"]["resourceType"] for e in entries] == ["EpisodeOfCare", "Task"]
    assert entries[1]["resource"]["focus"] == {
        "type": "CareTeam",
        "identifier": {"system": "urn:sys:CareTeam", "value": "t1"},
    }
    assert original == _bundle()  # the stored Bundle is left as it was


def test_prepare_links_a_resolved_patient_and_writes_known_resources_with_if_match() -> None:
    known = {"Task|urn:sys:Task|k1": KnownResource("srv-9", "4")}
    prepared = prepare_bundle(_bundle(), patient_identifier=PATIENT, patient_id="p-77", known=known)
    episode, team, task = (e for e in prepared.bundle["entry"])
    assert episode["resource"]["patient"] == {
        "type": "Patient",
        "identifier": PATIENT,
        "reference": "Patient/p-77",
    }
    assert team["resource"]["subject"]["reference"] == "Patient/p-77"
    assert task["request"] == {"method": "PUT", "url": "Task/srv-9", "ifMatch": 'W/"4"'}
    assert task["resource"]["id"] == "srv-9"
    assert episode["request"]["url"].startswith("EpisodeOfCare?identifier=")
    assert prepared.if_matched == {"urn:uuid:k1": known["Task|urn:sys:Task|k1"]}


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("Task/abc/_history/3", ("abc", "3")),
        ("http://x/fhir/Task/abc/_history/12", ("abc", "12")),
        ("Task/abc", ("abc", None)),
        (None, (None, None)),
    ],
)
def test_server_ids_are_read_from_locations(
    location: str | None, expected: tuple[str | None, str | None]
) -> None:
    assert server_id_of(location) == expected


# -- settings ----------------------------------------------------------------------------------


def test_endpoint_settings_name_what_is_missing_and_conflicting() -> None:
    with pytest.raises(ConfigError, match="auth kind smart-backend needs client_id, key_file"):
        load_settings(
            overrides={
                "ehr": {
                    "endpoints": [{"name": "a", "base_url": EHR, "auth": {"kind": "smart-backend"}}]
                }
            }
        )
    with pytest.raises(ConfigError, match="its own name"):
        load_settings(
            overrides={
                "ehr": {
                    "endpoints": [
                        {"name": "a", "base_url": EHR},
                        {"name": "a", "base_url": EHR},
                    ]
                }
            }
        )
    clash = load_settings(
        overrides={"ehr_url": EHR, "ehr": {"endpoints": [{"name": "default", "base_url": EHR}]}}
    )
    with pytest.raises(ConfigError, match="ehr_url configures the endpoint 'default'"):
        Service(clash, {Role.SYNC})
    with pytest.raises(ConfigError, match="ehr_url"):
        load_settings(overrides={"ehr_url": "ftp://nowhere"})


def test_the_ehr_url_alone_makes_sync_part_of_all(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CM_FHIR_EHR_URL", EHR)
    settings = load_settings(overrides={"api_keys": ["k" * 20]})
    service = Service(settings)
    assert service.info.roles == ("api", "listener", "worker", "sync")
    (endpoint,) = settings.endpoints
    assert (endpoint.name, endpoint.base_url, endpoint.auth.kind) == ("default", EHR, "none")


# -- delivery against a mocked endpoint ---------------------------------------------------------

_CAPABILITIES = {
    "resourceType": "CapabilityStatement",
    "fhirVersion": "4.0.1",
    "rest": [{"mode": "server", "interaction": [{"code": "transaction"}, {"code": "batch"}]}],
}
_REFUSED = {
    "resourceType": "OperationOutcome",
    "issue": [{"severity": "error", "code": "invalid", "diagnostics": "bad status"}],
}


def _answer(request: httpx.Request) -> httpx.Response:
    bundle = orjson.loads(request.content)
    if any("REFUSE" in orjson.dumps(e["resource"]).decode() for e in bundle["entry"]):
        return httpx.Response(422, json=_REFUSED)
    entries = [
        {
            "response": {
                "status": "201 Created",
                "location": f"{e['resource']['resourceType']}/s{n}/_history/1",
            }
        }
        for n, e in enumerate(bundle["entry"])
    ]
    return httpx.Response(
        200, json={"resourceType": "Bundle", "type": "transaction-response", "entry": entries}
    )


async def _two_patients(engine: AsyncEngine, tag: str) -> tuple[Visit, Visit]:
    a = Visit(mrn=f"MRN-{tag}-A", visit=f"V{tag}A")
    b = Visit(mrn=f"MRN-{tag}-B", visit=f"V{tag}B")
    await ingest(engine, [a.raw("A01", f"{tag}-A1", hours(0)), b.raw("A01", f"{tag}-B1", hours(0))])
    await settle_worker(engine)
    return a, b


@respx.mock
async def test_a_refusal_fails_one_patient_with_its_outcome_and_the_other_is_sent(
    worker_engine: AsyncEngine,
) -> None:
    await _two_patients(worker_engine, "U1")
    async with worker_engine.begin() as connection:
        (first,) = (await connection.execute(select(outbox.c.id, outbox.c.bundle).limit(1))).all()
        text = bytes(first.bundle).replace(b'"status":"', b'"status":"REFUSE', 1)
        await connection.execute(outbox.update().where(outbox.c.id == first.id).values(bundle=text))
    respx.get(f"{EHR}/metadata").respond(200, json=_CAPABILITIES)
    respx.get(url__startswith=f"{EHR}/Patient").respond(
        200, json={"resourceType": "Bundle", "type": "searchset"}
    )
    respx.post(EHR).mock(side_effect=_answer)
    async with sync_worker(worker_engine, EHR) as sync:
        await sync.drain()
    found = {r.id: r for r in await rows(worker_engine, outbox)}
    assert found[first.id].state == "failed"
    assert orjson.loads(found[first.id].last_outcome) == _REFUSED
    assert found[first.id].last_error == "HTTP 422 RemoteInvalid"
    assert [r.state for i, r in found.items() if i != first.id] == ["sent"]


@respx.mock
async def test_an_outage_backs_off_and_holds_the_patients_later_rows(
    worker_engine: AsyncEngine,
) -> None:
    a, _ = await _two_patients(worker_engine, "U2")
    respx.get(f"{EHR}/metadata").respond(200, json=_CAPABILITIES)
    respx.get(url__startswith=f"{EHR}/Patient").respond(
        200, json={"resourceType": "Bundle", "type": "searchset"}
    )
    respx.post(EHR).respond(503)
    before = datetime.now(UTC)
    patient = FAST.model_copy(update={"retry_base": 30.0, "retry_max": 60.0})
    async with sync_worker(worker_engine, EHR, patient) as sync:
        await sync.drain()
    waiting = await rows(worker_engine, outbox)
    assert {r.state for r in waiting} == {"pending"}
    assert all(r.attempts == 1 for r in waiting)
    # 503s, until the circuit breaker opens and stops calling the endpoint
    assert {r.last_error for r in waiting} <= {"HTTP 503 RemoteUnavailable", "CircuitOpen"}
    due = [
        r.next_attempt_at.replace(tzinfo=UTC)
        if r.next_attempt_at.tzinfo is None
        else r.next_attempt_at
        for r in waiting
    ]
    assert all(d > before for d in due)
    # A later event of patient A waits behind A's row that is backing off; B's row is not due.
    await ingest(
        worker_engine, [a.raw("A02", "U2-A2", hours(3), location="5EAST", prior_location="4WEST")]
    )
    await settle_worker(worker_engine)
    async with worker_engine.begin() as connection:
        claimed = await connection.run_sync(
            lambda c: claim_patients(
                c, "default", "test", datetime.now(UTC), lease=timedelta(seconds=5)
            )
        )
    assert claimed == []
    later = datetime.now(UTC) + timedelta(seconds=61)
    async with worker_engine.begin() as connection:
        claimed = await connection.run_sync(
            lambda c: claim_patients(c, "default", "test", later, lease=timedelta(seconds=5))
        )
    by_patient = {w.patient_key: w for w in claimed}
    assert len(by_patient) == 2
    (a_work,) = [w for k, w in by_patient.items() if "U2-A" in k]
    # A's two Bundles of one case: only the newest goes, standing for the older one
    (write,) = a_work.writes
    assert len(write.older) == 1
