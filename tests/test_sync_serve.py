"""``cm-fhir serve --ehr-url URL`` as a real process, with no other setting: an admission sent over
MLLP ends as its Tasks on the test FHIR server; the endpoint, its breaker and the sync counts show
in ``/api/outbox/endpoints`` and ``/metrics``; a second start with a conflicting endpoint name is
refused with a one-line error."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import httpx

from cm_fhir.mllp_client import MllpClient, read_ack
from sync_fixtures import search_url
from workflow_messages import Visit, hours

CLI = str(Path(sys.executable).parent / "cm-fhir")


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CM_FHIR_")}


async def _start(tmp_path: Path, *extra: str) -> tuple[asyncio.subprocess.Process, dict[str, str]]:
    process = await asyncio.create_subprocess_exec(
        CLI,
        "serve",
        "--http-port",
        "0",
        "--mllp-port",
        "0",
        "--data-dir",
        str(tmp_path / "data"),
        "--log-level",
        "WARNING",
        *extra,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(),
    )
    assert process.stdout is not None
    found: dict[str, str] = {}
    async with asyncio.timeout(30):
        while True:
            line = (await process.stdout.readline()).decode()
            assert line, "serve exited before it was ready"
            if line.startswith("cm-fhir api on "):
                found["url"] = line.split()[3]
            elif line.startswith("cm-fhir listening on "):
                found["mllp_port"] = line.rsplit(":", 1)[1].strip()
            elif line.startswith("cm-fhir API key"):
                found["key"] = line.split()[-1]
            elif line.startswith("cm-fhir sync to FHIR endpoint(s): "):
                found["endpoints"] = line.split(": ", 1)[1].strip()
            elif line.startswith("cm-fhir ready"):
                return process, found


async def test_serve_with_ehr_url_delivers_an_admissions_tasks(
    tmp_path: Path, fhir_server: str
) -> None:
    process, found = await _start(tmp_path, "--ehr-url", fhir_server)
    assert found["endpoints"] == "default"
    visit = Visit(mrn="MRN-SRV1", visit="VSRV1")
    try:
        async with await MllpClient.connect("127.0.0.1", int(found["mllp_port"])) as client:
            ack = await client.send(visit.raw("A01", "SRV1", hours(0)), timeout=10)
        assert read_ack(ack)[0].code == "AA"
        headers = {"Authorization": f"Bearer {found['key']}"}
        async with httpx.AsyncClient(base_url=found["url"], headers=headers) as http:
            deadline = time.monotonic() + 30
            tasks: list[dict[str, object]] = []
            while time.monotonic() < deadline:
                served = (await http.get("/fhir/Task", params={"_count": "50"})).json()
                ids = [e["resource"]["identifier"][0] for e in served.get("entry", [])]
                if ids:
                    async with httpx.AsyncClient() as ehr:
                        tasks = []
                        for ident in ids:
                            key = f"Task|{ident['system']}|{ident['value']}"
                            bundle = (await ehr.get(search_url(fhir_server, key))).json()
                            tasks += [e["resource"] for e in bundle.get("entry") or []]
                    if len(tasks) == len(ids):
                        break
                await asyncio.sleep(0.2)
            assert tasks, "no Task of the admission reached the FHIR server"
            assert all(t["resourceType"] == "Task" for t in tasks)
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
