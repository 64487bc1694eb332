"""Normalisation of raw HL7v2 input: BOM, separators, whitespace, batches, charsets, non-HL7."""

from __future__ import annotations

import pytest

from cm_fhir.errors import Hl7ParseError
from cm_fhir.hl7v2.normalise import decode, normalise_message, segment_lines, split_batch
from hl7v2_samples import ADT_A01_V251, BATCH, NOT_HL7, adt_message

SEGMENT_IDS = ["MSH", "EVN", "PID", "PV1", "PV2", "DG1", "IN1", "ZPV"]


def _ids(message: str) -> list[str]:
    return [segment[:3] for segment in message.split("\r")]


@pytest.mark.parametrize("separator", ["\r", "\n", "\r\n", "\n\r"])
def test_every_line_break_style_becomes_cr(separator: str) -> None:
    raw = adt_message("A01", separator=separator) + separator
    result = normalise_message(raw)
    assert _ids(result) == SEGMENT_IDS
    assert "\n" not in result
    assert not result.endswith("\r")


def test_mixed_separators_in_one_message() -> None:
    lines = ADT_A01_V251.split("\r")
    raw = lines[0] + "\n" + lines[1] + "\r\n" + "\r".join(lines[2:])
    assert normalise_message(raw) == ADT_A01_V251


def test_utf8_bom_is_removed_from_bytes_and_text() -> None:
    raw = ADT_A01_V251.encode("utf-8")
    assert normalise_message(b"\xef\xbb\xbf" + raw) == ADT_A01_V251
    assert normalise_message("\ufeff" + ADT_A01_V251) == ADT_A01_V251


def test_trailing_whitespace_and_blank_lines_are_dropped() -> None:
    lines = ADT_A01_V251.split("\r")
    raw = "\n\n" + "  \n".join(line + " \t" for line in lines) + "\n\n   \n"
    assert normalise_message(raw) == ADT_A01_V251


def test_mllp_block_characters_left_in_a_file_are_dropped() -> None:
    raw = b"\x0b" + ADT_A01_V251.encode() + b"\x1c\r"
    assert normalise_message(raw) == ADT_A01_V251


def test_explicit_nulls_are_left_untouched() -> None:
    raw = ADT_A01_V251.replace("PV1|1|I|", 'PV1|1|""|')
    assert 'PV1|1|""|' in normalise_message(raw)


def test_batch_envelope_is_stripped_and_messages_split() -> None:
    messages = split_batch(BATCH)
    assert len(messages) == 2
    assert [m.split("|")[9] for m in messages] == ["CTRL-0001", "CTRL-0002"]
    assert all(_ids(m) == SEGMENT_IDS for m in messages)


def test_back_to_back_messages_without_envelope_are_split() -> None:
    raw = adt_message("A01", separator="\n") + "\n" + adt_message("A03", separator="\n")
    messages = split_batch(raw.encode())
    assert [m.split("|")[8] for m in messages] == ["ADT^A01", "ADT^A03"]


def test_plain_message_gives_one_element_list() -> None:
    assert split_batch(ADT_A01_V251) == [ADT_A01_V251]


def test_batch_with_one_message_normalises_to_that_message() -> None:
    raw = "BHS|^~\\&|X\r" + ADT_A01_V251 + "\rBTS|1"
    assert normalise_message(raw) == ADT_A01_V251


def test_normalise_message_refuses_several_messages() -> None:
    with pytest.raises(Hl7ParseError) as caught:
        normalise_message(BATCH)
    assert caught.value.location == "MSH"
    assert "2 messages" in str(caught.value)


@pytest.mark.parametrize(
    "raw",
    [NOT_HL7, b"", b"   \r\n ", "hello world", b"PID|1||X^^^A^MR", b"\x00\x01\x02binary"],
    ids=["json", "empty", "blank", "prose", "pid-first", "binary"],
)
def test_input_that_is_not_hl7_raises_with_location_msh(raw: bytes | str) -> None:
    with pytest.raises(Hl7ParseError) as caught:
        split_batch(raw)
    assert caught.value.location == "MSH"


def test_segment_before_msh_is_refused_without_echoing_content() -> None:
    with pytest.raises(Hl7ParseError) as caught:
        split_batch("EVN|A01|20240101\r" + ADT_A01_V251)
    assert caught.value.location == "MSH"
    assert "20240101" not in str(caught.value)


@pytest.mark.parametrize(
    ("msh", "location"),
    [("MSH", "MSH-1"), ("MSHA^~\\&|X|Y", "MSH-1"), ("MSH|ab12|APP|FAC", "MSH-2")],
)
def test_broken_msh_header_names_the_field(msh: str, location: str) -> None:
    with pytest.raises(Hl7ParseError) as caught:
        split_batch(msh + "\rPID|1")
    assert caught.value.location == location


def test_doubled_escape_character_in_msh2_is_repaired() -> None:
    raw = ADT_A01_V251.replace("MSH|^~\\&|", "MSH|^~\\\\&|", 1)
    assert normalise_message(raw) == ADT_A01_V251


def test_invalid_utf8_falls_back_to_latin1() -> None:
    raw = ADT_A01_V251.replace("TESTPATIENT", "M\u00fcLLER").encode("latin-1")
    assert "M\u00fcLLER" in normalise_message(raw)


def test_msh18_charset_is_honoured_when_bytes_are_not_utf8() -> None:
    header = "MSH|^~\\&|A|B|C|D|20240101||ADT^A08|1|P|2.5||||||8859/15"
    raw = (header + "\rPID|1||X^^^A^MR||\u20acURO").encode("iso8859-15")
    assert normalise_message(raw).endswith("\u20acURO")


def test_valid_utf8_is_decoded_as_utf8() -> None:
    assert decode("PID|\u00e9".encode()) == "PID|\u00e9"


def test_segment_lines_strips_each_line() -> None:
    assert segment_lines("  MSH|a  \n\n\x0bPID|b\x1c\r\n") == ["MSH|a", "PID|b"]
