"""``cm-fhir serve`` as a real process: free ports, ADT over a real socket, graceful SIGTERM;
refusal of an unmigrated PostgreSQL schema and of an unauthenticated public bind."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from cm_fhir.demo_feed import demo_feed
from cm_fhir.errors import ConfigError
from cm_fhir.mapping.registry import load_registry
from cm_fhir.mllp_client import MllpClient, read_ack
from cm_fhir.profiles import default_validator, error_issues
from cm_fhir.service import Service
from cm_fhir.settings import load_settings
from inbox_fixtures import PG_URL, _pg_admin
from live_api import start_serve

CLI = str(Path(sys.executable).parent / "cm-fhir")


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CM_FHIR_")}


async def _start(tmp_path: Path) -> tuple[asyncio.subprocess.Process, dict[str, str]]:
    serve = await start_serve(tmp_path / "data", stderr=asyncio.subprocess.PIPE)
    return serve.process, serve.found()


async def test_serve_ingests_over_mllp_processes_and_stops_gracefully(tmp_path: Path) -> None:
    process, found = await _start(tmp_path)
    try:
        # Two admissions that qualify for discharge planning, and one that does not.
        feed = demo_feed()[:3]
        messages = [m.text for m in feed]
        async with await MllpClient.connect("127.0.0.1", int(found["mllp_port"])) as client:
            codes = [read_ack(await client.send(m, timeout=10))[0].code for m in messages]
        assert codes == ["AA", "AA", "AA"]
        headers = {"Authorization": f"Bearer {found['key']}"}
        async with httpx.AsyncClient(base_url=found["url"], headers=headers) as http:
            assert (await http.get("/ready")).status_code == 200
            assert (
                await http.get("/api/messages", headers={"Authorization": ""})
            ).status_code == 401
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                items = (await http.get("/api/messages")).json()["items"]
                if all(m["state"] != "received" for m in items):
                    break
                await asyncio.sleep(0.2)
            assert sorted(m["control_id"] for m in items) == [m.control_id for m in feed]
            assert {m["state"] for m in items} == {"processed"}
            outbox = (await http.get("/api/outbox")).json()["counts"]
            assert sum(c["count"] for c in outbox) >= 2  # two cases became FHIR writes
            await _check_fhir_tasks(http)
    finally:
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            _, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()[-2000:]


async def _check_fhir_tasks(http: httpx.AsyncClient) -> None:
    """The Tasks the admissions created, read through the /fhir facade, conform to our profiles."""
    answer = await http.get("/fhir/Task", params={"_count": "50"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/fhir+json")
    bundle = answer.json()
    assert bundle["type"] == "searchset"
    tasks = [e["resource"] for e in bundle.get("entry", [])]
    codes = sorted(t["code"]["coding"][0]["code"] for t in tasks)
    # each qualifying admission: an initial assessment (and a payer notification when IN1 is sent)
    assert codes.count("initial-assessment") == 2, codes
    validator = default_validator()
    for task in tasks:
        assert task["meta"]["profile"] == [load_registry().profile("task")]
        assert error_issues(validator.validate(task)) == [], task["id"]
        # the facade serves what the mapper emits: the id follows from the business identifier
        ident = task["identifier"][0]
        again = await http.get(
            "/fhir/Task", params={"identifier": f"{ident['system']}|{ident['value']}"}
        )
        assert [e["resource"]["id"] for e in again.json()["entry"]] == [task["id"]]


async def test_serve_refuses_an_unmigrated_postgresql_schema(tmp_path: Path) -> None:
    schema = f"cmfhir_empty_{uuid.uuid4().hex[:10]}"
    try:
        await _pg_admin(f'CREATE SCHEMA "{schema}"')
    except Exception as exc:
        pytest.skip(f"PostgreSQL unreachable: {type(exc).__name__}")
    try:
        env = {**_env(), "CM_FHIR_DATABASE_SCHEMA": schema}
        process = await asyncio.create_subprocess_exec(
            CLI,
            "serve",
            "--database-url",
            PG_URL,
            "--http-port",
            "0",
            "--mllp-port",
            "0",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        async with asyncio.timeout(30):
            stdout, stderr = await process.communicate()
    finally:
        await _pg_admin(f'DROP SCHEMA "{schema}" CASCADE')
    assert process.returncode == 2
    error = stderr.decode()
    assert "has no cm-fhir schema" in error
    assert "cm-fhir db upgrade" in error
    assert "ready" not in stdout.decode()


def test_public_bind_without_credentials_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CM_FHIR_API_KEYS", "CM_FHIR_AUTH__JWKS_URL"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings(overrides={"http": {"host": "0.0.0.0"}})
    with pytest.raises(ConfigError, match="only bind to localhost"):
        Service(settings)
    local = Service(load_settings())
    assert local.info.generated_api_key is not None
    assert [k.get_secret_value() for k in local.settings.api_keys] == [local.info.generated_api_key]
