"""The cheap MSH reader, the ACK decision table and the ACK / batch ACK renderer (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from cm_fhir.errors import Hl7ParseError
from cm_fhir.hl7v2.ack import (
    AckError,
    ack_wanted,
    build_ack,
    build_batch_ack,
    decide,
    hl7_timestamp,
    response_code,
    storage_failure,
)
from cm_fhir.hl7v2.header import read_batch_header, read_header, read_patient_key
from cm_fhir.mllp_client import read_ack
from hl7v2_samples import ADT_A01_V23, ADT_A01_V251, BATCH, CONTROL_ID, MRN, MRN_AUTHORITY

WHEN = datetime(2024, 3, 5, 10, 15, tzinfo=UTC)


def with_msh_field(message: str, number: int, value: str) -> str:
    segments = message.split("\r")
    fields = segments[0].split("|")
    while len(fields) <= number - 1:
        fields.append("")
    fields[number - 1] = value  # fields[0] is "MSH", so MSH-n sits at index n - 1
    segments[0] = "|".join(fields)
    return "\r".join(segments)


def segments_of(ack: str) -> list[list[str]]:
    assert ack.endswith("\r")
    return [segment.split("|") for segment in ack[:-1].split("\r")]


def test_header_fields_are_read_from_their_positions() -> None:
    header = read_header(ADT_A01_V251)
    assert (header.sending_application, header.sending_facility) == ("ADTSYS", "NORTHSIDE")
    assert (header.receiving_application, header.receiving_facility) == ("CMFHIR", "CM")
    assert (header.message_type, header.trigger_event, header.message_structure) == (
        "ADT",
        "A01",
        "ADT_A01",
    )
    assert header.control_id == CONTROL_ID
    assert (header.processing_id, header.version_id) == ("P", "2.5.1")
    assert not header.enhanced_mode


def test_header_without_trailing_fields_or_other_segments_reads_them_empty() -> None:
    header = read_header("MSH|^~\\&|A|B|C|D|20240305||ADT^A08|7|P|2.4")
    assert (header.trigger_event, header.control_id, header.version_id) == ("A08", "7", "2.4")
    assert (header.accept_ack_type, header.application_ack_type, header.character_set) == (
        "",
        "",
        "",
    )
    enhanced = read_header(with_msh_field(ADT_A01_V251, 15, "ne"))
    assert (enhanced.accept_ack_type, enhanced.character_set) == ("NE", "")


def test_timestamps_of_one_instant_keep_each_offset() -> None:
    east = WHEN.astimezone(timezone(timedelta(hours=2)))
    assert hl7_timestamp(WHEN) == "20240305101500+0000"
    assert hl7_timestamp(east) == "20240305121500+0200"
    assert hl7_timestamp(WHEN.replace(microsecond=999_999)) == "20240305101500+0000"
    assert hl7_timestamp(WHEN + timedelta(seconds=1)) == "20240305101501+0000"


def test_patient_key_is_first_pid3_identifier_with_authority() -> None:
    message = ADT_A01_V251
    assert read_patient_key(message, read_header(message)) == f"{MRN}^{MRN_AUTHORITY}"
    no_pid = "\r".join(s for s in message.split("\r") if not s.startswith("PID"))
    assert read_patient_key(no_pid, read_header(no_pid)) is None


@pytest.mark.parametrize("bad", ["PID|1||x", "MSH", "MSHabc^~\\&|x", "MSH|^|A"])
def test_unreadable_header_names_a_position(bad: str) -> None:
    with pytest.raises(Hl7ParseError) as caught:
        read_header(bad)
    assert caught.value.location is not None
    assert caught.value.location.startswith("MSH")


def test_ack_swaps_parties_echoes_control_id_and_copies_version() -> None:
    header = read_header(ADT_A01_V251)
    ack = build_ack(header, "AA", control_id="ACK1", timestamp=WHEN)
    msh, msa = segments_of(ack)
    assert msh[1] == "^~\\&"
    assert msh[2:6] == ["CMFHIR", "CM", "ADTSYS", "NORTHSIDE"]
    assert msh[6] == "20240305101500+0000"
    assert msh[8] == "ACK^A01^ACK"
    assert msh[9] == "ACK1"
    assert msh[10:12] == ["P", "2.5.1"]
    assert msa == ["MSA", "AA", CONTROL_ID]


def test_ack_uses_the_senders_separators() -> None:
    message = ADT_A01_V251.replace("^", "$").replace("|", "#")
    header = read_header(message)
    assert header.field_separator == "#"
    error = AckError("101", "MSH-10 is empty # $ marks", "MSH-10")
    ack = build_ack(header, "AE", control_id="X", timestamp=WHEN, error=error)
    assert ack.startswith("MSH#$~\\&#CMFHIR#CM#ADTSYS#NORTHSIDE#")
    assert "ACK$A01$ACK" in ack
    err = ack.split("\r")[2]
    assert err.startswith("ERR##MSH$1$10$1#101$Required field missing$HL70357#E#")
    assert "\\F\\" in err
    assert "\\S\\" in err


def test_error_segment_v25_and_v23_layouts() -> None:
    error = AckError("200", "MSH-9.1 is not accepted", "MSH-9.1")
    new = segments_of(
        build_ack(read_header(ADT_A01_V251), "AR", control_id="1", timestamp=WHEN, error=error)
    )
    assert new[2][:5] == ["ERR", "", "MSH^1^9^1^1", "200^Unsupported message type^HL70357", "E"]
    assert new[2][8] == "MSH-9.1 is not accepted"
    old = segments_of(
        build_ack(read_header(ADT_A01_V23), "AR", control_id="1", timestamp=WHEN, error=error)
    )
    assert old[1] == ["MSA", "AR", CONTROL_ID, "MSH-9.1 is not accepted"]
    assert old[2] == ["ERR", "MSH^1^9^200&Unsupported message type&HL70357"]


@pytest.mark.parametrize(
    ("change", "state", "code", "err"),
    [
        (None, "received", "AA", None),
        ((9, "ADT^A31^ADT_A05"), "ignored", "AA", None),
        ((9, "ORU^R01"), "refused", "AR", "200"),
        ((9, "ADT"), "refused", "AE", "101"),
        ((9, ""), "refused", "AE", "101"),
        ((10, ""), "refused", "AE", "101"),
        ((12, ""), "refused", "AE", "101"),
        ((12, "3.0"), "refused", "AR", "203"),
        ((9, "ADT^A40^ADT_A39"), "received", "AA", None),
        ((9, "ADT^A38"), "received", "AA", None),
    ],
)
def test_decision_table(
    change: tuple[int, str] | None, state: str, code: str, err: str | None
) -> None:
    message = with_msh_field(ADT_A01_V251, *change) if change else ADT_A01_V251
    disposition = decide(read_header(message))
    assert (disposition.state, disposition.ack_code) == (state, code)
    assert (disposition.error.code if disposition.error else None) == err
    assert disposition.reply


def test_inbound_acks_are_not_acknowledged() -> None:
    assert not decide(read_header(with_msh_field(ADT_A01_V251, 9, "ACK^A01^ACK"))).reply


@pytest.mark.parametrize(
    ("msh15", "msh16", "ok", "error"),
    [
        ("", "", True, True),
        ("AL", "", True, True),
        ("NE", "AL", False, False),
        ("ER", "", False, True),
        ("SU", "", True, False),
        ("", "AL", True, True),
    ],
)
def test_enhanced_mode_accept_conditions(msh15: str, msh16: str, ok: bool, error: bool) -> None:
    header = read_header(with_msh_field(with_msh_field(ADT_A01_V251, 15, msh15), 16, msh16))
    good, bad = response_code(header, "AA"), response_code(header, "AR")
    assert (good, bad) == (("CA", "CR") if header.enhanced_mode else ("AA", "AR"))
    assert ack_wanted(header, good) is ok
    assert ack_wanted(header, bad) is error


def test_storage_failure_error_is_application_internal_error_without_values() -> None:
    error = storage_failure()
    ack = build_ack(read_header(ADT_A01_V251), "AR", control_id="1", timestamp=WHEN, error=error)
    assert read_ack(ack.encode())[0].error_code == "207"
    assert MRN not in ack


def test_batch_ack_wraps_one_ack_per_message() -> None:
    batch = read_batch_header(BATCH)
    assert batch is not None
    assert batch.has_file_header
    inner = [
        build_ack(read_header(ADT_A01_V251), "AA", control_id=str(n), timestamp=WHEN)
        for n in range(2)
    ]
    text = build_batch_ack(batch, inner, control_id="B1", timestamp=WHEN)
    lines = text[:-1].split("\r")
    assert lines[0].startswith("FHS|^~\\&|||ADTSYS|NORTHSIDE|")
    assert lines[1].startswith("BHS|^~\\&|||ADTSYS|NORTHSIDE|")
    assert lines[-2:] == ["BTS|2", "FTS|1"]
    assert [s.code for s in read_ack(text.encode())] == ["AA", "AA"]
    assert read_batch_header(ADT_A01_V251) is None
