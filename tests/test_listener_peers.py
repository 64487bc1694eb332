"""One peer cannot lock out the EHR: limits per address and per TLS identity, a frame deadline, an
idle timeout that counts whole frames, address and sender allowlists, mutual TLS, and no public
bind without protection. Real sockets; peers act from distinct loopback addresses (127.0.0.2 is
the attacker, 127.0.0.3 the EHR)."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import ssl
import sys
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from cm_fhir.errors import ConfigError
from cm_fhir.listener import ListenerConfig, server_tls_context
from cm_fhir.mllp_client import MllpClient, read_ack
from cm_fhir.service import Service
from cm_fhir.settings import Role, load_settings
from hl7v2_samples import evn, msh, pid, pv1
from inbox_fixtures import Database, listening, stored_rows
from tls_certs import CertificateAuthority, self_signed


@pytest.fixture
def database(tmp_path: Path) -> Database:
    """Admission does not depend on the database: SQLite only, to keep the suite fast."""
    return Database(f"sqlite+aiosqlite:///{tmp_path / 'inbox.sqlite3'}")


ATTACKER, EHR = "127.0.0.2", "127.0.0.3"


def adt(control_id: str, msh_extra: str = "") -> str:
    header = msh("A01", "2.5.1", control_id=control_id) + msh_extra
    return "\r".join([header, evn("A01"), pid(), pv1()])


async def connect(port: int, source: str, context: ssl.SSLContext | None = None) -> MllpClient:
    host = "localhost" if context else "127.0.0.1"
    return await MllpClient.connect(host, port, local_address=source, ssl_context=context)


async def closed_at_once(client: MllpClient) -> bool:
    """True when the listener closes the connection without a word."""
    try:
        return await client.receive_or_end(timeout=5) is None
    except (ConnectionError, ssl.SSLError):
        return True
    finally:
        await client.close()


async def ehr_gets_aa(port: int, control_id: str, context: ssl.SSLContext | None = None) -> None:
    async with await connect(port, EHR, context) as client:
        [summary] = read_ack(await client.send(adt(control_id), timeout=10))
    assert (summary.code, summary.control_id) == ("AA", control_id)


async def test_one_address_cannot_take_every_slot(
    inbox_engine: AsyncEngine, listener_config: ListenerConfig
) -> None:
    config = dataclasses.replace(listener_config, max_connections=6, max_connections_per_peer=3)
    async with listening(inbox_engine, config) as listener:
        held = [await connect(listener.port, ATTACKER) for _ in range(3)]
        extra = [await connect(listener.port, ATTACKER) for _ in range(3)]
        assert all([await closed_at_once(c) for c in extra])
        await ehr_gets_aa(listener.port, "EHR-1")
        for client in held:
            await client.close()
    assert listener.stats.refused_peer_limit == 3


async def test_a_dripping_frame_is_cut_off_at_its_deadline(
    inbox_engine: AsyncEngine, listener_config: ListenerConfig
) -> None:
    config = dataclasses.replace(listener_config, frame_timeout=0.5, idle_timeout=30)
    async with listening(inbox_engine, config) as listener:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", listener.port, local_addr=(ATTACKER, 0)
        )
        started = asyncio.get_running_loop().time()
        message = b"\x0b" + adt("DRIP-1").encode()
        closed = False
        for byte in message:  # one byte every 50 ms: every byte arrives well within any timer
            writer.write(bytes([byte]))
            await asyncio.sleep(0.05)
            if reader.at_eof() or writer.is_closing():
                closed = True
                break
            try:
                if await asyncio.wait_for(reader.read(1), 0.001) == b"":
                    closed = True
                    break
            except TimeoutError:
                pass
        elapsed = asyncio.get_running_loop().time() - started
        writer.close()
        await ehr_gets_aa(listener.port, "EHR-2")
    assert closed
    assert elapsed < 3
    assert (listener.stats.frame_timeouts, listener.stats.incomplete_frames) == (1, 1)
    assert [r["control_id"] for r in await stored_rows(inbox_engine)] == ["EHR-2"]


async def test_bytes_that_make_no_frame_do_not_keep_a_connection_open(
    inbox_engine: AsyncEngine, listener_config: ListenerConfig
) -> None:
    config = dataclasses.replace(listener_config, idle_timeout=0.6, frame_timeout=30)
    async with listening(inbox_engine, config) as listener:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", listener.port, local_addr=(ATTACKER, 0)
        )
        started = asyncio.get_running_loop().time()
        closed_after = None
        for _ in range(100):  # junk outside any frame every 50 ms, for 5 s or more
            writer.write(b"x")
            try:
                if await asyncio.wait_for(reader.read(1), 0.05) == b"":
                    closed_after = asyncio.get_running_loop().time() - started
                    break
            except TimeoutError:
                pass
        writer.close()
    assert closed_after is not None
    assert closed_after < 3
    assert listener.stats.idle_closes == 1


async def test_a_sender_of_whole_frames_outlives_the_idle_timeout(
    inbox_engine: AsyncEngine, listener_config: ListenerConfig
) -> None:
    # The idle timer is not moved for every frame: when it fires it measures from the last one.
    config = dataclasses.replace(listener_config, idle_timeout=0.5, frame_timeout=30)
    async with (
        listening(inbox_engine, config) as listener,
        await connect(listener.port, EHR) as client,
    ):
        for number in range(8):  # a frame every 0.2 s for 1.6 s: never 0.5 s without one
            [summary] = read_ack(await client.send(adt(f"KEEP-{number}"), timeout=10))
            assert summary.code == "AA"
            await asyncio.sleep(0.2)
        assert listener.stats.idle_closes == 0
        started = asyncio.get_running_loop().time()
        assert await client.receive_or_end(timeout=5) is None  # then quiet: closed
        assert asyncio.get_running_loop().time() - started < 2
    assert listener.stats.idle_closes == 1


async def test_address_allowlist_closes_others_at_accept(
    inbox_engine: AsyncEngine, listener_config: ListenerConfig
) -> None:
    config = dataclasses.replace(
        listener_config, allowed_networks=(ipaddress.ip_network("127.0.0.3/32"),)
    )
    async with listening(inbox_engine, config) as listener:
        outsider = await connect(listener.port, ATTACKER)
        await outsider.send_only(adt("OUT-1"))
        assert await closed_at_once(outsider)
        await ehr_gets_aa(listener.port, "IN-1")
    assert listener.stats.refused_not_allowed == 1
    refusal, stored = await stored_rows(inbox_engine)
    assert stored["control_id"] == "IN-1"
    # the refusal is written down for the operator: who and why, no message (none was read)
    assert (refusal["state"], refusal["peer"], refusal["raw"]) == ("refused", ATTACKER, b"")
    assert refusal["reason"] == "connection refused at accept: not_allowed"


async def test_refused_connections_are_recorded_once_per_address_and_minute(
    inbox_engine: AsyncEngine, listener_config: ListenerConfig
) -> None:
    config = dataclasses.replace(
        listener_config, allowed_networks=(ipaddress.ip_network("127.0.0.3/32"),)
    )
    async with listening(inbox_engine, config) as listener:
        for _ in range(20):
            assert await closed_at_once(await connect(listener.port, ATTACKER))
    assert listener.stats.refused_not_allowed == 20
    rows = await stored_rows(inbox_engine)
    assert [(r["state"], r["peer"]) for r in rows] == [("refused", ATTACKER)]


async def test_sender_allowlist_refuses_other_msh3_msh4_and_keeps_no_body(
    inbox_engine: AsyncEngine, listener_config: ListenerConfig
) -> None:
    config = dataclasses.replace(listener_config, allowed_senders=("ADTSYS|NORTHSIDE",))
    other = adt("SND-2").replace("ADTSYS|NORTHSIDE", "LABSYS|NORTHSIDE")
    enhanced = adt("SND-3", "|||AL|NE").replace("ADTSYS|NORTHSIDE", "ADTSYS|ELSEWHERE")
    async with (
        listening(inbox_engine, config) as listener,
        await connect(listener.port, EHR) as client,
    ):
        [allowed] = read_ack(await client.send(adt("SND-1")))
        [refused] = read_ack(await client.send(other))
        [refused_enhanced] = read_ack(await client.send(enhanced))
        for n in range(5):  # a flood from the same sender is recorded once a minute
            [again] = read_ack(await client.send(other.replace("SND-2", f"SND-2{n}")))
            assert again.code == "AR"
    assert (allowed.code, allowed.error_code) == ("AA", None)
    assert (refused.code, refused.control_id, refused.error_code) == ("AR", "SND-2", "207")
    assert (refused_enhanced.code, refused_enhanced.error_code) == ("CR", "207")
    rows = await stored_rows(inbox_engine)
    assert [(r["control_id"], r["state"]) for r in rows] == [
        ("SND-1", "received"),
        (None, "refused"),  # no control id: not a duplicate of anything sent later
        (None, "refused"),
    ]
    for row, control_id in zip(rows[1:], ("SND-2", "SND-3"), strict=True):
        # the header says who was turned away; the body (PHI) is not kept
        assert (row["raw"], row["patient_key"]) == (b"", None)
        assert str(row["reason"]).startswith("MSH-3/MSH-4 outside mllp.allowed_senders")
        assert str(row["reason"]).endswith(f"(MSH-10 {control_id})")
    assert (rows[1]["sending_application"], rows[1]["ack_code"]) == ("LABSYS", "AR")
    assert listener.stats.refused_senders == 7
    # once the sender is allowed, the very message it was refused is accepted
    async with (
        listening(inbox_engine, listener_config) as listener,
        await connect(listener.port, EHR) as client,
    ):
        [accepted] = read_ack(await client.send(other))
    assert (accepted.code, accepted.control_id) == ("AA", "SND-2")


async def try_to_send(port: int, context: ssl.SSLContext) -> None:
    client = await connect(port, ATTACKER, context)
    try:
        await client.send(adt("MTLS-X"), timeout=5)
    finally:
        await client.close()


def _server(tmp_path: Path, ca: CertificateAuthority) -> ssl.SSLContext:
    cert, key = self_signed(tmp_path)
    context = server_tls_context(cert, key, ca.cert_path)
    assert context is not None
    return context


def _client(server_cert: Path, cert: tuple[Path, Path] | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(server_cert))
    if cert is not None:
        context.load_cert_chain(*cert)
    return context


async def test_mutual_tls_requires_a_client_certificate_from_the_ca(
    inbox_engine: AsyncEngine, listener_config: ListenerConfig, tmp_path: Path
) -> None:
    ca = CertificateAuthority(tmp_path)
    stranger_ca = CertificateAuthority(tmp_path, "other-ca")
    config = dataclasses.replace(listener_config, ssl_context=_server(tmp_path, ca))
    server_cert = tmp_path / "cert.pem"
    async with listening(inbox_engine, config) as listener:
        await ehr_gets_aa(listener.port, "MTLS-1", _client(server_cert, ca.client("ehr")))
        for cert in (None, stranger_ca.client("ehr")):
            with pytest.raises((ssl.SSLError, ConnectionError)):
                await try_to_send(listener.port, _client(server_cert, cert))
    assert [r["control_id"] for r in await stored_rows(inbox_engine)] == ["MTLS-1"]


async def test_one_client_certificate_is_limited_across_addresses(
    inbox_engine: AsyncEngine, listener_config: ListenerConfig, tmp_path: Path
) -> None:
    ca = CertificateAuthority(tmp_path)
    config = dataclasses.replace(
        listener_config, ssl_context=_server(tmp_path, ca), max_connections_per_peer=2
    )
    server_cert = tmp_path / "cert.pem"
    shared = _client(server_cert, ca.client("leaked"))
    async with listening(inbox_engine, config) as listener:
        held = [await connect(listener.port, f"127.0.0.{n}", shared) for n in (4, 5)]
        for client in held:  # admitted: they are answered
            await client.send(adt(f"ID-{id(client)}"), timeout=10)
        third = await connect(listener.port, "127.0.0.6", shared)
        assert await closed_at_once(third)
        await ehr_gets_aa(listener.port, "ID-EHR", _client(server_cert, ca.client("ehr")))
        for client in held:
            await client.close()
    assert listener.stats.refused_peer_limit == 1


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
async def test_public_bind_needs_tls_an_allowlist_or_consent(
    inbox_engine: AsyncEngine, listener_config: ListenerConfig, tmp_path: Path, host: str
) -> None:
    bare = dataclasses.replace(listener_config, host=host)
    with pytest.raises(ConfigError, match="allow_public_bind"):
        async with listening(inbox_engine, bare):
            pass
    cert, key = self_signed(tmp_path)
    for allowed in (
        dataclasses.replace(bare, allow_public_bind=True),
        dataclasses.replace(bare, allowed_networks=(ipaddress.ip_network("10.0.0.0/8"),)),
        dataclasses.replace(bare, ssl_context=server_tls_context(cert, key)),
    ):
        async with listening(inbox_engine, allowed) as listener:
            assert listener.port > 0


async def test_cm_fhir_listen_refuses_a_public_bind(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "cm-fhir"),
        "listen",
        "--host",
        "0.0.0.0",
        "--port",
        "0",
        "--database-url",
        f"sqlite+aiosqlite:///{tmp_path / 'public.sqlite3'}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 2
    assert b"allow_public_bind" in err


def test_settings_build_the_listener_config_and_name_a_bad_network_by_position() -> None:
    # The service and `cm-fhir listen` build the same config from the same settings.
    mllp = load_settings(
        None, {"mllp": {"allowed_networks": "10.1.0.0/16, 192.0.2.7", "allowed_senders": "A|B"}}
    ).mllp
    config = ListenerConfig.from_settings(mllp)
    assert config.allowed_networks == (
        ipaddress.ip_network("10.1.0.0/16"),
        ipaddress.ip_network("192.0.2.7/32"),
    )
    assert config.allowed_senders == ("A|B",)
    with pytest.raises(ConfigError, match="allowed_networks") as refused:
        load_settings(None, {"mllp": {"allowed_networks": "10.1.0.0/33"}})
    assert "10.1.0.0" not in str(refused.value)  # the key and the position, never the value


async def test_cli_mutual_tls_listen_and_adt_send_with_a_client_certificate(
    tmp_path: Path,
) -> None:
    cm_fhir = str(Path(sys.executable).parent / "cm-fhir")
    ca = CertificateAuthority(tmp_path)
    cert, key = self_signed(tmp_path)
    client_cert, client_key = ca.client("ehr")
    listener = await asyncio.create_subprocess_exec(
        cm_fhir,
        "listen",
        "--port",
        "0",
        "--database-url",
        f"sqlite+aiosqlite:///{tmp_path / 'mtls.sqlite3'}",
        "--tls-cert",
        str(cert),
        "--tls-key",
        str(key),
        "--tls-client-ca",
        str(ca.cert_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert listener.stdout is not None
    try:
        async with asyncio.timeout(60):
            line = (await listener.stdout.readline()).decode()
        assert line.startswith("cm-fhir listening on "), line
        port = line.rsplit(":", 1)[1].strip()
        source = tmp_path / "one.hl7"
        source.write_text(adt("CLI-MTLS-1"))
        common = ["adt", "send", str(source), "--host", "localhost", "--port", port]
        common += ["--ca-file", str(cert), "--timeout", "10"]
        with_cert = await asyncio.create_subprocess_exec(
            cm_fhir,
            *common,
            "--client-cert",
            str(client_cert),
            "--client-key",
            str(client_key),
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await asyncio.wait_for(with_cert.communicate(), 60)
        without = await asyncio.create_subprocess_exec(
            cm_fhir, *common, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        _, err = await asyncio.wait_for(without.communicate(), 60)
    finally:
        listener.terminate()
        await listener.wait()
    assert with_cert.returncode == 0
    assert f"{source}#1 CLI-MTLS-1 AA" in out.decode().splitlines()
    assert without.returncode == 1
    assert b"cannot reach" in err


def test_serve_refuses_an_unprotected_public_mllp_bind_before_starting() -> None:
    public = load_settings(None, {"mllp": {"host": "0.0.0.0"}})
    with pytest.raises(ConfigError, match="allow_public_bind"):
        Service(public, {Role.LISTENER})
    allowed = load_settings(None, {"mllp": {"host": "0.0.0.0", "allowed_networks": "10.0.0.0/8"}})
    assert Service(allowed, {Role.LISTENER}).roles == {Role.LISTENER}
    assert Service(public, {Role.WORKER}).roles == {Role.WORKER}  # no listener, no MLLP bind
