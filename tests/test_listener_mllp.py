"""The MLLP listener over real loopback sockets, on SQLite and PostgreSQL: persist-before-ACK,
framing on the wire, limits, TLS, dedup, ACK codes per message kind, batches, storage failure."""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from cm_fhir.hl7v2.framing import frame
from cm_fhir.listener import ListenerConfig, MllpListener
from cm_fhir.mllp_client import MllpClient, read_ack
from cm_fhir.store.tables import inbox_messages
from cm_fhir.store.writer import InboxWriter
from hl7v2_samples import BATCH, NOT_HL7, evn, msh, pid, pv1
from tls_certs import self_signed


def adt(control_id: str, event: str = "A01", mrn: str = "MRN1", msh_extra: str = "") -> str:
    header = msh(event, "2.5.1", control_id=control_id) + msh_extra
    return "\r".join([header, evn(event), pid(mrn), pv1()])


async def rows(engine: AsyncEngine) -> list[dict[str, object]]:
    async with engine.connect() as connection:
        result = await connection.execute(select(inbox_messages).order_by(inbox_messages.c.id))
        return [dict(row._mapping) for row in result]


async def test_ack_is_sent_after_the_row_is_committed(
    running_listener: MllpListener, inbox_engine: AsyncEngine
) -> None:
    async with await MllpClient.connect("127.0.0.1", running_listener.port) as client:
        reply = await client.send(adt("C-1"))
        # The ACK has arrived: the row must already be visible to another connection.
        stored = await rows(inbox_engine)
    [summary] = read_ack(reply)
    assert (summary.code, summary.control_id) == ("AA", "C-1")
    assert len(stored) == 1
    row = stored[0]
    assert row["state"] == "received"
    assert row["raw"] == adt("C-1").encode()
    assert row["ack_bytes"] == reply
    assert (row["message_type"], row["trigger_event"], row["patient_key"]) == (
        "ADT",
        "A01",
        "MRN1^NSH",
    )


async def test_many_connections_many_messages(
    running_listener: MllpListener, inbox_engine: AsyncEngine
) -> None:
    async def sender(n: int) -> list[str]:
        async with await MllpClient.connect("127.0.0.1", running_listener.port) as client:
            return [
                read_ack(await client.send(adt(f"S{n}-{m}", mrn=f"M{n}")))[0].code
                for m in range(15)
            ]

    codes = await asyncio.gather(*(sender(n) for n in range(12)))
    assert all(code == "AA" for per_sender in codes for code in per_sender)
    stored = await rows(inbox_engine)
    assert len(stored) == 180
    # Per connection, rows keep the order the sender used.
    for n in range(12):
        mine = [r["control_id"] for r in stored if r["patient_key"] == f"M{n}^NSH"]
        assert mine == [f"S{n}-{m}" for m in range(15)]


