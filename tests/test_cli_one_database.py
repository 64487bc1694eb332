"""Issue 11's done-when, as a user runs it: in a fresh folder, ``cm-fhir serve``, then (next to the
running service) ``replay --all``, ``replay --dead-letter``, ``db upgrade`` and
``adt inspect --dry-run`` all use one database, with no flag naming it. Real processes, real
MLLP and HTTP."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from cm_fhir.cli import app
from cm_fhir.demo_feed import demo_feed
from cm_fhir.mllp_client import MllpClient, read_ack
from live_api import start_serve

CLI = str(Path(sys.executable).parent / "cm-fhir")


def _env() -> dict[str, str]:
    return {
        k: v for k, v in os.environ.items() if not k.startswith("CM_FHIR_") and k != "DATABASE_URL"
    }


async def _cli(folder: Path, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        CLI,
        *args,
        cwd=folder,
        env=_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(90):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def _start_serve(folder: Path) -> tuple[asyncio.subprocess.Process, dict[str, str]]:
    serve = await start_serve(None, cwd=folder, log_level="INFO", stderr=asyncio.subprocess.PIPE)
    return serve.process, serve.found()


async def _settled(http: httpx.AsyncClient, count: int) -> list[dict[str, object]]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        items: list[dict[str, object]] = (await http.get("/api/messages")).json()["items"]
        if len(items) == count and all(m["state"] == "processed" for m in items):
            return items
        await asyncio.sleep(0.2)
    raise AssertionError(f"the inbox did not settle: {items}")


async def test_serve_replay_upgrade_and_dry_run_share_one_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    admission = demo_feed()[0]
    message_file = tmp_path / "admission.hl7"
    message_file.write_text(admission.text)
    # What a dry run of the admission shows on an empty database: a new case.
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    monkeypatch.chdir(empty)
    for name in [n for n in os.environ if n.startswith("CM_FHIR_") or n == "DATABASE_URL"]:
        monkeypatch.delenv(name)
    result = await asyncio.to_thread(
        CliRunner().invoke, app, ["adt", "inspect", "--dry-run", str(message_file)]
    )
    assert result.exit_code == 0
    assert "(new) ->" in result.output
    assert list(empty.iterdir()) == []  # the dry run created no database

    folder = tmp_path / "site"
    folder.mkdir()
    process, found = await _start_serve(folder)
    try:
        async with await MllpClient.connect("127.0.0.1", int(found["mllp_port"])) as client:
            ack = read_ack(await client.send(admission.text, timeout=20))
        assert ack[0].code == "AA"
        headers = {"Authorization": f"Bearer {found['key']}"}
        async with httpx.AsyncClient(base_url=found["url"], headers=headers) as http:
            await _settled(http, 1)

            status, out, err = await _cli(folder, "replay", "--all")
            assert (status, out) == (0, "1 row(s) back in the queue\n"), err
            await _settled(http, 1)  # the running worker processed it again

            status, out, err = await _cli(folder, "replay", "--dead-letter", "1")
            assert status == 1
            assert err == "error: inbox row 1 is not a dead letter\n"

            status, out, err = await _cli(folder, "db", "upgrade")
            assert status == 0, err
            database = folder / "cm-fhir-data" / "cm-fhir.sqlite3"
            assert out.startswith(f"{database.resolve()}: already at the latest revision")

            status, out, err = await _cli(folder, "adt", "inspect", "--dry-run", str(message_file))
            assert status == 0, err
            assert "(new) ->" not in out  # it compared against the stored case
            assert "note: no database" not in err
    finally:
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            _, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()[-2000:]
    # serve migrated the fresh database at INFO without Alembic's per-revision lines
    assert "alembic" not in stderr.decode()
    assert "cm_fhir" in stderr.decode()  # while INFO lines of cm-fhir itself are there
    assert sorted(p.relative_to(folder) for p in folder.rglob("*.sqlite3")) == [
        Path("cm-fhir-data/cm-fhir.sqlite3")
    ]
