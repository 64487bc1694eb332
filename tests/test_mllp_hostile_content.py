"""Hostile content at the door, over a real socket, then through the worker, on SQLite and
PostgreSQL: nothing ACKed AA/CA is later dead-lettered or failed for its content; what the store
or worker cannot hold is refused at the door (AR/CR with an ERR naming the position) and kept as
received, the same on both databases."""

from __future__ import annotations

import random

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from cm_fhir.listener import ListenerConfig
from cm_fhir.mllp_client import MllpClient, read_ack
from hl7v2_samples import evn, msh, pid, pv1
from inbox_fixtures import listening
from worker_fixtures import inbox_messages, ingest, rows, settle_worker, worker_engine

__all__ = ["worker_engine"]


def adt(control_id: str, *, mrn: str = "MRN1", version: str = "2.5.1", extra: str = "") -> str:
    header = msh("A01", version, control_id=control_id) + extra
    return "\r".join([header, evn("A01"), pid(mrn), pv1()])


def _bytes(text: str) -> bytes:
    return text.encode("utf-8")


# name, raw message, the expected answer (MSA-1, ERR code, ERR location) or None for AA.
HOSTILE: list[tuple[str, bytes, tuple[str, str, str] | None]] = [
    ("nul-in-pid3", _bytes(adt("H-1", mrn="MR\x00N1")), ("AR", "102", "PID^1^3^1")),
    ("nul-in-msh10", _bytes(adt("H-\x002")), ("AR", "102", "MSH^1^10^1")),
    (
        "nul-in-name",
        _bytes(adt("H-3").replace("TESTPATIENT", "TEST\x00PATIENT")),
        ("AR", "102", "PID^1^5^1"),
    ),
    ("long-mrn", _bytes(adt("H-4", mrn="M" * 300)), ("AR", "102", "PID^1^3^1^1")),
    ("mrn-at-limit", _bytes(adt("H-4b", mrn="M" * 100)), None),
    ("long-msh10", _bytes(adt("H5" + "9" * 250)), ("AR", "102", "MSH^1^10^1")),
    ("long-msh3", _bytes(adt("H-6").replace("ADTSYS", "A" * 300)), ("AR", "102", "MSH^1^3^1")),
    ("long-msh4", _bytes(adt("H-7").replace("NORTHSIDE", "N" * 300)), ("AR", "102", "MSH^1^4^1")),
    (
        "long-authority",
        _bytes(adt("H-8").replace("^^^NSH^MR", "^^^" + "N" * 300 + "^MR")),
        ("AR", "102", "PID^1^3^1^4"),
    ),
    (
        "long-second-id",
        _bytes(adt("H-8b").replace("ENT5550", "E" * 101)),
        ("AR", "102", "PID^1^3^1^1"),
    ),
    ("latin1-name", adt("H-9").replace("TESTPATIENT", "TEST\xc9").encode("latin-1"), None),
    ("bad-utf8", _bytes(adt("H-10")).replace(b"TESTPATIENT", b"TEST\xed\xa0\x80X"), None),
    (
        "bad-utf8-declared",
        _bytes(adt("H-10b", extra="||||||UNICODE UTF-8")).replace(b"TESTPATIENT", b"TEST\xffX"),
        ("AR", "102", "MSH^1^18^1"),
    ),
    ("long-visit", _bytes(adt("H-11").replace("V100200", "V" * 600)), None),
    ("version-2.2", _bytes(adt("H-12", version="2.2")), None),
    ("version-2.1", _bytes(adt("H-13", version="2.1")), ("AR", "203", "MSH^1^12")),
    ("version-2.9", _bytes(adt("H-14", version="2.9")), ("AR", "203", "MSH^1^12^1")),
    (
        "enhanced-nul",
        _bytes(adt("H-15", mrn="MR\x00N1", extra="|||AL|NE")),
        ("CR", "102", "PID^1^3^1"),
    ),
]


def err_location(ack: bytes) -> str:
    """ERR-2 (v2.5 on), or segment^sequence^field of ERR-1 (before v2.5)."""
    [err] = [s for s in ack.decode("latin-1").split("\r") if s.startswith("ERR|")]
    fields = err.split("|")
    return fields[2] if len(fields) > 2 else "^".join(fields[1].split("^")[:3])


@pytest.mark.parametrize(("name", "raw", "expected"), HOSTILE, ids=[h[0] for h in HOSTILE])
async def test_nothing_acked_positively_is_later_failed_for_its_content(
    worker_engine: AsyncEngine, name: str, raw: bytes, expected: tuple[str, str, str] | None
) -> None:
    async with (
        listening(worker_engine, ListenerConfig(port=0)) as listener,
        await MllpClient.connect("127.0.0.1", listener.port) as client,
    ):
        ack = await client.send(raw, timeout=10)
    [summary] = read_ack(ack)
    await settle_worker(worker_engine, max_attempts=1)
    [row] = await rows(worker_engine, inbox_messages)
    assert row.raw == raw  # refused or not, the message is kept as received
    if expected is None:
        assert summary.code == "AA"
        assert row.state == "processed", (row.state, row.reason)
    else:
        assert (summary.code, summary.error_code, err_location(ack)) == expected
        assert row.state == "refused"
        assert row.ack_bytes == ack


@pytest.mark.slow
async def test_damaged_feed_never_dead_letters_what_was_acked(worker_engine: AsyncEngine) -> None:
    """1500 randomly damaged messages: whatever was ACKed AA/CA, the worker settles it without a
    database refusal (no dead letters), on SQLite and PostgreSQL alike."""
    from test_soak import SEEDS, damaged

    rng = random.Random(20261201)
    payloads = [damaged(rng, SEEDS[i % len(SEEDS)]) for i in range(1500)]
    acks = await ingest(worker_engine, payloads)
    assert len(acks) >= len(payloads) - payloads.count(b"")
    await settle_worker(worker_engine, max_attempts=1)
    dead = [r for r in await rows(worker_engine, inbox_messages) if r.state == "dead_lettered"]
    assert [(r.ack_code, r.reason) for r in dead] == []
