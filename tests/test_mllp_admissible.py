"""Nothing is ACKed AA that the worker cannot process.

The door check (:func:`cm_fhir.hl7v2.admissible.processing_error`) is held to the worker's own
parse: on thousands of damaged messages it refuses exactly what ``parse_adt`` cannot read. Over a
real socket, on SQLite and PostgreSQL, a message the worker could not read is answered AE with an
ERR naming the field, stored ``refused`` (kept as received, never processed, listed by the API),
and what was ACKed AA is processed to a state other than ``failed``.
"""

from __future__ import annotations

import random
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine

from cm_fhir.errors import ConfigError, Hl7ParseError, UnsupportedEventError
from cm_fhir.hl7v2.ack import decide
from cm_fhir.hl7v2.admissible import (
    _PLAIN_MOMENT,
    KeyLimits,
    _normal,
    key_room_error,
    processing_error,
)
from cm_fhir.hl7v2.adt import parse_adt
from cm_fhir.hl7v2.events import AdtEvent
from cm_fhir.hl7v2.header import read_header
from cm_fhir.hl7v2.normalise import decode, normalise_message, split_batch
from cm_fhir.hl7v2.parse import parse_dtm
from cm_fhir.ingest_door import check_key_room
from cm_fhir.listener import ListenerConfig
from cm_fhir.mapping.rules import DischargeRules
from cm_fhir.mllp_client import MllpClient, read_ack
from cm_fhir.store.engine import make_engine
from cm_fhir.worker import Worker
from cm_fhir.workflow import patient_keys
from hl7v2_samples import ADT_A01_V251, ADT_A40_V251, evn, msh, pid, pv1, pv2
from inbox_fixtures import listening
from test_mllp_hostile_content import err_location
from test_soak import SEEDS, damaged
from worker_fixtures import inbox_messages, rows, settle_worker, worker_engine, worker_http
from workflow_messages import maps, rules

__all__ = ["worker_engine", "worker_http"]


def _worker_reads(message: str) -> bool:
    """What the worker does: parse, then derive the patient keys; False if that raises."""
    try:
        event = parse_adt(message, maps())
        if isinstance(event, AdtEvent):
            patient_keys(event, rules())
    except UnsupportedEventError:
        return True  # ignored by the worker, not failed
    except Hl7ParseError:
        return False
    return True


def _door_admits(message: str) -> bool | None:
    """Whether the door ACKs AA a message its header check passes (None: refused by header)."""
    try:
        header = read_header(message)
    except Hl7ParseError:
        return None
    if decide(header).state != "received":
        return None
    return processing_error(message) is None


def test_the_door_refuses_exactly_what_the_worker_cannot_read() -> None:
    rng = random.Random(20261201)
    counts = {"admitted": 0, "refused": 0}
    for i in range(4000):
        raw = damaged(rng, SEEDS[i % len(SEEDS)])
        try:
            messages = split_batch(decode(raw))
        except Hl7ParseError:
            continue
        for message in messages:
            admitted = _door_admits(message)
            if admitted is None:
                continue
            counts["admitted" if admitted else "refused"] += 1
            assert admitted == _worker_reads(message), message.encode()[:200]
    assert counts["admitted"] > 500
    assert counts["refused"] > 100


def adt(*segments: str, control_id: str = "R-1") -> str:
    return "\r".join([msh("A01", "2.5.1", control_id=control_id), *segments])


