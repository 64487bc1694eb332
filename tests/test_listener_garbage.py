"""Garbage does not fill the disk: unreadable frames are answered AE but stored capped (a prefix,
the SHA-256 of the whole and its length), and a peer that keeps sending them is refused for a
cool-down. Real sockets on SQLite and PostgreSQL; peers on distinct loopback addresses."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os

from sqlalchemy.ext.asyncio import AsyncEngine

from cm_fhir.listener import ListenerConfig
from cm_fhir.mllp_client import MllpClient, read_ack
from hl7v2_samples import evn, msh, pid, pv1
from inbox_fixtures import listening, stored_rows

ATTACKER, EHR = "127.0.0.2", "127.0.0.3"


def adt(control_id: str) -> str:
    return "\r".join([msh("A01", "2.5.1", control_id=control_id), evn("A01"), pid(), pv1()])


async def test_fifty_junk_megabytes_store_a_few_kilobytes(
    inbox_engine: AsyncEngine, listener_config: ListenerConfig
) -> None:
    config = dataclasses.replace(listener_config, max_message_bytes=2_000_000, unreadable_limit=0)
    junk = [os.urandom(1_000_000).replace(b"\x0b", b"").replace(b"\x1c", b"") for _ in range(50)]
    async with (
        listening(inbox_engine, config) as listener,
        await MllpClient.connect("127.0.0.1", listener.port, local_address=ATTACKER) as client,
    ):
        codes = [read_ack(await client.send(j, timeout=30))[0] for j in junk]
    assert {(c.code, c.error_code) for c in codes} == {("AE", "100")}
    stored = await stored_rows(inbox_engine)
    assert len(stored) == 50
    assert sum(len(r["raw"]) for r in stored) <= 50 * 4096  # 49 MB before
    for row, original in zip(stored, junk, strict=True):
        assert row["raw"] == original[:4096]
        assert row["content_sha256"] == hashlib.sha256(original).hexdigest()
        assert f"first 4096 of {len(original)} bytes" in str(row["reason"])
        assert row["state"] == "refused"
    assert listener.stats.unreadable_messages == 50


async def test_a_peer_sending_unreadable_frames_cools_down(
    inbox_engine: AsyncEngine, listener_config: ListenerConfig
) -> None:
    config = dataclasses.replace(
        listener_config, unreadable_limit=3, unreadable_window=60, cooldown=3.0
    )
    async with listening(inbox_engine, config) as listener:
        port = listener.port
        async with await MllpClient.connect("127.0.0.1", port, local_address=ATTACKER) as client:
            answers = [read_ack(await client.send(b"garbage %d" % n))[0].code for n in range(3)]
            assert await client.receive_or_end(timeout=5) is None  # closed after the third
        again = await MllpClient.connect("127.0.0.1", port, local_address=ATTACKER)
        assert await again.receive_or_end(timeout=5) is None  # closed at accept
        await again.close()
        async with await MllpClient.connect("127.0.0.1", port, local_address=EHR) as ehr:
            [ok] = read_ack(await ehr.send(adt("EHR-1")))
        await asyncio.sleep(3.1)  # the cool-down is over
        async with await MllpClient.connect("127.0.0.1", port, local_address=ATTACKER) as back:
            [back_ok] = read_ack(await back.send(adt("BACK-1")))
    assert answers == ["AE", "AE", "AE"]
    assert (ok.code, back_ok.code) == ("AA", "AA")
    assert (listener.stats.cooldowns, listener.stats.refused_cooling_down) == (1, 1)


async def test_a_broken_msh_is_capped_like_any_garbage(
    inbox_engine: AsyncEngine, listener_config: ListenerConfig
) -> None:
    broken = b"MSHA" + b"\xff" * 10_000  # begins like a message, MSH-1 unreadable
    async with (
        listening(inbox_engine, listener_config) as listener,
        await MllpClient.connect("127.0.0.1", listener.port) as client,
    ):
        [answer] = read_ack(await client.send(broken))
    [row] = await stored_rows(inbox_engine)
    assert (answer.code, answer.error_code) == ("AE", "100")
    assert row["raw"] == broken[:4096]
    assert row["content_sha256"] == hashlib.sha256(broken).hexdigest()
    assert "first 4096 of 10004 bytes" in str(row["reason"])
