"""Killing the listener process (SIGKILL) mid-burst loses no message it acknowledged AA.

Runs ``cm-fhir listen`` as a subprocess on a temporary SQLite file, drives several concurrent
senders, kills the process without warning while they are busy, then opens the file again and
checks that every control id that got an AA is in the inbox.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from sqlalchemy import select

from cm_fhir.mllp_client import MllpClient, read_ack
from cm_fhir.store.engine import make_engine
from cm_fhir.store.tables import inbox_messages
from hl7v2_samples import evn, msh, pid, pv1

SENDERS = 6
KILL_AFTER_ACKS = 300


async def start_listener(database: Path) -> tuple[asyncio.subprocess.Process, int]:
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "cm-fhir"),
        "listen",
        "--port",
        "0",
        "--database-url",
        f"sqlite+aiosqlite:///{database}",
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