# name, message, ERR code and ERR-2 location (segment^1[^field^1[^component]]).
UNREADABLE = [
    ("no-pid", adt(evn("A01"), pv1()), "100", "PID^1"),
    ("pid3-empty", adt(evn("A01"), "PID|1||^^^NSH^MR||DOE^JO", pv1()), "101", "PID^1^3^1"),
    ("pid3-null", adt(evn("A01"), 'PID|1||""||DOE^JO', pv1()), "101", "PID^1^3^1"),
    ("bad-birth-date", adt(evn("A01"), pid().replace("19610304", "1961-3-4")), "102", "PID^1^7^1"),
    ("bad-admit-time", adt(evn("A01"), pid(), pv1().replace("20240305093000", "2024")), None, None),
    (
        "bad-admit-time-2",
        adt(evn("A01"), pid(), pv1().replace("20240305093000+0100", "20241305")),
        "102",
        "PV1^1^44^1",
    ),
    ("bad-evn-time", adt(evn("A01").replace("20240305101200", "today"), pid()), "102", "EVN^1^2^1"),
    ("bad-expected-discharge", adt(evn("A01"), pid(), pv1(), pv2("soon")), "102", "PV2^1^9^1"),
    ("pv2-without-pv1", adt(evn("A01"), pid(), pv2("soon")), None, None),
    ("bad-segment-id", adt(evn("A01"), pid(), "pv1|1|I"), "100", ""),
    (
        "mrg-without-prior-id",
        ADT_A40_V251.replace("MRG|MRN0999^^^NSH^MR", "MRG|^^^NSH^MR"),
        "101",
        "MRG^1^1^1",
    ),
    ("msh10-null", ADT_A01_V251.replace("|CTRL-0001|", '|""|'), "101", "MSH^1^10^1"),
]


@pytest.mark.parametrize(
    ("name", "message", "code", "location"), UNREADABLE, ids=[u[0] for u in UNREADABLE]
)
async def test_a_message_the_worker_cannot_read_is_refused_with_err(
    worker_engine: AsyncEngine,
    worker_http: httpx.AsyncClient,
    name: str,
    message: str,
    code: str | None,
    location: str | None,
) -> None:
    async with (
        listening(worker_engine, ListenerConfig(port=0)) as listener,
        await MllpClient.connect("127.0.0.1", listener.port) as client,
    ):
        ack = await client.send(message.encode(), timeout=10)
    [summary] = read_ack(ack)
    await settle_worker(worker_engine, max_attempts=1)
    [row] = await rows(worker_engine, inbox_messages)
    assert row.raw == message.encode()  # kept as received
    if code is None:  # the parse reads it (a year is a valid DTM; PV2 is read only after PV1)
        assert summary.code == "AA"
        assert row.state in ("processed", "needs_attention"), row.reason
        return
    assert (summary.code, summary.error_code, err_location(ack)) == ("AE", code, location)
    assert (row.state, row.ack_bytes) == ("refused", ack)
    assert "\x00" not in (row.reason or "")
    listed = (await worker_http.get("/api/messages", params={"state": "refused"})).json()
    assert [m["id"] for m in listed["items"]] == [row.id]
    replay = (await worker_http.post(f"/api/messages/{row.id}/replay")).json()
    assert replay["replayed"] == []  # never processed, not even on request
    [row] = await rows(worker_engine, inbox_messages)
    assert row.state == "refused"


def _inner_acks(ack: bytes) -> list[bytes]:
    """The ACK messages of one answer (one, or one per message of a batch ACK)."""
    if ack.startswith(b"MSH"):
        return [ack]
    parts = ack.split(b"\rMSH")[1:]
    return [b"MSH" + p.split(b"\rBTS")[0] + b"\r" for p in parts]