async def test_frames_split_into_single_bytes_with_garbage_between(
    running_listener: MllpListener,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", running_listener.port)
    stream = b"\r\n junk" + frame(adt("B-1").encode()) + b"\x00\xff" + frame(adt("B-2").encode())
    for i in range(len(stream)):
        writer.write(stream[i : i + 1])
        await writer.drain()
    client = MllpClient(reader, writer)
    acks = [read_ack(await client.receive(timeout=10))[0] for _ in range(2)]
    await client.close()
    assert [(a.code, a.control_id) for a in acks] == [("AA", "B-1"), ("AA", "B-2")]


@pytest.fixture
def small_limit_config(listener_config: ListenerConfig) -> ListenerConfig:
    return dataclasses.replace(listener_config, max_message_bytes=2000)


async def test_oversize_message_gets_ar_and_the_connection_stays_usable(
    inbox_engine: AsyncEngine, small_limit_config: ListenerConfig
) -> None:
    async with InboxWriter(inbox_engine) as writer:
        listener = MllpListener(small_limit_config, writer)
        await listener.start()
        try:
            big = adt("BIG-1") + "\rNTE|1||" + "x" * 5000
            async with await MllpClient.connect("127.0.0.1", listener.port) as client:
                [rejected] = read_ack(await client.send(big, timeout=10))
                [accepted] = read_ack(await client.send(adt("OK-1"), timeout=10))
        finally:
            await listener.stop()
    assert (rejected.code, rejected.control_id, rejected.error_code) == ("AR", "BIG-1", "207")
    assert (accepted.code, accepted.control_id) == ("AA", "OK-1")
    assert [r["control_id"] for r in await rows(inbox_engine)] == ["OK-1"]


async def test_idle_connection_is_closed_and_limit_refuses_extra_connections(
    inbox_engine: AsyncEngine, listener_config: ListenerConfig
) -> None:
    config = dataclasses.replace(listener_config, idle_timeout=0.5, max_connections=2)
    async with InboxWriter(inbox_engine) as writer:
        listener = MllpListener(config, writer)
        await listener.start()
        try:
            clients = [await MllpClient.connect("127.0.0.1", listener.port) for _ in range(2)]
            for n, client in enumerate(clients):
                await client.send(adt(f"L{n}"), timeout=5)
            extra_reader, extra_writer = await asyncio.open_connection("127.0.0.1", listener.port)
            assert await asyncio.wait_for(extra_reader.read(100), 5) == b""  # closed at once
            extra_writer.close()
            started = asyncio.get_running_loop().time()
            with pytest.raises(ConnectionError):
                await clients[0].receive(timeout=5)  # no traffic: closed by the idle timeout
            assert asyncio.get_running_loop().time() - started < 3
            for client in clients:
                await client.close()
        finally:
            await listener.stop()
    assert listener.stats.refused_connections == 1


async def test_tls(
    inbox_engine: AsyncEngine, listener_config: ListenerConfig, tmp_path: Path
) -> None:
    cert, key = self_signed(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    client_context = ssl.create_default_context(cafile=str(cert))
    config = dataclasses.replace(listener_config, ssl_context=server_context)
    async with InboxWriter(inbox_engine) as writer:
        listener = MllpListener(config, writer)
        await listener.start()
        try:
            async with await MllpClient.connect(
                "127.0.0.1", listener.port, ssl_context=client_context
            ) as client:
                [summary] = read_ack(await client.send(adt("TLS-1"), timeout=10))
            # A plaintext sender gets no ACK and nothing is stored.
            plain_reader, plain_writer = await asyncio.open_connection("127.0.0.1", listener.port)
            plain_writer.write(frame(adt("PLAIN-1").encode()))
            answer = await asyncio.wait_for(plain_reader.read(100), 5)
            plain_writer.close()
        finally:
            await listener.stop()
    assert (summary.code, summary.control_id) == ("AA", "TLS-1")
    assert b"MSA" not in answer
    assert [r["control_id"] for r in await rows(inbox_engine)] == ["TLS-1"]


async def test_duplicate_gets_the_original_ack_and_is_stored_once(
    running_listener: MllpListener, inbox_engine: AsyncEngine
) -> None:
    async with await MllpClient.connect("127.0.0.1", running_listener.port) as client:
        first = await client.send(adt("D-1"))
        second = await client.send(adt("D-1"))
        reused = await client.send(adt("D-1", mrn="OTHER"))
    assert second == first
    assert read_ack(reused)[0].code == "AA"
    assert reused != first
    stored = await rows(inbox_engine)
    assert [(r["control_id"], r["control_id_reused"]) for r in stored] == [
        ("D-1", False),
        ("D-1", True),
    ]


@pytest.mark.parametrize(
    ("payload", "code", "error", "state"),
    [
        (adt("K-1").replace("ADT^A01", "ORU^R01"), "AR", "200", "refused"),
        (adt("K-2", event="A31"), "AA", None, "ignored"),
        (adt("K-3").replace("|K-3|", "||"), "AE", "101", "refused"),
        (NOT_HL7.decode(), "AE", "100", "refused"),
        (adt("K-5", msh_extra="|||AL|NE"), "CA", None, "received"),
        (adt("K-6").replace("|2.5.1", "|3.0"), "AR", "203", "refused"),
    ],
)
async def test_ack_code_and_state_per_message_kind(
    running_listener: MllpListener,
    inbox_engine: AsyncEngine,
    payload: str,
    code: str,
    error: str | None,
    state: str,
) -> None:
    async with await MllpClient.connect("127.0.0.1", running_listener.port) as client:
        [summary] = read_ack(await client.send(payload))
    assert (summary.code, summary.error_code) == (code, error)
    [row] = await rows(inbox_engine)
    assert row["state"] == state
    assert row["raw"] == payload.encode()


async def test_enhanced_mode_never_and_error_only_conditions(
    running_listener: MllpListener, inbox_engine: AsyncEngine
) -> None:
    async with await MllpClient.connect("127.0.0.1", running_listener.port) as client:
        await client.send_only(adt("E-1", msh_extra="|||NE|NE"))
        await client.send_only(adt("E-2", msh_extra="|||ER|NE"))
        rejected = adt("E-3", msh_extra="|||ER|NE").replace("ADT^A01", "ORU^R01")
        [summary] = read_ack(await client.send(rejected))
    # E-1 and E-2 were stored without an answer; the first answer is E-3's commit reject.
    assert (summary.code, summary.control_id, summary.error_code) == ("CR", "E-3", "200")
    assert [r["control_id"] for r in await rows(inbox_engine)] == ["E-1", "E-2", "E-3"]


async def test_batch_gets_one_batch_ack_with_an_ack_per_message(
    running_listener: MllpListener, inbox_engine: AsyncEngine
) -> None:
    async with await MllpClient.connect("127.0.0.1", running_listener.port) as client:
        reply = await client.send(BATCH)
    assert reply.startswith(b"FHS|")
    assert reply.rstrip(b"\r").endswith(b"BTS|2\rFTS|1")
    assert [(s.code, s.control_id) for s in read_ack(reply)] == [
        ("AA", "CTRL-0001"),
        ("AA", "CTRL-0002"),
    ]
    assert [r["trigger_event"] for r in await rows(inbox_engine)] == ["A01", "A08"]


async def test_storage_failure_gives_ar_never_aa(
    running_listener: MllpListener, inbox_engine: AsyncEngine
) -> None:
    async with inbox_engine.begin() as connection:
        await connection.execute(text("ALTER TABLE inbox_message RENAME TO inbox_message_away"))
    try:
        async with await MllpClient.connect("127.0.0.1", running_listener.port) as client:
            [original] = read_ack(await client.send(adt("F-1")))
            [enhanced] = read_ack(await client.send(adt("F-2", msh_extra="|||AL|NE")))
    finally:
        async with inbox_engine.begin() as connection:
            await connection.execute(text("ALTER TABLE inbox_message_away RENAME TO inbox_message"))
    assert (original.code, original.error_code) == ("AR", "207")
    assert (enhanced.code, enhanced.error_code) == ("CE", "207")
    assert await rows(inbox_engine) == []


async def test_stop_refuses_new_connections(
    inbox_engine: AsyncEngine, listener_config: ListenerConfig
) -> None:
    async with InboxWriter(inbox_engine) as writer:
        listener = MllpListener(listener_config, writer)
        await listener.start()
        port = listener.port
        idle = await MllpClient.connect("127.0.0.1", port)
        await idle.send(adt("ST-1"))
        await listener.stop()
        with pytest.raises(ConnectionError):
            await idle.receive(timeout=5)
        await idle.close()
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)


async def test_pipelined_frames_are_answered_in_order(
    running_listener: MllpListener, inbox_engine: AsyncEngine
) -> None:
    async with await MllpClient.connect("127.0.0.1", running_listener.port) as client:
        for n in range(20):
            await client.send_only(adt(f"P-{n}"))
        answers = [read_ack(await client.receive())[0].control_id for _ in range(20)]
    assert answers == [f"P-{n}" for n in range(20)]
    assert [r["control_id"] for r in await rows(inbox_engine)] == answers


async def test_sender_gone_before_its_ack_finds_the_message_stored_on_resend(
    running_listener: MllpListener, inbox_engine: AsyncEngine
) -> None:
    gone = await MllpClient.connect("127.0.0.1", running_listener.port)
    await gone.send_only(adt("G-1"))
    await gone.close()
    async with await MllpClient.connect("127.0.0.1", running_listener.port) as client:
        reply = await client.send(adt("G-1"))
    stored = await rows(inbox_engine)
    assert len(stored) == 1
    assert stored[0]["ack_bytes"] == reply
    assert read_ack(reply)[0].code == "AA"
