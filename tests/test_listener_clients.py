"""Third-party and command-line clients against the listener: python-hl7's ``mllp_send`` and
``cm-fhir adt send`` (both run as subprocesses over loopback)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from cm_fhir.hl7v2.framing import Frame, MllpFramer
from cm_fhir.listener import MllpListener
from cm_fhir.mllp_client import read_ack
from cm_fhir.store.tables import inbox_messages
from hl7v2_samples import BATCH, evn, msh, pid, pv1

BIN = Path(sys.executable).parent


def adt(control_id: str, event: str = "A01") -> str:
    return "\r".join([msh(event, "2.5.1", control_id=control_id), evn(event), pid(), pv1()])


async def run(*args: str) -> tuple[int, bytes, bytes]:
    process = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, stdout, stderr


async def stored_control_ids(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as connection:
        query = select(inbox_messages.c.control_id).order_by(inbox_messages.c.id)
        return [str(c) for c in (await connection.execute(query)).scalars()]


async def test_python_hl7_mllp_send(
    running_listener: MllpListener, inbox_engine: AsyncEngine, tmp_path: Path
) -> None:
    # --loose splits a plain file on "MSH|^~\&|" and turns LF into CR; one recv(4096) per message.
    source = tmp_path / "messages.hl7"
    source.write_text("\n".join(adt(f"PY-{n}").replace("\r", "\n") for n in range(3)) + "\n")
    status, out, err = await run(
        str(BIN / "mllp_send"),
        "--loose",
        "--file",
        str(source),
        "-p",
        str(running_listener.port),
        "127.0.0.1",
    )
    assert status == 0, err.decode()
    events = MllpFramer().feed(out)
    acks = [read_ack(e.payload)[0] for e in events if isinstance(e, Frame)]
    assert [(a.code, a.control_id) for a in acks] == [("AA", f"PY-{n}") for n in range(3)]
    assert await stored_control_ids(inbox_engine) == ["PY-0", "PY-1", "PY-2"]


async def test_adt_send_prints_each_ack_and_exit_status(
    running_listener: MllpListener, inbox_engine: AsyncEngine, tmp_path: Path
) -> None:
    good = tmp_path / "good.hl7"
    good.write_text(adt("CLI-1") + "\n" + adt("CLI-2", event="A03"))
    batch = tmp_path / "batch.hl7"
    batch.write_text(BATCH.replace("\r", "\r\n"))
    port = str(running_listener.port)

    status, out, err = await run(
        str(BIN / "cm-fhir"), "adt", "send", str(good), str(batch), "--port", port
    )
    assert status == 0, err.decode()
    lines = out.decode().splitlines()
    assert [line.split()[1:] for line in lines if "#" in line] == [
        ["CLI-1", "AA"],
        ["CLI-2", "AA"],
        ["CTRL-0001", "AA"],
        ["CTRL-0002", "AA"],
    ]
    assert [line for line in lines if "#" not in line] == [
        f"{good}: 2 frame(s), 2 accepted, 0 not accepted, 0 without ACK (MSH-15)",
        f"{batch}: 2 frame(s), 2 accepted, 0 not accepted, 0 without ACK (MSH-15)",
    ]

    refused = tmp_path / "oru.hl7"
    refused.write_text(adt("CLI-3").replace("ADT^A01", "ORU^R01"))
    status, out, _ = await run(str(BIN / "cm-fhir"), "adt", "send", str(refused), "--port", port)
    assert status == 1
    assert out.decode().splitlines()[0].split()[1:] == ["CLI-3", "AR", "ERR", "200"]
    assert await stored_control_ids(inbox_engine) == [
        "CLI-1",
        "CLI-2",
        "CTRL-0001",
        "CTRL-0002",
        "CLI-3",
    ]


async def test_adt_send_reports_an_unreachable_listener(tmp_path: Path) -> None:
    source = tmp_path / "one.hl7"
    source.write_text(adt("X-1"))
    status, _, err = await run(
        str(BIN / "cm-fhir"), "adt", "send", str(source), "--port", "1", "--timeout", "2"
    )
    assert status == 1
    assert b"cannot reach" in err