@pytest.mark.slow
async def test_damaged_feed_nothing_acked_aa_ends_failed(worker_engine: AsyncEngine) -> None:
    """1500 randomly damaged messages over a socket: every message ACKed AA/CA is processed to a
    state other than failed or dead-lettered; every refusal carries an ERR and is stored
    ``refused``; on SQLite and PostgreSQL alike."""
    rng = random.Random(20261201)
    payloads = [damaged(rng, SEEDS[i % len(SEEDS)]) for i in range(1500)]
    answers: list[bytes] = []
    config = ListenerConfig(port=0, unreadable_limit=0)  # no cool-down for this one sender
    async with (
        listening(worker_engine, config) as listener,
        await MllpClient.connect("127.0.0.1", listener.port) as client,
    ):
        for payload in payloads:
            if payload:
                answers.append(await client.send(payload, timeout=10))
    sent = [inner for answer in answers for inner in _inner_acks(answer)]
    for ack in sent:
        [summary] = read_ack(ack)
        if summary.code not in ("AA", "CA"):
            assert b"\rERR" in ack, ack
    await settle_worker(worker_engine, max_attempts=1)
    stored = await rows(worker_engine, inbox_messages)
    by_code: dict[str, list[str]] = {}
    for row in stored:
        by_code.setdefault(row.ack_code or "-", []).append(row.state)
        if row.ack_code in ("AA", "CA"):
            assert row.state not in ("failed", "dead_lettered"), (row.id, row.reason)
        else:
            assert row.state == "refused", (row.id, row.ack_code, row.state)
    assert len(by_code.get("AA", [])) > 300
    assert len(by_code.get("AE", [])) > 300


def _with_systems(default: str, mapped: dict[str, str] | None = None) -> DischargeRules:
    identity = rules().identity.model_copy(
        update={"default_patient_system": default, "patient_systems": mapped or {}}
    )
    return rules().model_copy(update={"identity": identity})


LIMITS = KeyLimits()


@pytest.mark.parametrize(
    ("default", "mapped", "setting"),
    [
        ("urn:" + "d" * 85, {}, None),  # 89 characters: the longest that fits
        ("urn:" + "d" * 86, {}, "identity.default_patient_system is 90 characters; at most 89"),
        ("urn:d", {"NSH": "urn:" + "m" * 150}, None),
        ("urn:d", {"NSH": "urn:" + "m" * 151}, "identity.patient_systems[NSH] is 155 characters"),
    ],
)
def test_identifier_systems_must_leave_room_in_the_patient_key(
    default: str, mapped: dict[str, str], setting: str | None
) -> None:
    configured = _with_systems(default, mapped)
    error = key_room_error(configured.identity, LIMITS)
    if setting is not None:
        assert error is not None
        assert error.startswith(setting)
        with pytest.raises(ConfigError, match=r"^discharge-rules\.yaml: identity\."):
            check_key_room(configured.identity)
        return
    assert error is None
    # the longest identifier and authority the door admits make a key that fits
    for authority in ("A" * LIMITS.authority, "NSH"):
        ident = "9" * LIMITS.identifier
        message = adt(evn("A01"), f"PID|1||{ident}^^^{authority}^MR||DOE^JO", pv1())
        assert processing_error(message) is None
        event = parse_adt(message, maps())
        assert isinstance(event, AdtEvent)
        [key] = patient_keys(event, configured)
        assert len(key) <= LIMITS.patient_key


async def test_a_worker_refuses_to_start_with_a_system_too_long(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite3'}")
    try:
        with pytest.raises(ConfigError, match=r"identity\.default_patient_system"):
            Worker(engine, rules=_with_systems("urn:" + "d" * 200))
    finally:
        await engine.dispose()


def test_the_fast_path_reads_what_normalising_would() -> None:
    """A message already in normal form skips normalising: it must then be exactly the same."""
    rng = random.Random(5)
    checked = 0
    for i in range(3000):
        text = decode(damaged(rng, SEEDS[i % len(SEEDS)]))
        if _normal(text):
            checked += 1
            assert normalise_message(text) == text, text.encode()[:200]
    assert checked > 300


@settings(suppress_health_check=[HealthCheck.too_slow])  # generation is slow on a busy machine
@given(st.from_regex(_PLAIN_MOMENT, fullmatch=True))
def test_a_plain_date_time_is_one_the_parser_reads(value: str) -> None:
    parse_dtm(value, "PV1-44")  # raises if the door's shortcut admitted what the parser refuses
