"""Delivery from the outbox through SMART Backend Services, end to end: the key is made and
registered as the README says (`cm-fhir keys generate` prints the JWKS the EHR registers), the
endpoint is configured with ``auth.kind = "smart-backend"``, and the test FHIR server's token
endpoint checks each signed assertion against that JWKS before every FHIR request needs the
token. A token the server revokes meanwhile (a 401) is replaced once and the write goes through;
a key the server does not know leaves the rows waiting (retryable), never failed or lost.
"""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from cm_fhir.cli import app
from cm_fhir.sync.config import EndpointAuth
from fhir_server_fixture import FhirFaults
from sync_fixtures import outbox_states, sync_worker
from test_sync_delivery import _assert_delivered_once
from worker_fixtures import ingest, settle_worker
from workflow_messages import Visit, hours


def _key(tmp_path: Path, name: str) -> tuple[Path, dict[str, object]]:
    pem = tmp_path / f"{name}.pem"
    made = CliRunner().invoke(app, ["keys", "generate", "--out", str(pem), "--alg", "ES384"])
    assert made.exit_code == 0, made.output
    return pem, json.loads(made.stdout)


async def test_delivery_through_smart_backend_services_with_a_token_refresh_on_401(
    worker_engine: AsyncEngine, faulty_fhir_server: FhirFaults, tmp_path: Path
) -> None:
    faults = faulty_fhir_server
    pem, registered = _key(tmp_path, "ehr-client")
    faults.require_auth("cm-fhir-sync", jwks=registered)
    auth = EndpointAuth(kind="smart-backend", client_id="cm-fhir-sync", key_file=pem)
    visit = Visit(mrn="MRN-SMART-1", visit="VSMART1")
    async with sync_worker(worker_engine, faults.base_url, auth=auth) as sync:
        await ingest(worker_engine, [visit.raw("A01", "SMART-1", hours(0))])
        await settle_worker(worker_engine)
        assert await sync.drain() == 1
        faults.revoke_tokens()  # the EHR ends the token early: the next write meets a 401
        await ingest(worker_engine, [visit.raw("A08", "SMART-2", hours(2), location="5EAST")])
        await settle_worker(worker_engine)
        assert await sync.drain(settle_backoff=True, timeout=30) == 1
        (status,) = sync.status()
    counted = faults.requests()["by_type"]
    assert counted["token"] == 2  # one token, then one fresh assertion after the 401
    assert counted["unauthorised"] == 1
    assert status.stats.sent == 2
    assert status.stats.failed == 0
    assert (await outbox_states(worker_engine)) == {"sent": 2}
    faults.disable_auth()  # the check reads the server without a token
    await _assert_delivered_once(worker_engine, faults.base_url)


async def test_a_key_the_ehr_does_not_know_leaves_the_rows_waiting(
    worker_engine: AsyncEngine, faulty_fhir_server: FhirFaults, tmp_path: Path
) -> None:
    faults = faulty_fhir_server
    _, registered = _key(tmp_path, "registered")
    other, _ = _key(tmp_path, "other")
    faults.require_auth("cm-fhir-sync", jwks=registered)
    auth = EndpointAuth(kind="smart-backend", client_id="cm-fhir-sync", key_file=other)
    await ingest(
        worker_engine, [Visit(mrn="MRN-SMART-2", visit="VSMART2").raw("A01", "S-3", hours(0))]
    )
    await settle_worker(worker_engine)
    async with sync_worker(worker_engine, faults.base_url, auth=auth) as sync:
        await sync.drain()
        (status,) = sync.status()
    assert status.stats.sent == 0
    assert status.stats.failed == 0
    assert (await outbox_states(worker_engine)) == {"pending": 1}
    counted = faults.requests()["by_type"]
    assert counted.get("transaction") is None  # no write got past the token endpoint
    assert counted["token"] >= 1
