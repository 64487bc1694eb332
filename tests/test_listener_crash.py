"""``cm-fhir listen`` as a process: SIGKILL mid-burst loses no message it acknowledged AA;
SIGTERM stops it cleanly; TLS from the command line; ``cm-fhir db upgrade``.

The crash test runs the listener on a temporary SQLite file, drives several concurrent senders,
kills the process without warning while they are busy, then opens the file again and checks that
every control id that got an AA is in the inbox.
"""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import sys
from pathlib import Path

from sqlalchemy import select

from cm_fhir.mllp_client import MllpClient, read_ack
from cm_fhir.store.engine import make_engine
from cm_fhir.store.tables import inbox_messages
from hl7v2_samples import evn, msh, pid, pv1
from tls_certs import self_signed

SENDERS = 6
KILL_AFTER_ACKS = 300


CM_FHIR = str(Path(sys.executable).parent / "cm-fhir")


async def start_listener(database: Path, *extra: str) -> tuple[asyncio.subprocess.Process, int]:
    process = await asyncio.create_subprocess_exec(
        CM_FHIR,
        "listen",
        "--port",
        "0",
        "--database-url",
        f"sqlite+aiosqlite:///{database}",
        *extra,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert process.stdout is not None
    async with asyncio.timeout(30):
        while True:
            line = (await process.stdout.readline()).decode()
            assert line, "listener exited before it was ready"
            if line.startswith("cm-fhir listening on "):
                return process, int(line.rsplit(":", 1)[1])


async def test_sigkill_mid_burst_loses_no_acknowledged_message(tmp_path: Path) -> None:
    database = tmp_path / "crash.sqlite3"
    process, port = await start_listener(database)
    acknowledged: list[str] = []
    enough = asyncio.Event()

    async def sender(n: int) -> None:
        try:
            async with await MllpClient.connect("127.0.0.1", port) as client:
                for m in range(100_000):
                    control_id = f"K{n}-{m}"
                    message = "\r".join(
                        [
                            msh("A08", "2.5.1", control_id=control_id),
                            evn("A08"),
                            pid(f"P{n}"),
                            pv1(),
                        ]
                    )
                    reply = await client.send(message, timeout=10)
                    if read_ack(reply)[0].code == "AA":
                        acknowledged.append(control_id)
                    if len(acknowledged) >= KILL_AFTER_ACKS:
                        enough.set()
        except (ConnectionError, OSError, TimeoutError):
            return  # the listener died under us: expected

    tasks = [asyncio.create_task(sender(n)) for n in range(SENDERS)]
    try:
        await asyncio.wait_for(enough.wait(), 60)
        os.kill(process.pid, signal.SIGKILL)
        await asyncio.wait_for(process.wait(), 10)
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == -signal.SIGKILL
    assert len(acknowledged) >= KILL_AFTER_ACKS

    engine = make_engine(f"sqlite+aiosqlite:///{database}")
    try:
        async with engine.connect() as connection:
            stored = set((await connection.execute(select(inbox_messages.c.control_id))).scalars())
    finally:
        await engine.dispose()
    missing = [c for c in acknowledged if c not in stored]
    assert missing == []


async def stored_control_ids(database: Path) -> set[str]:
    engine = make_engine(f"sqlite+aiosqlite:///{database}")
    try:
        async with engine.connect() as connection:
            query = select(inbox_messages.c.control_id)
            return set((await connection.execute(query)).scalars())
    finally:
        await engine.dispose()


async def test_tls_listener_and_adt_send_then_sigterm_stops_cleanly(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    database = tmp_path / "tls.sqlite3"
    process, port = await start_listener(
        database, "--tls-cert", str(cert), "--tls-key", str(key), "--idle-timeout", "30"
    )
    try:
        source = tmp_path / "two.hl7"
        source.write_text(
            "\n".join(
                "\r".join([msh("A01", "2.5.1", control_id=f"T-{n}"), evn("A01"), pid(), pv1()])
                for n in range(2)
            )
        )
        sender = await asyncio.create_subprocess_exec(
            CM_FHIR,
            "adt",
            "send",
            str(source),
            "--port",
            str(port),
            "--host",
            "localhost",
            "--ca-file",
            str(cert),
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await asyncio.wait_for(sender.communicate(), 60)
        assert sender.returncode == 0
        assert [line.split()[1:] for line in out.decode().splitlines() if "#" in line] == [
            ["T-0", "AA"],
            ["T-1", "AA"],
        ]
        # An open, idle connection must not keep SIGTERM from stopping the listener.
        idle = await MllpClient.connect(
            "localhost", port, ssl_context=ssl.create_default_context(cafile=str(cert))
        )
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 15) == 0
        await idle.close()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert await stored_control_ids(database) == {"T-0", "T-1"}


async def test_db_upgrade_command(tmp_path: Path) -> None:
    database = tmp_path / "fresh.sqlite3"
    upgrade = await asyncio.create_subprocess_exec(
        CM_FHIR,
        "db",
        "upgrade",
        "--database-url",
        f"sqlite+aiosqlite:///{database}",
        stdout=asyncio.subprocess.PIPE,
    )
    await asyncio.wait_for(upgrade.communicate(), 60)
    assert upgrade.returncode == 0
    assert await stored_control_ids(database) == set()  # the table exists and is empty
