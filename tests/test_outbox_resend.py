"""``cm-fhir outbox resend`` as a real process against the test FHIR server (SQLite, PostgreSQL).

A write the server refused is ``failed``; once the cause is gone, ``outbox resend`` sends it and
the server holds it; ``--all`` sends every case again and creates no duplicate. Bad options get a
one-line error.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import orjson
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from cm_fhir.cli import app
from cm_fhir.store.case_tables import outbox
from inbox_fixtures import Database
from sync_fixtures import expected_identifiers, on_server, outbox_states, sync_worker
from worker_fixtures import ingest, settle_worker
from workflow_messages import Visit, hours

CLI = str(Path(sys.executable).parent / "cm-fhir")


async def _cli(database: Database, *args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CM_FHIR_")}
    env["CM_FHIR_DATABASE_URL"] = database.url
    if database.search_path is not None:
        env["CM_FHIR_DATABASE_SCHEMA"] = database.search_path
    process = await asyncio.create_subprocess_exec(
        CLI,
        "outbox",
        "resend",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    async with asyncio.timeout(120):
        out, err = await process.communicate()
    return int(process.returncode or 0), out.decode(), err.decode()


async def test_resend_sends_what_failed_and_all_again_without_duplicates(
    database: Database, worker_engine: AsyncEngine, fhir_server: str
) -> None:
    visits = [Visit(mrn=f"MRN-RS-{n}", visit=f"VRS{n}") for n in range(2)]
    await ingest(worker_engine, [v.raw("A01", f"RS-{n}", hours(0)) for n, v in enumerate(visits)])
    await settle_worker(worker_engine)
    # The EHR refuses one patient's Bundle (an invalid status) ...
    async with worker_engine.begin() as connection:
        row = (
            await connection.execute(
                select(outbox.c.id, outbox.c.bundle).where(outbox.c.patient_key.like("%RS-0%"))
            )
        ).one()
        broken = orjson.loads(row.bundle)
        broken["entry"][0]["resource"]["status"] = "no-such-status"
        await connection.execute(
            update(outbox).where(outbox.c.id == row.id).values(bundle=orjson.dumps(broken))
        )
    async with sync_worker(worker_engine, fhir_server) as sync:
        await sync.drain()
    assert await outbox_states(worker_engine) == {"failed": 1, "sent": 1}
    # ... until the cause is fixed; then a resend of what failed delivers it.
    async with worker_engine.begin() as connection:
        await connection.execute(
            update(outbox).where(outbox.c.id == row.id).values(bundle=row.bundle)
        )
    code, out, err = await _cli(database, "--ehr-url", fhir_server)
    assert code == 0, err
    assert "marked 1 outbox row(s)" in out
    assert "sent 1, failed 0" in out
    assert await outbox_states(worker_engine) == {"sent": 2}

    code, out, err = await _cli(database, "--all", "--ehr-url", fhir_server)
    assert code == 0, err
    assert "marked 2 outbox row(s)" in out
    assert "sent 2, failed 0" in out
    wanted = sorted(await expected_identifiers(worker_engine))
    found = await on_server(fhir_server, wanted)
    assert all(len(resources) == 1 for resources in found.values()), found.keys()


def test_resend_refuses_bad_options_in_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    data = ["--data-dir", str(tmp_path)]
    result = runner.invoke(app, ["outbox", "resend", "--since", "yesterday-ish", *data])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: --since: not an ISO date or time: 'yesterday-ish'"
    ]
    result = runner.invoke(app, ["outbox", "resend", "--endpoint", "nowhere", *data])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: --endpoint: no endpoint named 'nowhere' in the settings"
    ]
