"""Nothing received whole is lost when a sender closes, over real sockets on SQLite and PostgreSQL.

A sender that writes frames and half-closes gets every ACK, in order, then the listener closes; one
that closes at once finds every complete frame stored; a frame cut off by the close is counted.
``cm-fhir adt send`` reads every ACK before it closes, honours MSH-15, reports per file and keeps
going after a bad file; ``--raw`` sends a file byte for byte as one frame.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from cm_fhir.hl7v2.framing import Frame, MllpFramer, frame
from cm_fhir.listener import MllpListener
from cm_fhir.mllp_client import read_ack
from hl7v2_samples import BATCH, NOT_HL7, evn, msh, pid, pv1
from inbox_fixtures import stored_rows, wait_for_rows

CM_FHIR = str(Path(sys.executable).parent / "cm-fhir")


def adt(control_id: str, msh_extra: str = "") -> bytes:
    header = msh("A01", "2.5.1", control_id=control_id) + msh_extra
    return "\r".join([header, evn("A01"), pid(), pv1()]).encode()


async def raw_connection(port: int, source: str) -> socket.socket:
    """A blocking-free plain socket bound to ``source`` (acting as that peer)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source, 0))
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return sock


async def read_to_end(sock: socket.socket, timeout: float = 10.0) -> list[bytes]:
    """Every frame the listener sends until it closes the connection."""
    loop = asyncio.get_running_loop()
    framer, payloads = MllpFramer(), []
    async with asyncio.timeout(timeout):
        while data := await loop.sock_recv(sock, 65536):
            payloads += [e.payload for e in framer.feed(data) if isinstance(e, Frame)]
    return payloads


async def test_half_close_after_five_frames_gets_five_acks_in_order(
    running_listener: MllpListener, inbox_engine: AsyncEngine
) -> None:
    sock = await raw_connection(running_listener.port, "127.0.0.2")
    burst = b"".join(frame(adt(f"HC-{n}")) for n in range(5))
    await asyncio.get_running_loop().sock_sendall(sock, burst)
    sock.shutdown(socket.SHUT_WR)
    answers = await read_to_end(sock)  # returns once the listener has closed its side
    sock.close()
    assert [(a.code, a.control_id) for p in answers for a in read_ack(p)] == [
        ("AA", f"HC-{n}") for n in range(5)
    ]
    assert [r["control_id"] for r in await stored_rows(inbox_engine)] == [
        f"HC-{n}" for n in range(5)
    ]


