"""The light ER7 reader: segments, fields, escapes, nulls and DTM values; the structure table."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from cm_fhir.errors import Hl7ParseError
from cm_fhir.hl7v2.parse import EncodingCharacters, parse_date, parse_dtm, parse_er7
from cm_fhir.hl7v2.structures import is_supported_version, structure_for, version_key
from hl7v2_samples import ADT_A01_V251


def test_segments_and_field_numbering_follow_the_standard() -> None:
    message = parse_er7(ADT_A01_V251)
    assert [s.id for s in message.segments][:3] == ["MSH", "EVN", "PID"]
    assert message.msh.field(1) == "|"
    assert message.msh.field(2) == "^~\\&"
    assert message.msh.text(9, 2) == "A01"
    assert message.msh.text(12) == "2.5.1"
    pid = message.first("PID")
    assert pid is not None
    assert pid.text(3, 4) == "NSH"
    assert [pid.text_in(pid.components(3, r), 1) for r in range(2)] == ["MRN0001", "ENT5550"]
    assert message.first("NK1") is None
    assert len(message.all("ZPV")) == 1


def test_custom_encoding_characters_are_used() -> None:
    message = parse_er7("MSH#$*!@#APP#FAC\rPID#1##A1$$$AUTH$MR*B2$$$AUTH$PI")
    pid = message.all("PID")[0]
    assert message.encoding == EncodingCharacters("#", "$", "*", "!", "@")
    assert pid.text(3, 4) == "AUTH"
    assert len(pid.repetitions(3)) == 2


def test_explicit_null_is_detected_and_never_a_value() -> None:
    pid = parse_er7('MSH|^~\\&|A\rPID|1||X||""||""').all("PID")[0]
    assert pid.is_null(5)
    assert pid.text(5) is None
    assert pid.repetitions(5) == []
    assert not pid.is_null(3)
    assert not pid.is_null(6)


def test_escape_sequences_are_decoded() -> None:
    encoding = EncodingCharacters()
    raw = "A\\T\\E\\F\\pipe\\S\\hat\\R\\rep\\E\\esc\\.br\\line\\X41\\\\H\\b\\N\\\\Q\\"
    assert encoding.unescape(raw) == "A&E|pipe^hat~rep\\esc\nlineAb\\Q\\"


def test_escaped_text_is_returned_decoded_by_text() -> None:
    message = parse_er7("MSH|^~\\&|A\rPV1|1|I||||||||Cardio\\T\\Thoracic")
    assert message.all("PV1")[0].text(10) == "Cardio&Thoracic"


def test_segment_without_id_is_refused_with_its_position() -> None:
    with pytest.raises(Hl7ParseError) as caught:
        parse_er7("MSH|^~\\&|A\rPID|1\r||E|||")
    assert caught.value.location == "segment 3"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024", datetime(2024, 1, 1)),
        ("202403", datetime(2024, 3, 1)),
        ("20240305", datetime(2024, 3, 5)),
        ("2024030510", datetime(2024, 3, 5, 10)),
        ("202403051015", datetime(2024, 3, 5, 10, 15)),
        ("20240305101530", datetime(2024, 3, 5, 10, 15, 30)),
        ("20240305101530.1234", datetime(2024, 3, 5, 10, 15, 30, 123400)),
    ],
)
def test_dtm_precisions_without_offset_stay_naive(value: str, expected: datetime) -> None:
    assert parse_dtm(value, "PV1-44") == expected


def test_dtm_offset_gives_an_aware_datetime() -> None:
    result = parse_dtm("20240305101530-0530", "EVN-2")
    assert result == datetime(
        2024, 3, 5, 10, 15, 30, tzinfo=timezone(timedelta(hours=-5, minutes=-30))
    )
    assert result.utcoffset() == timedelta(hours=-5, minutes=-30)


def test_default_zone_is_attached_only_when_no_offset() -> None:
    zone = ZoneInfo("Europe/Berlin")
    assert parse_dtm("202407011200", "PV1-44", zone).utcoffset() == timedelta(hours=2)
    assert parse_dtm("202407011200+0000", "PV1-44", zone).utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "value", ["2024133", "20241301", "20240230", "yesterday", "2024-03-05", "20240305+2500"]
)
def test_bad_dtm_names_the_location_not_the_value(value: str) -> None:
    with pytest.raises(Hl7ParseError) as caught:
        parse_dtm(value, "PV1-45")
    assert caught.value.location == "PV1-45"
    assert value not in str(caught.value)


def test_parse_date_takes_the_date_of_a_dtm() -> None:
    assert parse_date("196103041230", "PID-7") == date(1961, 3, 4)


@pytest.mark.parametrize(
    ("event", "version", "structure"),
    [
        ("A01", "2.5.1", "ADT_A01"),
        ("A04", "2.3", "ADT_A01"),
        ("A08", "2.8", "ADT_A01"),
        ("A13", "2.6", "ADT_A01"),
        ("A02", "2.5", "ADT_A02"),
        ("A03", "2.7", "ADT_A03"),
        ("A05", "2.5.1", "ADT_A05"),
        ("A05", "2.3.1", "ADT_A01"),
        ("A06", "2.5", "ADT_A06"),
        ("A07", "2.5", "ADT_A06"),
        ("A11", "2.5", "ADT_A09"),
        ("A12", "2.4", "ADT_A09"),
        ("A12", "2.5", "ADT_A12"),
        ("A16", "2.5", "ADT_A16"),
        ("A26", "2.5", "ADT_A21"),
        ("A38", "2.5", "ADT_A38"),
        ("A40", "2.3", "ADT_A39"),
        ("A40", "2.8", "ADT_A39"),
        ("Z99", "2.5", None),
    ],
)
def test_structure_table(event: str, version: str, structure: str | None) -> None:
    assert structure_for(event, version) == structure


@pytest.mark.parametrize(
    ("version", "supported"),
    [
        ("2.3", True),
        ("2.3.1", True),
        ("2.5.1", True),
        ("2.8.2", True),
        ("2.2", True),
        ("2.1", False),
        ("2.9", False),
        ("x", False),
    ],
)
def test_supported_versions(version: str, supported: bool) -> None:
    assert is_supported_version(version) is supported


def test_version_key() -> None:
    assert version_key("2.5.1") == (2, 5, 1)
    assert version_key(" 2.8 ") == (2, 8)
