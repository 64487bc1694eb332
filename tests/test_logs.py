"""Logs an operator can use: ``cm-fhir serve --log-format json`` as a real process (MLLP socket,
HTTP with bearer tokens), one line per message received and per outcome, request ids, no PHI and
no tokens in any line; the formatters and the quiet libraries."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from cm_fhir.errors import ConfigError
from cm_fhir.logs import JsonFormatter, LogFormat, TextFormatter, configure_logging, request_id
from cm_fhir.mllp_client import MllpClient, read_ack
from cm_fhir.settings import load_settings
from workflow_messages import Visit

CLI = str(Path(sys.executable).parent / "cm-fhir")
TOKEN = "logs-test-token-Q7v9Xk2mLpR4sT8w"
BAD_TOKEN = "not-a-valid-token-Zq3Wn8Yb5Hc1Jd6e"
# Patient data that must never reach a log line.
SURNAME = "QUIXOTEFIELD"
GIVEN = "ZEBEDIAH"
MRN = "MRN88776655"
BIRTH = "19410227"
PHI = (SURNAME, GIVEN, MRN, BIRTH, "TESTPATIENT", "MEM-778")


def _adt(control_id: str, event: str = "A01", *, mrn: str = MRN) -> str:
    text = Visit(mrn=mrn, visit=f"V{control_id[-4:]}", birth="19480304").raw(
        event, control_id, datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    )
    return text.replace("TESTPATIENT^ALPHA", f"{SURNAME}^{GIVEN}").replace("19480304", BIRTH)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    chatty = {name: logging.getLogger(name).level for name in ("alembic", "uvicorn.error")}
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    for name, level in chatty.items():
        logging.getLogger(name).setLevel(level)


def _record(message: str, *args: Any, **extra: Any) -> logging.LogRecord:
    record = logging.LogRecord("cm_fhir.test", logging.INFO, __file__, 1, message, args, None)
    record.__dict__.update(extra)
    return record


def test_json_lines_carry_time_level_logger_message_and_fields() -> None:
    line = json.loads(JsonFormatter().format(_record("message %s", "received", inbox_id=7)))
    assert line["level"] == "INFO"
    assert line["logger"] == "cm_fhir.test"
    assert line["message"] == "message received"
    assert line["inbox_id"] == 7
    assert datetime.fromisoformat(line["time"]).tzinfo is not None
    token = request_id.set("req-1")
    try:
        assert json.loads(JsonFormatter().format(_record("x")))["request_id"] == "req-1"
        assert "request_id=req-1" in TextFormatter().format(_record("x"))
    finally:
        request_id.reset(token)


def test_an_exception_is_logged_by_type_and_frames_never_by_its_message() -> None:
    try:
        raise ValueError(f"could not parse PID-5 {SURNAME}")
    except ValueError:
        record = logging.LogRecord(
            "cm_fhir.test", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )
    for text in (JsonFormatter().format(record), TextFormatter().format(record)):
        assert "ValueError" in text
        assert SURNAME not in text
    assert "\n" not in JsonFormatter().format(record)


def test_alembic_and_uvicorn_are_quiet_at_info_and_heard_at_debug(
    restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("INFO", LogFormat.JSON)
    logging.getLogger("alembic.runtime.migration").info("Running upgrade 0004 -> 0005")
    logging.getLogger("uvicorn.error").info("Started server process")
    logging.getLogger("cm_fhir.test").info("ours", extra={"inbox_id": 1})
    lines = capsys.readouterr().err.splitlines()
    assert [json.loads(line)["message"] for line in lines] == ["ours"]
    configure_logging("debug", "text")
    logging.getLogger("alembic.runtime.migration").info("Running upgrade 0004 -> 0005")
    assert "Running upgrade" in capsys.readouterr().err
    with pytest.raises(ValueError, match="log level"):
        configure_logging("LOUD")


def test_log_settings_from_environment_and_their_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CM_FHIR_LOG__FORMAT", "json")
    monkeypatch.setenv("CM_FHIR_LOG__LEVEL", "warning")
    settings = load_settings()
    assert (settings.log.format, settings.log.level) == (LogFormat.JSON, "WARNING")
    monkeypatch.setenv("CM_FHIR_LOG__FORMAT", "xml")
    with pytest.raises(ConfigError, match=r"log\.format"):
        load_settings()
    monkeypatch.delenv("CM_FHIR_LOG__FORMAT")
    with pytest.raises(ConfigError, match=r"log\.level"):
        load_settings(overrides={"log": {"level": "LOUD"}})


async def test_the_api_echoes_a_sane_request_id_and_replaces_any_other(
    api_client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cm_fhir.api.access")
    sane = await api_client.get("/api/messages", headers={"X-Request-ID": "trace-42.a:b_c-d"})
    assert sane.headers["x-request-id"] == "trace-42.a:b_c-d"
    for hostile in ("has space", "x" * 65, "semi;colon", "ümlaut".encode()):
        answer = await api_client.get("/api/messages", headers={"X-Request-ID": hostile})
        rid = answer.headers["x-request-id"]
        assert rid != hostile
        assert len(rid) == 32
    refused = await api_client.get("/api/messages", headers={"Authorization": "Bearer nope"})
    assert refused.status_code == 401
    assert refused.headers["x-request-id"]
    access = [r for r in caplog.records if r.name == "cm_fhir.api.access"]
    assert access[0].__dict__["route"] == "/api/messages"
    assert {r.__dict__.get("status") for r in access} >= {200, 401}
    # every access line carries the id of its own request
    ids = [JsonFormatter().format(r) for r in access]
    assert '"request_id": "trace-42.a:b_c-d"' in ids[0]


# -- the real process ------------------------------------------------------------------------


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CM_FHIR_")}
    env["CM_FHIR_API_KEYS"] = TOKEN
    env["CM_FHIR_WORKER__POLL_INTERVAL"] = "0.1"
    return env


async def _start(tmp_path: Path) -> tuple[asyncio.subprocess.Process, dict[str, str], list[str]]:
    process = await asyncio.create_subprocess_exec(
        CLI,
        "serve",
        "--http-port",
        "0",
        "--mllp-port",
        "0",
        "--data-dir",
        str(tmp_path / "data"),
        "--log-format",
        "json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(tmp_path),
    )
    assert process.stdout is not None
    found: dict[str, str] = {}
    banner: list[str] = []
    async with asyncio.timeout(60):
        while True:
            raw = (await process.stdout.readline()).decode()
            assert raw, "serve exited before it was ready"
            banner.append(raw)
            message = json.loads(raw)["message"]
            if message.startswith("cm-fhir api on "):
                found["url"] = message.split()[3]
            elif message.startswith("cm-fhir listening on "):
                found["mllp_port"] = message.rsplit(":", 1)[1].strip()
            elif message.startswith("cm-fhir ready"):
                return process, found, banner


async def _exercise(found: dict[str, str]) -> list[str]:
    """Messages over MLLP and HTTP (good, unparseable, unsupported), requests with tokens."""
    control_ids = ["LOGS-0001", "LOGS-0002", "LOGS-0003"]
    async with await MllpClient.connect("127.0.0.1", int(found["mllp_port"])) as client:
        codes = [
            read_ack(await client.send(_adt(control_ids[0]), timeout=10))[0].code,
            read_ack(await client.send(_adt(control_ids[1], "A08"), timeout=10))[0].code,
            # a message whose PID is garbage: refused at the door (AE), stored as refused
            read_ack(
                await client.send(
                    _adt(control_ids[2]).replace("PID|1|", f"PID|1|{SURNAME}\x1a~~^^&&|"),
                    timeout=10,
                )
            )[0].code,
        ]
        assert codes == ["AA", "AA", "AE"], codes
        # an unreadable frame: no MSH at all, only patient data
        await client.send(f"PID|1||{MRN}||{SURNAME}^{GIVEN}", timeout=10)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=found["url"], headers=headers) as http:
        answer = await http.post(
            "/api/hl7v2",
            content=_adt("LOGS-0004").encode(),
            headers={"Content-Type": "x-application/hl7-v2+er7"},
        )
        assert answer.status_code == 200, answer.text
        control_ids.append("LOGS-0004")
        refused = await http.get("/api/messages", headers={"Authorization": f"Bearer {BAD_TOKEN}"})
        assert refused.status_code == 401
        # patient data in a query string must not be logged either
        searched = await http.get("/fhir/Patient", params={"identifier": MRN, "name": SURNAME})
        assert searched.status_code < 500
        deadline = asyncio.get_running_loop().time() + 30
        while asyncio.get_running_loop().time() < deadline:
            items = (await http.get("/api/messages", params={"limit": 50})).json()["items"]
            if len(items) >= 5 and all(m["state"] != "received" for m in items):
                break
            await asyncio.sleep(0.2)
        assert all(m["state"] != "received" for m in items), items
    return control_ids


async def test_serve_json_logs_name_every_message_and_hold_no_phi_or_tokens(
    tmp_path: Path,
) -> None:
    process, found, banner = await _start(tmp_path)
    try:
        control_ids = await _exercise(found)
    finally:
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            stdout, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()[-2000:]
    text = "".join(banner) + stdout.decode() + stderr.decode()
    for secret in (*PHI, TOKEN, BAD_TOKEN):
        assert secret not in text, f"{secret} appears in the output"
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]  # all JSON
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    received = [line for line in lines if line["message"] == "message received"]
    outcomes = [line for line in lines if line["logger"] == "cm_fhir.worker.outcome"]
    for control_id in control_ids:
        [got] = [line for line in received if line["control_id"] == control_id]
        assert got["sender"] == "ADTSYS|NORTHSIDE"
        assert isinstance(got["inbox_id"], int)
        settled = [o["inbox_id"] for o in outcomes if o["control_id"] == control_id]
        if control_id == "LOGS-0003":  # refused at the door: never reaches the worker
            assert (got["ack_code"], got["state"], settled) == ("AE", "refused", [])
        else:
            assert got["ack_code"] == "AA"
            assert settled == [got["inbox_id"]]
    first = next(o for o in outcomes if o["control_id"] == "LOGS-0001")
    assert first["state"] == "processed"
    assert first["rule"]
    assert first["case_id"]
    unreadable = [line for line in received if line["control_id"] is None]
    assert [line["ack_code"] for line in unreadable] == ["AE"]
    access = [line for line in lines if line["logger"] == "cm_fhir.api.access"]
    assert all(len(line["request_id"]) == 32 for line in access)
    assert {line["status"] for line in access} >= {200, 401}
    assert not [line for line in lines if line["logger"].startswith(("alembic", "uvicorn"))]
