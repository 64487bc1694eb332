"""A light ER7 reader: split a normalised message into segments and fields, read typed values.

Pure: no I/O. A full ``hl7apy.parser.parse_message`` builds the whole message tree with groups and
runs at tens of messages per second; ADT intake needs a dozen fields. So we split the text ourselves
(segment, field, repetition, component, subcomponent, using the message's own encoding characters)
and hand the typed values that need care to hl7apy: date/times are read with hl7apy's DTM rules
(precision from year to 1/10000 s, optional ``+/-HHMM`` offset). Escape sequences (``\\F\\``,
``\\S\\``, ``\\T\\``, ``\\R\\``, ``\\E\\``, ``\\Xhh\\``, ``\\.br\\``) are decoded here.

Explicit nulls: a field holding exactly ``""`` means "delete this value" and is reported by
:meth:`Hl7Segment.is_null`; the text readers never return it as a value. Time zones: a DTM with an
offset becomes an aware datetime; one without stays naive unless the caller passes
``default_tz``, which is then attached (never converted).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone, tzinfo

from hl7apy.utils import get_datetime_info

from cm_fhir.errors import Hl7ParseError
from cm_fhir.hl7v2.normalise import SEGMENT_SEPARATOR

__all__ = [
    "NULL",
    "EncodingCharacters",
    "Hl7Message",
    "Hl7Segment",
    "parse_dtm",
    "parse_er7",
]

NULL = '""'
"""The HL7 explicit null: the receiver shall delete the value it holds."""

_HEX_ESCAPE = re.compile(r"^X([0-9A-Fa-f]{2})+$")


@dataclass(frozen=True, slots=True)
class EncodingCharacters:
    """The separators of one message, from MSH-1 and MSH-2."""

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"

    @classmethod
    def from_msh(cls, msh: str) -> EncodingCharacters:
        """Read the separators from the start of an MSH segment (validated by normalise)."""
        field = msh[3]
        declared = msh[4:].split(field, 1)[0]
        defaults = ("^", "~", "\\", "&")
        chars = [declared[i] if i < len(declared) else defaults[i] for i in range(4)]
        return cls(field, chars[0], chars[1], chars[2], chars[3])

    def unescape(self, text: str) -> str:
        """Decode ER7 escape sequences; unknown sequences are kept as written."""
        esc = self.escape
        if esc not in text:
            return text
        out: list[str] = []
        pos = 0
        while True:
            start = text.find(esc, pos)
            end = text.find(esc, start + 1) if start >= 0 else -1
            if start < 0 or end < 0:
                out.append(text[pos:])
                return "".join(out)
            out.append(text[pos:start])
            out.append(self._decode_sequence(text[start + 1 : end], text[start : end + 1]))
            pos = end + 1

    def _decode_sequence(self, code: str, written: str) -> str:
        simple = {
            "F": self.field,
            "S": self.component,
            "T": self.subcomponent,
            "R": self.repetition,
            "E": self.escape,
            ".br": "\n",
            "H": "",
            "N": "",
        }
        if code in simple:
            return simple[code]
        if _HEX_ESCAPE.match(code):
            return bytes.fromhex(code[1:]).decode("latin-1")
        return written


class Hl7Segment:
    """One segment: its ID, position in the message and raw (still escaped) fields.

    ``field(n)`` is SEG-n as written. For MSH, MSH-1 is the field separator and MSH-2 the encoding
    characters, so numbering matches the standard for every segment.
    """

    __slots__ = ("_components", "_fields", "encoding", "id", "position")

    def __init__(self, text: str, position: int, encoding: EncodingCharacters) -> None:
        self.position = position
        self.encoding = encoding
        parts = text.split(encoding.field)
        self.id = parts[0]
        if self.id == "MSH":
            parts = [parts[0], encoding.field, *parts[1:]]
        self._fields = parts
        # Split components by (field, repetition): the readers ask for the same ones repeatedly.
        self._components: dict[tuple[int, int], list[str]] = {}

    def field(self, n: int) -> str:
        """SEG-n as written, ``""`` if absent. An explicit null comes back as ``'""'``."""
        fields = self._fields
        return fields[n] if 0 < n < len(fields) else ""

    def is_null(self, n: int) -> bool:
        """True if SEG-n is the explicit null ``""`` (delete the value)."""
        fields = self._fields
        return 0 < n < len(fields) and fields[n].strip() == NULL

    def repetitions(self, n: int) -> list[str]:
        """The non-empty repetitions of SEG-n (an explicit null gives none)."""
        raw = self.field(n)
        if not raw or raw.strip() == NULL:
            return []
        return [rep for rep in raw.split(self.encoding.repetition) if rep.strip()]

    def components(self, n: int, repetition: int = 0) -> list[str]:
        """The raw components of one repetition of SEG-n (``[]`` if that repetition is absent)."""
        return list(self._split(n, repetition))

    def _split(self, n: int, repetition: int) -> list[str]:
        key = (n, repetition)
        found = self._components.get(key)
        if found is None:
            raw = self.field(n)
            if repetition == 0 and self.encoding.repetition not in raw:
                # One repetition: the same as repetitions(n)[0], without the list.
                blank = not raw.strip() or raw.strip() == NULL
                found = [] if blank else raw.split(self.encoding.component)
            else:
                reps = self.repetitions(n)
                found = (
                    reps[repetition].split(self.encoding.component)
                    if repetition < len(reps)
                    else []
                )
            self._components[key] = found
        return found

    def text(self, n: int, component: int = 1, subcomponent: int = 1) -> str | None:
        """SEG-n.component.subcomponent (1-based) of the first repetition, decoded and trimmed.

        Empty values and explicit nulls give None.
        """
        fields = self._fields
        if not (0 < n < len(fields) and fields[n]):
            return None
        return self.text_in(self._split(n, 0), component, subcomponent)

    def text_in(
        self, components: list[str], component: int = 1, subcomponent: int = 1
    ) -> str | None:
        """Like :meth:`text` on components already split from one repetition."""
        if component > len(components):
            return None
        part = components[component - 1]
        encoding = self.encoding
        if encoding.subcomponent in part:
            parts = part.split(encoding.subcomponent)
            if subcomponent > len(parts):
                return None
            part = parts[subcomponent - 1]
        elif subcomponent > 1:
            return None
        if encoding.escape in part:
            part = encoding.unescape(part)
        value = part.strip()
        return None if not value or value == NULL else value

    def location(self, n: int) -> str:
        """The position name of SEG-n, e.g. ``"PV1-44"``."""
        return f"{self.id}-{n}"


@dataclass(frozen=True, slots=True)
class Hl7Message:
    """A normalised message split into segments (pure data, nothing typed yet)."""

    encoding: EncodingCharacters
    segments: tuple[Hl7Segment, ...]

    @property
    def msh(self) -> Hl7Segment:
        """The MSH segment (always the first one)."""
        return self.segments[0]

    def first(self, segment_id: str) -> Hl7Segment | None:
        """The first segment with this ID, or None."""
        for segment in self.segments:
            if segment.id == segment_id:
                return segment
        return None

    def all(self, segment_id: str) -> list[Hl7Segment]:
        """Every segment with this ID, in message order."""
        return [segment for segment in self.segments if segment.id == segment_id]


def parse_er7(message: str) -> Hl7Message:
    """Split a normalised message (see :mod:`cm_fhir.hl7v2.normalise`) into segments.

    Raises:
        Hl7ParseError: the text does not start with MSH, or a segment has no 3-character ID
            (``location`` names the segment's position, e.g. ``"segment 3"``).
    """
    lines = message.split(SEGMENT_SEPARATOR)
    if not lines[0].startswith("MSH") or len(lines[0]) < 8:
        raise Hl7ParseError("message does not start with an MSH segment", location="MSH")
    encoding = EncodingCharacters.from_msh(lines[0])
    segments: list[Hl7Segment] = []
    for position, line in enumerate(lines, start=1):
        segment = Hl7Segment(line, position, encoding)
        if len(segment.id) != 3 or not segment.id.isalnum() or not segment.id.isupper():
            raise Hl7ParseError(
                f"segment {position} has no valid segment ID", location=f"segment {position}"
            )
        segments.append(segment)
    return Hl7Message(encoding, tuple(segments))


def parse_dtm(value: str, location: str, default_tz: tzinfo | None = None) -> datetime:
    """Read an HL7 DTM/TS value (``YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]``).

    Missing precision is filled with the earliest instant (``2024`` -> 2024-01-01 00:00). With an
    offset the result is aware; without one it is naive, or carries ``default_tz`` if given.

    Raises:
        Hl7ParseError: the value is not a valid date/time; the message names ``location`` only.
    """
    value = value.strip()
    read = _read_common_dtm(value)
    if read is None:
        try:
            moment, _fmt, offset, _precision = get_datetime_info(value)
        except (ValueError, TypeError, IndexError) as exc:
            message = f"{location} is not a valid HL7 date/time"
            raise Hl7ParseError(message, location=location) from exc
    else:
        moment, offset = read
    if offset:
        zone = _ZONES.get(offset) or _zone(offset, location)
        return moment.replace(tzinfo=zone)  # type: ignore[no-any-return]
    if default_tz is not None:
        return moment.replace(tzinfo=default_tz)  # type: ignore[no-any-return]
    return moment  # type: ignore[no-any-return]


# The usual shape, ``YYYYMMDD[HH[MM[SS[.S{1,4}]]]][+/-ZZZZ]`` in ASCII digits, read directly. The
# offset ranges are the ones hl7apy's reader accepts. Anything else (year or month precision,
# odd digits, out-of-range values) goes to hl7apy, so both paths give the same result or error.
_COMMON_DTM = re.compile(
    r"([0-9]{4})([0-9]{2})([0-9]{2})"
    r"(?:([0-9]{2})(?:([0-9]{2})(?:([0-9]{2})(?:\.([0-9]{1,4}))?)?)?)?"
    r"((?:\+(?:1[0-4]|0[0-9])|-(?:1[0-2]|0[0-9]))[0-5][0-9])?"
)
_ZONES: dict[str, timezone] = {}


def _read_common_dtm(value: str) -> tuple[datetime, str] | None:
    match = _COMMON_DTM.fullmatch(value)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    try:
        moment = datetime(
            int(year),
            int(month),
            int(day),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            int(fraction.ljust(6, "0")) if fraction else 0,
        )
    except ValueError:
        return None
    return moment, offset or ""


def _zone(offset: str, location: str) -> timezone:
    sign = -1 if offset[0] == "-" else 1
    hours, minutes = int(offset[1:3]), int(offset[3:5])
    if hours > 14 or minutes > 59:
        raise Hl7ParseError(f"{location} has an invalid UTC offset", location=location)
    zone = timezone(sign * timedelta(hours=hours, minutes=minutes))
    if len(_ZONES) < 256:
        _ZONES[offset] = zone
    return zone


def parse_date(value: str, location: str) -> date:
    """Read an HL7 DT (or the date part of a DTM, as birth dates often are)."""
    return parse_dtm(value, location).date()
