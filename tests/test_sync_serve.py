"""``cm-fhir serve --ehr-url URL`` as a real process, with no other setting: an ADT sequence sent
over MLLP (an admission, a transfer, a discharge) ends on the test FHIR server, every resource
once and as cm-fhir holds it, Tasks included; the endpoint, its breaker and the sync counts show
in ``/api/outbox/endpoints`` and ``/metrics``. The sync role without an endpoint is refused with
a one-line error."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from cm_fhir.mllp_client import MllpClient, read_ack
from live_api import start_serve
from sync_fixtures import search_url
from workflow_messages import Visit, hours

CLI = str(Path(sys.executable).parent / "cm-fhir")


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CM_FHIR_")}


async def _start(tmp_path: Path, *extra: str) -> tuple[asyncio.subprocess.Process, dict[str, str]]:
    serve = await start_serve(tmp_path / "data", *extra, stderr=asyncio.subprocess.PIPE)
    return serve.process, serve.found()


def _content(value: Any) -> Any:
    """A resource without what the server assigns (id, meta) or resolves (references)."""
    if isinstance(value, dict):
        return {k: _content(v) for k, v in value.items() if k not in ("id", "meta", "reference")}
    if isinstance(value, list):
        return [_content(v) for v in value]
    return value


async def _served(http: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    """cm-fhir's own resources of the run, by ``Type|system|value`` (its /fhir facade)."""
    out = {}
    for rtype in ("EpisodeOfCare", "CareTeam", "CarePlan", "Task"):
        bundle = (await http.get(f"/fhir/{rtype}", params={"_count": "100"})).json()
        for entry in bundle.get("entry") or []:
            resource = entry["resource"]
            ident = resource["identifier"][0]
            out[f"{rtype}|{ident['system']}|{ident['value']}"] = resource
    return out


async def test_serve_with_ehr_url_delivers_an_adt_sequence_over_mllp(
    tmp_path: Path, fhir_server: str
) -> None:
    process, found = await _start(tmp_path, "--ehr-url", fhir_server)
    assert found["endpoints"] == "default"
    visit = Visit(mrn=f"MRN-SRV-{uuid.uuid4().hex[:6]}", visit="VSRV1")
    feed = [
        visit.raw("A01", "SRV1", hours(0)),
        visit.raw("A02", "SRV2", hours(5), location="5EAST", prior_location="4WEST"),
        visit.raw("A03", "SRV3", hours(30), location="5EAST"),
    ]
    try:
        async with await MllpClient.connect("127.0.0.1", int(found["mllp_port"])) as client:
            for message in feed:
                assert read_ack(await client.send(message, timeout=10))[0].code == "AA"
        headers = {"Authorization": f"Bearer {found['key']}"}
        async with httpx.AsyncClient(base_url=found["url"], headers=headers) as http:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                counts = (await http.get("/api/outbox")).json()["counts"]
                waiting = sum(c["count"] for c in counts if c["state"] == "pending")
                messages = (await http.get("/api/messages")).json()["items"]
                if not waiting and all(m["state"] != "received" for m in messages):
                    break
                await asyncio.sleep(0.2)
            ours = await _served(http)
            assert any(key.startswith("Task|") for key in ours), "the admission made no Task"
            async with httpx.AsyncClient() as ehr:
                for key, resource in ours.items():
                    bundle = (await ehr.get(search_url(fhir_server, key))).json()
                    theirs = [e["resource"] for e in bundle.get("entry") or []]
                    assert len(theirs) == 1, f"{key}: {len(theirs)} on the EHR"
                    assert _content(theirs[0]) == _content(resource), key
            (endpoint,) = (await http.get("/api/outbox/endpoints")).json()
            assert endpoint["name"] == "default"
            assert endpoint["base_url"] == fhir_server
            assert endpoint["auth"] == "none"
            assert endpoint["delivery"]["breaker"] == "closed"
            assert endpoint["delivery"]["sent"] >= 1
            metrics = (await http.get("/metrics")).text
            assert 'cm_fhir_sync_circuit_breaker{endpoint="default",state="closed"} 1.0' in metrics
            assert 'cm_fhir_outbox_depth{endpoint="default",state="sent"}' in metrics
    finally:
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(40):
            _, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()[-2000:]


async def test_serve_refuses_the_sync_role_without_an_endpoint(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        CLI,
        "serve",
        "--role",
        "sync",
        "--data-dir",
        str(tmp_path / "data"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(),
    )
    async with asyncio.timeout(30):
        _, stderr = await process.communicate()
    assert process.returncode != 0
    message = stderr.decode().strip().splitlines()
    assert len(message) == 1
    assert "--ehr-url" in message[0]
