"""Admission bookkeeping and door checks as plain values: :class:`PeerGate` (no sockets, the clock
passed in), :func:`content_error` and :func:`sender_allowed`."""

from __future__ import annotations

import pytest

from cm_fhir.hl7v2.admissible import KeyLimits, content_error, sender_allowed
from cm_fhir.hl7v2.header import read_header
from cm_fhir.listener_config import ListenerConfig
from cm_fhir.mllp_peers import PeerGate, RefusalLog, parse_networks


def test_per_address_and_per_identity_limits_and_release() -> None:
    gate = PeerGate(ListenerConfig(max_connections=10, max_connections_per_peer=2))
    assert gate.admit("10.0.0.1", None, 0).admitted
    assert gate.admit("10.0.0.1", None, 0).admitted
    assert gate.admit("10.0.0.1", None, 0).reason == "peer_limit"
    assert gate.admit("10.0.0.2", "CN=ehr", 0).admitted
    assert gate.admit("10.0.0.3", "CN=ehr", 0).admitted
    assert gate.admit("10.0.0.4", "CN=ehr", 0).reason == "identity_limit"
    gate.release("10.0.0.1", None, 0)
    assert gate.admit("10.0.0.1", None, 0).admitted
    assert gate.open_connections == 4
    assert gate.refused == {"peer_limit": 1, "identity_limit": 1}


def test_global_limit_and_zero_disables_the_per_peer_one() -> None:
    gate = PeerGate(ListenerConfig(max_connections=3, max_connections_per_peer=0))
    assert [gate.admit("10.0.0.1", None, 0).admitted for _ in range(4)] == [True] * 3 + [False]


def test_allowlist_matches_networks_and_ipv4_mapped_addresses() -> None:
    gate = PeerGate(ListenerConfig(allowed_networks=parse_networks(["10.1.0.0/16", "192.0.2.7"])))
    assert gate.admit("10.1.200.3", None, 0).admitted
    assert gate.admit("::ffff:192.0.2.7", None, 0).admitted
    assert gate.admit("192.0.2.8", None, 0).reason == "not_allowed"
    assert gate.admit("not-an-address", None, 0).reason == "not_allowed"
    with pytest.raises(ValueError, match="entry 2 is not"):
        parse_networks(["10.1.0.0/16", "10.1.0.0/33"])


def test_unreadable_frames_within_the_window_start_one_cool_down() -> None:
    gate = PeerGate(ListenerConfig(unreadable_limit=3, unreadable_window=10, cooldown=30))
    assert [gate.unreadable("10.0.0.9", t) for t in (0, 20, 21)] == [False, False, False]
    assert gate.unreadable("10.0.0.9", 22)  # three within 10 s
    assert gate.admit("10.0.0.9", None, 30).reason == "cooling_down"
    assert gate.admit("10.0.0.8", None, 30).admitted
    assert gate.admit("10.0.0.9", None, 52.5).admitted  # 22 + 30 has passed
    assert gate.cooldowns == 1
    gate.release("10.0.0.9", None, 53)
    assert not gate.cooling_down("10.0.0.9", 53)
    assert gate.tracked_peers == 0  # nothing pending: forgotten


HEADER = "MSH|^~\\&|ADTSYS^1.2.3^ISO|NORTHSIDE|CM|CM|20240305101500||ADT^A01|C-1|P|2.5.1"


@pytest.mark.parametrize(
    ("allowed", "expected"),
    [
        ((), True),
        (("ADTSYS|NORTHSIDE",), True),
        (("ADTSYS^1.2.3^ISO|NORTHSIDE",), True),
        (("ADTSYS",), True),
        (("*|NORTHSIDE",), True),
        (("ADTSYS|SOUTHSIDE", "LAB"), False),
    ],
)
def test_sender_allowlist_entries(allowed: tuple[str, ...], expected: bool) -> None:
    assert sender_allowed(read_header(HEADER), allowed) is expected


def test_content_error_names_the_first_problem_position() -> None:
    limits = KeyLimits(control_id=10, sender=20, identifier=5, authority=3)
    header = read_header(HEADER)
    ok = HEADER + "\rPID|1||12345^^^NSH"
    assert content_error(ok, header, limits) is None
    cases = {
        HEADER + "\rPID|1||123\x00": "PID-3",
        HEADER + "\rPID|1||123456^^^NSH": "PID-3.1",
        HEADER + "\rPID|1||1^^^NSH~2^^^LONG": "PID-3.4",
        HEADER + "\rPID|1||1^^^NSH\rMRG|123456": "MRG-1.1",
    }
    for message, location in cases.items():
        error = content_error(message, header, limits)
        assert error is not None
        assert (error.code, error.location) == ("102", location)
    long_id = read_header(HEADER.replace("|C-1|", "|C-12345678901|"))
    error = content_error(HEADER, long_id, limits)
    assert error is not None
    assert error.location == "MSH-10"


def test_every_listener_counter_is_exported_as_a_metric() -> None:
    import dataclasses

    from cm_fhir.ingest_door import LISTENER_COUNTERS, IntakeStats

    fields = {f.name for f in dataclasses.fields(IntakeStats)} - {"discarded_bytes"}
    assert set(LISTENER_COUNTERS) == fields


def test_refusal_log_records_once_per_key_and_window_within_a_global_bound() -> None:
    log = RefusalLog(window=60, limit=3)
    assert log.should_record("10.0.0.1", "not_allowed", now=0)
    assert not log.should_record("10.0.0.1", "not_allowed", now=30)
    assert log.should_record("10.0.0.1", "peer_limit", now=31)
    assert log.should_record("10.0.0.2", "not_allowed", now=32)
    assert not log.should_record("10.0.0.3", "not_allowed", now=33)  # 3 in this window
    assert log.skipped == 2
    assert log.should_record("10.0.0.1", "not_allowed", now=61)  # a new window
