"""Normalise raw HL7v2 text before parsing. Pure: no I/O.

Real senders and sample files deviate from the standard in small, predictable ways: a UTF-8 byte
order mark, LF or CRLF instead of CR between segments (hl7apy silently drops every segment after
MSH when the separator is not CR), blank lines, trailing spaces, MLLP block characters left in a
file, FHS/BHS batch envelopes, or several messages back to back in one file. This module turns such
input into clean messages: text with CR between segments, no BOM, no trailing whitespace and no
trailing segment terminator. Bytes are decoded as UTF-8; if that fails, the charset named in MSH-18
is used when we know it, else latin-1 (which never fails). Explicit nulls (``""``) are left as they
are: they are data, and :mod:`cm_fhir.hl7v2.structures` gives them their meaning. Input that is not
HL7 at all raises :class:`~cm_fhir.errors.Hl7ParseError` with ``location="MSH"``.
"""

from __future__ import annotations

import re

from cm_fhir.errors import Hl7ParseError

__all__ = [
    "BATCH_ENVELOPE_SEGMENTS",
    "SEGMENT_SEPARATOR",
    "decode",
    "normalise_message",
    "segment_lines",
    "split_batch",
]

SEGMENT_SEPARATOR = "\r"
"""The HL7 segment terminator; normalised messages use it between segments only."""

BATCH_ENVELOPE_SEGMENTS = frozenset({"FHS", "BHS", "BTS", "FTS"})
"""File and batch header/trailer segments; they wrap messages and are dropped."""

_BOM = "\ufeff"
_UTF8_BOM = b"\xef\xbb\xbf"
# MLLP start-block / end-block characters sometimes left in files captured off the wire.
_MLLP_CHARS = "\x0b\x1c"
_LINE_BREAK = re.compile(r"\r\n|\n|\r")
_SEGMENT_ID = re.compile(r"[A-Z][A-Z0-9]{2}")

# MSH-18 (HL7 table 0211) values we can honour when the bytes are not valid UTF-8.
_MSH18_CODECS: dict[str, str] = {
    "ASCII": "latin-1",
    "8859/1": "latin-1",
    "8859/2": "iso8859-2",
    "8859/3": "iso8859-3",
    "8859/4": "iso8859-4",
    "8859/5": "iso8859-5",
    "8859/6": "iso8859-6",
    "8859/7": "iso8859-7",
    "8859/8": "iso8859-8",
    "8859/9": "iso8859-9",
    "8859/15": "iso8859-15",
    "UNICODE UTF-8": "utf-8",
}


def decode(raw: bytes | str) -> str:
    """Return ``raw`` as text without a byte order mark.

    Bytes are decoded as UTF-8; if they are not valid UTF-8, with the single-byte charset MSH-18
    names (table 0211), else latin-1. Text is returned as given, minus a leading BOM.
    """
    if isinstance(raw, str):
        return raw[1:] if raw.startswith(_BOM) else raw
    data = raw[len(_UTF8_BOM) :] if raw.startswith(_UTF8_BOM) else raw
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        codec = _msh18_codec(data)
        try:
            return data.decode(codec)
        except UnicodeDecodeError:
            return data.decode("latin-1")


def _msh18_codec(data: bytes) -> str:
    """The codec MSH-18 names, or latin-1. Reads only the first segment."""
    first = _LINE_BREAK.split(data[:4096].decode("latin-1"), maxsplit=1)[0].lstrip(_MLLP_CHARS)
    if not first.startswith("MSH") or len(first) < 4:
        return "latin-1"
    fields = first.split(first[3])
    # fields[0] is "MSH" and MSH-1 is the separator itself, so MSH-n is fields[n - 1].
    if len(fields) < 18:
        return "latin-1"
    charset = fields[17].split(first[4])[0].strip().upper()
    return _MSH18_CODECS.get(charset, "latin-1")


def segment_lines(text: str) -> list[str]:
    """Split text into segments on CR, LF or CRLF; drop blank lines and trailing whitespace.

    Leading whitespace and MLLP block characters are also removed from each line, since a segment
    ID never starts with a space.
    """
    lines: list[str] = []
    for line in _LINE_BREAK.split(text):
        cleaned = line.strip().strip(_MLLP_CHARS).strip()
        if cleaned:
            lines.append(cleaned)
    return lines


def _segment_id(line: str) -> str:
    """The three-letter segment ID of a line, or ``""`` if the line does not start with one."""
    head = line[:3]
    if _SEGMENT_ID.fullmatch(head) is None:
        return ""
    return head


def _check_msh(line: str, index: int) -> None:
    """Reject a first segment that cannot be an MSH header (position only, never content)."""
    if len(line) < 8 or line[3].isalnum() or line[3].isspace():
        raise Hl7ParseError(
            f"message {index}: MSH segment is too short or has no field separator",
            location="MSH-1",
        )
    separator = line[3]
    encoding = line[4:].split(separator, 1)[0]
    if not 2 <= len(encoding) <= 5 or any(c.isalnum() or c.isspace() for c in encoding):
        raise Hl7ParseError(
            f"message {index}: MSH-2 does not hold valid encoding characters", location="MSH-2"
        )


def _repair_msh(line: str) -> str:
    """Undo a doubled escape character in MSH-2 (``^~\\\\&``), a common copy-paste artefact."""
    if line[3:10] == "|^~\\\\&|":
        return "MSH|^~\\&|" + line[10:]
    return line


def split_batch(raw: bytes | str) -> list[str]:
    """Split a message, a batch (FHS/BHS ... BTS/FTS) or back-to-back messages into messages.

    Each returned message is normalised: segments separated by CR, no BOM, no trailing whitespace.
    Envelope segments are dropped. A plain message gives a one-element list.

    Raises:
        Hl7ParseError: the input holds no MSH segment, or a segment other than a batch envelope
            comes before the first MSH (``location="MSH"``), or an MSH has no usable separators.
    """
    text = decode(raw)
    messages: list[list[str]] = []
    for number, line in enumerate(segment_lines(text), start=1):
        segment_id = _segment_id(line)
        if segment_id in BATCH_ENVELOPE_SEGMENTS:
            continue
        if segment_id == "MSH":
            line = _repair_msh(line)
            _check_msh(line, len(messages) + 1)
            messages.append([line])
        elif not messages:
            raise Hl7ParseError(
                f"segment {number} comes before any MSH segment; input is not an HL7v2 message",
                location="MSH",
            )
        else:
            messages[-1].append(line)
    if not messages:
        raise Hl7ParseError("no MSH segment found; input is not an HL7v2 message", location="MSH")
    return [SEGMENT_SEPARATOR.join(segments) for segments in messages]


def normalise_message(raw: bytes | str) -> str:
    """Return one normalised message: CR between segments, no BOM, no trailing whitespace.

    A batch envelope around a single message is removed.

    Raises:
        Hl7ParseError: the input is not HL7v2 (``location="MSH"``) or holds more than one message
            (use :func:`split_batch` for those).
    """
    messages = split_batch(raw)
    if len(messages) != 1:
        raise Hl7ParseError(
            f"input holds {len(messages)} messages where one was expected", location="MSH"
        )
    return messages[0]
