"""What the door refuses although MSH reads fine: content the store or the worker cannot hold.
Pure: no I/O.

:func:`processing_error` says why the worker's ADT parse (:func:`cm_fhir.hl7v2.adt.parse_adt`)
would fail on a message: it splits the message as the worker does and reads exactly the fields
whose absence or syntax makes that parse raise (PID, PID-3, MRG-1, the date/times it reads, the
MSH fields it needs), without building the event (a few tens of microseconds, against a hundred
or more for the whole parse). A property test holds it to ``parse_adt``: whatever it admits, the
parse reads. Its errors carry an HL7 table 0357 code (100 segment, 101 required field, 102 data
type) and the position.

The inbox and the case tables hold MSH-10, the sender (MSH-3/4) and patient keys in columns of
bounded length, and PostgreSQL refuses a NUL character in any text it stores; SQLite takes both
silently. So that a positive ACK means the same on both databases, :func:`content_error` refuses,
before anything is acknowledged: a NUL byte anywhere in the message, a key longer than its column
(:class:`KeyLimits`, filled in from the tables by the caller), and bytes that are not valid in the
UTF-8 MSH-18 declares. A patient key is ``system|value`` (the system from the mapping, the
assigning authority appended when unmapped), so every patient identifier (each PID-3 and MRG-1
repetition) is held to ``identifier`` characters and its assigning authority to ``authority``.
:func:`sender_allowed` applies the optional MSH-3/MSH-4 allowlist. Errors name positions
(``PID-3``), never values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cm_fhir.errors import Hl7ParseError
from cm_fhir.hl7v2.ack import AckError
from cm_fhir.hl7v2.header import MessageHeader
from cm_fhir.hl7v2.normalise import BATCH_ENVELOPE_SEGMENTS, normalise_message
from cm_fhir.hl7v2.parse import Hl7Message, Hl7Segment, parse_dtm, parse_er7
from cm_fhir.hl7v2.structures import SUPPORTED_EVENTS, is_supported_version
from cm_fhir.mapping.rules import IdentityRules

__all__ = [
    "KeyLimits",
    "content_error",
    "key_room_error",
    "nul_location",
    "processing_error",
    "sender_allowed",
]

_UTF8_NAMES = frozenset({"UNICODE UTF-8", "UTF-8", "UTF8"})


@dataclass(frozen=True, slots=True)
class KeyLimits:
    """Longest MSH-10, MSH-3/MSH-4 value, patient identifier and assigning authority accepted."""

    control_id: int = 199
    sender: int = 255
    identifier: int = 100
    authority: int = 64
    patient_key: int = 255  # ``system|value``, the key the case store files a patient under


def nul_location(message: str, field_separator: str) -> str:
    """The position (``PID-3``) of the first NUL character of ``message`` (which holds one)."""
    index = message.find("\x00")
    start = message.rfind("\r", 0, index) + 1
    segment = message[start:index]
    name = segment[:3] if len(segment) >= 3 else "MSH"
    number = segment.count(field_separator)
    if name == "MSH":
        number += 1  # MSH-1 is the field separator itself
    return f"{name}-{number}" if number else name


def _too_long(location: str, limit: int) -> AckError:
    return AckError("102", f"{location} is longer than {limit} characters", location)


def _identifier_error(message: str, header: MessageHeader, limits: KeyLimits) -> AckError | None:
    """A PID-3 or MRG-1 repetition whose id (CX.1) or authority (CX.4) is over its limit."""
    fs, encoding = header.field_separator, header.encoding_characters
    repetition = encoding[1] if len(encoding) > 1 else "~"
    for name, number in (("PID", 3), ("MRG", 1)):
        start = message.find(f"\r{name}{fs}")
        while start >= 0:
            end = message.find("\r", start + 1)
            fields = message[start + 1 : end if end >= 0 else len(message)].split(fs, number + 1)
            value = fields[number] if number < len(fields) else ""
            if len(value) <= min(limits.identifier, limits.authority):
                start = message.find(f"\r{name}{fs}", start + 1)
                continue  # the usual short field: no part of it can be over a limit
            for each in value.split(repetition):
                parts = each.split(encoding[0])
                if len(parts[0]) > limits.identifier:
                    return _too_long(f"{name}-{number}.1", limits.identifier)
                if len(parts) > 3 and len(parts[3]) > limits.authority:
                    return _too_long(f"{name}-{number}.4", limits.authority)
            start = message.find(f"\r{name}{fs}", start + 1)
    return None


def content_error(
    message: str,
    header: MessageHeader,
    limits: KeyLimits,
    *,
    valid_utf8: bool = True,
) -> AckError | None:
    """Why the store or the worker could not hold this message, or None when they can.

    ``valid_utf8`` says whether the received bytes decoded as UTF-8.
    """
    if "\x00" in message:
        location = nul_location(message, header.field_separator)
        return AckError("102", f"{location} holds a NUL character", location)
    if not valid_utf8 and header.character_set.upper() in _UTF8_NAMES:
        return AckError("102", "message is not valid in the character set of MSH-18", "MSH-18")
    if len(header.control_id) > limits.control_id:
        return _too_long("MSH-10", limits.control_id)
    if len(header.sending_application) > limits.sender:
        return _too_long("MSH-3", limits.sender)
    if len(header.sending_facility) > limits.sender:
        return _too_long("MSH-4", limits.sender)
    return _identifier_error(message, header, limits)


def key_room_error(identity: IdentityRules, limits: KeyLimits) -> str | None:
    """Why the configured patient identifier systems may not fit the patient key, or None.

    The key is ``<system>|<identifier>``; an authority without a configured system gets
    ``<default system>:<authority>``. The door admits identifiers up to ``limits.identifier`` and
    authorities up to ``limits.authority`` characters, so each system must leave room for them.
    """
    room = limits.patient_key - 1 - limits.identifier  # the "|" and the identifier
    default = identity.default_patient_system
    if len(default) > room - 1 - limits.authority:
        return (
            f"identity.default_patient_system is {len(default)} characters; at most "
            f"{room - 1 - limits.authority} fit the {limits.patient_key}-character patient key "
            f"(<system>:<authority up to {limits.authority}>|<identifier up to "
            f"{limits.identifier}>)"
        )
    for authority, system in sorted(identity.patient_systems.items()):
        if len(system) > room:
            return (
                f"identity.patient_systems[{authority[:20]}] is {len(system)} characters; at most "
                f"{room} fit the {limits.patient_key}-character patient key (<system>|<identifier "
                f"up to {limits.identifier}>)"
            )
    return None


def _matches(pattern: str, value: str, component_separator: str) -> bool:
    if pattern == "*":
        return True
    return value == pattern or value.split(component_separator, 1)[0].strip() == pattern


def sender_allowed(header: MessageHeader, allowed: tuple[str, ...]) -> bool:
    """Whether MSH-3/MSH-4 match an allowlist entry (an empty list allows every sender).

    An entry is ``APP|FACILITY``, ``APP`` (any facility) or uses ``*`` for either part; each part
    matches the field as sent or its first component (HD.1).
    """
    if not allowed:
        return True
    cs = header.component_separator
    for entry in allowed:
        application, _, facility = entry.partition("|")
        if _matches(application.strip() or "*", header.sending_application, cs) and _matches(
            facility.strip() or "*", header.sending_facility, cs
        ):
            return True
    return False


# The date/times parse_adt reads, by segment: (field, read only when the message has a PV1).
_MOMENTS = {"MSH": (7,), "EVN": (2, 6), "PID": (7, 29), "PV1": (44, 45)}
# A date/time every reader accepts: ASCII digits in range (days up to 28, so any month has it),
# nothing else. Anything not matching is read the worker's way (parse_dtm).
_PLAIN_MOMENT = re.compile(
    r"[1-9][0-9]{3}(?:0[1-9]|1[0-2])(?:0[1-9]|1[0-9]|2[0-8])"
    r"(?:(?:[01][0-9]|2[0-3])(?:[0-5][0-9](?:[0-5][0-9](?:\.[0-9]{1,4})?)?)?)?"
    r"(?:(?:\+(?:1[0-4]|0[0-9])|-(?:1[0-2]|0[0-9]))[0-5][0-9])?"
)
_PLAIN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # no separator, escape, blank or null
_SEGMENT_ID = re.compile(r"[A-Z][A-Z0-9]{2}")  # as normalise reads it
_POSITION = re.compile(r"[A-Z][A-Z0-9]{2}(-[0-9]+(\.[0-9]+)?)?")


def _required(location: str, text: str) -> AckError:
    return AckError("101", text, location)


def _moment_error(segment: Hl7Segment, number: int) -> AckError | None:
    """ERR 102 when SEG-n holds a value that is not an HL7 date/time (nulls and blanks pass)."""
    raw = segment.field(number)
    if not raw or _PLAIN_MOMENT.fullmatch(raw):
        return None  # the usual cases: absent, or plain digits that are surely a date/time
    if segment.is_null(number):
        return None
    value = segment.text(number)
    if value is None:
        return None
    location = segment.location(number)
    try:
        parse_dtm(value, location)
    except Hl7ParseError:
        return AckError("102", f"{location} is not a valid HL7 date/time", location)
    return None


def _has_identifier(segment: Hl7Segment, number: int) -> bool:
    """Whether some repetition of a CX field has a CX.1 (as ``identifiers`` reads it)."""
    first = segment.field(number).split(segment.encoding.component, 1)[0]
    if _PLAIN_ID.fullmatch(first):
        return True  # the usual case: the first repetition starts with a plain id
    if segment.is_null(number):
        return False
    return any(
        segment.text_in(segment.components(number, rep), 1) is not None
        for rep in range(len(segment.repetitions(number)))
    )


def _header_error(
    message: Hl7Message, first: dict[str, Hl7Segment]
) -> tuple[AckError | None, bool]:
    """An error in the MSH fields the parse needs; and whether the message is one it reads."""
    msh = message.msh
    message_type = msh.text(9, 1)
    if message_type is None:
        return _required("MSH-9", "MSH-9 message type is missing"), False
    if msh.text(10) is None:
        return _required("MSH-10", "MSH-10 message control id is missing"), False
    version = msh.text(12)
    if version is None:
        return _required("MSH-12", "MSH-12 version is missing"), False
    if not is_supported_version(version):
        return None, False  # the worker ignores it; the header door answers AR 203
    evn = first.get("EVN")
    event = msh.text(9, 2) or (evn.text(1) if evn is not None else None)
    return None, message_type == "ADT" and event in SUPPORTED_EVENTS


def _read_error(message: Hl7Message) -> AckError | None:
    first: dict[str, Hl7Segment] = {}
    for segment in reversed(message.segments):
        first[segment.id] = segment  # the first of each ID wins (as Hl7Message.first reads)
    error, adt = _header_error(message, first)
    if error is not None or not adt:
        return error
    pid = first.get("PID")
    if pid is None:
        return AckError("100", "message has no PID segment", "PID")
    if not _has_identifier(pid, 3):
        return _required("PID-3", "PID-3 holds no patient identifier")
    for name, numbers in _MOMENTS.items():
        holder = first.get(name)
        if holder is None:
            continue
        for number in numbers:
            if found := _moment_error(holder, number):
                return found
    pv2 = first.get("PV2") if "PV1" in first else None  # PV2 is read with a visit only
    if pv2 is not None and (found := _moment_error(pv2, 9)):
        return found
    if "MRG" in first:
        for segment in message.segments:
            if segment.id == "MRG" and not _has_identifier(segment, 1):
                return _required("MRG-1", "MRG-1 holds no prior identifier")
    return None


def _normal(message: str) -> bool:
    """Whether ``message`` is already what :func:`normalise_message` would make of it: one MSH
    first, CR between non-blank segments without surrounding whitespace or MLLP characters, no
    BOM, no doubled escape in MSH-2, no batch envelope. The usual message is; checking is cheaper
    than normalising.
    """
    if not message.startswith("MSH") or message[3:10] == "|^~\\\\&|" or "\n" in message:
        return False
    if "\x0b" in message or "\x1c" in message or "\rMSH" in message:
        return False
    for line in message.split("\r"):
        if not line or line != line.strip() or _SEGMENT_ID.fullmatch(line[:3]) is None:
            return False
        if line[:3] in BATCH_ENVELOPE_SEGMENTS:
            return False  # normalising drops these
    if len(message) < 8 or message[3].isalnum() or message[3].isspace():
        return False
    encoding = message[4:].split(message[3], 1)[0]
    return 2 <= len(encoding) <= 5 and not any(c.isalnum() or c.isspace() for c in encoding)


def processing_error(message: str) -> AckError | None:
    """Why the worker could not read this message as an ADT event, or None when it can.

    ``message`` is the text of one message as received (it is normalised here as the worker
    normalises what is stored). Messages the worker ignores (other types and events, other
    versions) are not its concern: they pass.
    """
    try:
        parsed = parse_er7(message if _normal(message) else normalise_message(message))
    except Hl7ParseError as exc:
        location = exc.location if exc.location and _POSITION.fullmatch(exc.location) else None
        return AckError(exc.code, str(exc), location)
    return _read_error(parsed)