async def test_close_at_once_stores_every_complete_frame_and_counts_the_cut_one(
    running_listener: MllpListener, inbox_engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    sock = await raw_connection(running_listener.port, "127.0.0.2")
    burst = b"".join(frame(adt(f"CL-{n}")) for n in range(5)) + b"\x0bMSH|^~\\&|cut off"
    await asyncio.get_running_loop().sock_sendall(sock, burst)
    sock.close()
    stored = await wait_for_rows(inbox_engine, 5)
    assert [r["control_id"] for r in stored] == [f"CL-{n}" for n in range(5)]
    for _ in range(100):  # the connection's end is noticed a moment after the last commit
        if running_listener.stats.incomplete_frames:
            break
        await asyncio.sleep(0.05)
    assert running_listener.stats.incomplete_frames == 1
    [logged] = [r.getMessage() for r in caplog.records if "incomplete frame" in r.getMessage()]
    assert "127.0.0.2" in logged
    assert "MSH" not in logged  # the size is logged, never the content
    await asyncio.sleep(0.2)
    assert len(await stored_rows(inbox_engine)) == 5  # the cut-off frame is not stored


async def run(*args: str, timeout: float = 60) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        CM_FHIR, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_adt_send_waits_only_for_acks_msh15_promises(
    running_listener: MllpListener, inbox_engine: AsyncEngine, tmp_path: Path
) -> None:
    # ER: an ACK only on error; NE: never. The rejected ORU's CR arrives after later messages.
    er_ok = adt("ER-1", "|||ER|NE").decode()
    er_bad = adt("ER-2", "|||ER|NE").decode().replace("ADT^A01", "ORU^R01")
    ne = adt("NE-1", "|||NE|NE").decode()
    source = tmp_path / "enhanced.hl7"
    source.write_text("\n".join([er_ok, er_bad, ne]))
    started = asyncio.get_running_loop().time()
    port = str(running_listener.port)
    status, out, _ = await run("adt", "send", str(source), "--port", port, "--timeout", "45")
    elapsed = asyncio.get_running_loop().time() - started
    assert status == 1
    assert elapsed < 40  # no wait of --timeout for an ACK that MSH-15 says will not come
    lines = out.splitlines()
    assert f"{source}#2 ER-2 CR ERR 200" in lines
    assert lines[-1] == f"{source}: 3 frame(s), 0 accepted, 1 not accepted, 2 without ACK (MSH-15)"
    assert [r["control_id"] for r in await stored_rows(inbox_engine)] == ["ER-1", "ER-2", "NE-1"]


async def test_adt_send_matches_an_er_reject_arriving_before_the_next_ack(
    running_listener: MllpListener, tmp_path: Path
) -> None:
    er_bad = adt("EB-1", "|||ER|NE").decode().replace("ADT^A01", "ORU^R01")
    source = tmp_path / "mixed.hl7"
    source.write_text("\n".join([er_bad, adt("AL-1").decode()]))
    status, out, _ = await run("adt", "send", str(source), "--port", str(running_listener.port))
    assert status == 1
    lines = out.splitlines()
    assert f"{source}#1 EB-1 CR ERR 200" in lines
    assert f"{source}#2 AL-1 AA" in lines
    assert lines[-1] == f"{source}: 2 frame(s), 1 accepted, 1 not accepted, 0 without ACK (MSH-15)"


async def test_adt_send_counts_a_silent_su_message_as_not_accepted(
    running_listener: MllpListener, tmp_path: Path
) -> None:
    su_ok = adt("SU-1", "|||SU|NE").decode()
    su_bad = adt("SU-2", "|||SU|NE").decode().replace("ADT^A01", "ORU^R01")  # CR: not sent
    al_ok = adt("AL-1", "|||AL|NE").decode()
    source = tmp_path / "su.hl7"
    source.write_text("\n".join([su_ok, su_bad, al_ok]))
    status, out, _ = await run("adt", "send", str(source), "--port", str(running_listener.port))
    assert status == 1
    lines = out.splitlines()
    assert f"{source}#1 SU-1 CA" in lines
    assert f"{source}#2 SU-2 no ACK (MSH-15 SU: not accepted)" in lines
    assert f"{source}#3 AL-1 CA" in lines
    assert lines[-1] == f"{source}: 3 frame(s), 2 accepted, 1 not accepted, 0 without ACK (MSH-15)"


async def test_adt_send_reports_per_file_and_goes_on_after_a_bad_one(
    running_listener: MllpListener, inbox_engine: AsyncEngine, tmp_path: Path
) -> None:
    missing = tmp_path / "missing.hl7"
    junk = tmp_path / "junk.hl7"
    junk.write_bytes(NOT_HL7)
    good = tmp_path / "good.hl7"
    good.write_bytes(adt("PF-1"))
    status, out, err = await run(
        "adt", "send", str(missing), str(junk), str(good), "--port", str(running_listener.port)
    )
    assert status == 2  # a file could not be read: unusable input, as for `adt inspect`
    assert f"{missing}: cannot read" in err
    assert f"{junk}: " in err  # not HL7: named, not sent
    assert f"{good}#1 PF-1 AA" in out.splitlines()
    assert [r["control_id"] for r in await stored_rows(inbox_engine)] == ["PF-1"]


async def test_adt_send_raw_sends_each_file_byte_for_byte_as_one_frame(
    running_listener: MllpListener, inbox_engine: AsyncEngine, tmp_path: Path
) -> None:
    batch = tmp_path / "batch.hl7"
    batch.write_bytes(BATCH.encode())
    junk = tmp_path / "junk.bin"
    junk.write_bytes(NOT_HL7)
    pair = tmp_path / "pair.hl7"  # two messages back to back, no batch header: two ACK frames
    pair.write_bytes(adt("RP-1") + b"\r" + adt("RP-2"))
    port = str(running_listener.port)
    status, out, _ = await run(
        "adt", "send", "--raw", str(batch), str(junk), str(pair), "--port", port
    )
    assert status == 1  # the junk frame is answered AE
    lines = out.splitlines()
    assert f"{batch} CTRL-0001 AA" in lines
    assert f"{batch} CTRL-0002 AA" in lines
    assert f"{junk} - AE ERR 100" in lines
    assert [line for line in lines if line.startswith(f"{pair} ")] == [
        f"{pair} RP-1 AA",
        f"{pair} RP-2 AA",
    ]
    stored = await stored_rows(inbox_engine)
    assert [r["control_id"] for r in stored] == ["CTRL-0001", "CTRL-0002", None, "RP-1", "RP-2"]
    assert stored[2]["raw"] == NOT_HL7  # the whole frame, as sent
