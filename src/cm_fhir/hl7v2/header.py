"""Cheap readers for the MSH header, the batch header and the patient ordering key. Pure: no I/O.

The ACK path of the listener must answer in microseconds, so it does not run a full parse: it
splits the first segment on the field separator the sender declared in MSH-1 and reads the few
fields an ACK and the inbox need (sender, receiver, message type, control id, version and the
acknowledgment types). Values are kept exactly as sent, still encoded in the sender's encoding
characters, so they can be echoed into an ACK unchanged. Errors name positions, never values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from cm_fhir.errors import Hl7ParseError

__all__ = [
    "BatchHeader",
    "MessageHeader",
    "read_batch_header",
    "read_header",
    "read_patient_key",
]

_SEGMENT_END = "\r"
_MSH_FIELDS = 19  # fields[0] .. fields[18] (MSH-18), the last one read


class MessageHeader(NamedTuple):
    """The MSH fields the intake needs, as sent (MSH-n numbering in the comments).

    A named tuple: one is built per inbound message on the ACK path, and a tuple is built several
    times faster than a frozen dataclass of fifteen fields.
    """

    field_separator: str  # MSH-1
    encoding_characters: str  # MSH-2
    sending_application: str  # MSH-3
    sending_facility: str  # MSH-4
    receiving_application: str  # MSH-5
    receiving_facility: str  # MSH-6
    message_type: str  # MSH-9.1
    trigger_event: str  # MSH-9.2
    message_structure: str  # MSH-9.3
    control_id: str  # MSH-10
    processing_id: str  # MSH-11
    version_id: str  # MSH-12
    accept_ack_type: str  # MSH-15
    application_ack_type: str  # MSH-16
    character_set: str  # MSH-18

    @property
    def component_separator(self) -> str:
        return self.encoding_characters[0]

    @property
    def enhanced_mode(self) -> bool:
        """True when MSH-15 or MSH-16 is valued: the sender asked for enhanced acknowledgment."""
        return bool(self.accept_ack_type or self.application_ack_type)

    @property
    def event_type(self) -> str:
        """``ADT^A01`` style message type and trigger event (``ADT`` if no event)."""
        if self.trigger_event:
            return f"{self.message_type}^{self.trigger_event}"
        return self.message_type


@dataclass(frozen=True, slots=True)
class BatchHeader:
    """The FHS or BHS fields a batch acknowledgment echoes."""

    segment: str  # "FHS" or "BHS"
    field_separator: str
    encoding_characters: str
    sending_application: str  # BHS-3
    sending_facility: str  # BHS-4
    receiving_application: str  # BHS-5
    receiving_facility: str  # BHS-6
    control_id: str  # BHS-11
    has_file_header: bool


def _fields(segment: str, name: str) -> list[str]:
    """Split an MSH/FHS/BHS segment so that ``fields[n]`` is field n (field 1 is the separator)."""
    if len(segment) < 5 or segment[3].isalnum() or segment[3] in " \r\n":
        raise Hl7ParseError(f"{name} segment has no field separator", location=f"{name}-1")
    separator = segment[3]
    parts = segment.split(separator)
    encoding = parts[1] if len(parts) > 1 else ""
    if not 2 <= len(encoding) <= 5 or separator in encoding:
        raise Hl7ParseError(f"{name}-2 does not hold encoding characters", location=f"{name}-2")
    # parts[0] is the segment ID and parts[1] is MSH-2, so field n is parts[n - 1].
    return [parts[0], separator, *parts[1:]]


def _field(fields: list[str], number: int) -> str:
    return fields[number] if number < len(fields) else ""


def read_header(message: str) -> MessageHeader:
    """Read the MSH segment of a normalised message (segments separated by CR).

    Raises:
        Hl7ParseError: the first segment is not MSH (code 100) or has no usable separators.
    """
    if not message.startswith("MSH"):
        raise Hl7ParseError("first segment is not MSH", location="MSH", code="100")
    end = message.find(_SEGMENT_END)
    fields = _fields(message if end < 0 else message[:end], "MSH")
    if len(fields) < _MSH_FIELDS:
        fields += [""] * (_MSH_FIELDS - len(fields))  # absent trailing fields read as empty
    encoding = fields[2]
    component = encoding[0]
    message_type = fields[9].split(component)
    count = len(message_type)
    return MessageHeader(
        field_separator=fields[1],
        encoding_characters=encoding,
        sending_application=fields[3],
        sending_facility=fields[4],
        receiving_application=fields[5],
        receiving_facility=fields[6],
        message_type=message_type[0].strip(),
        trigger_event=message_type[1].strip() if count > 1 else "",
        message_structure=message_type[2].strip() if count > 2 else "",
        control_id=fields[10].strip(),
        processing_id=fields[11].strip(),
        version_id=fields[12].split(component, 1)[0].strip(),
        accept_ack_type=fields[15].strip().upper(),
        application_ack_type=fields[16].strip().upper(),
        character_set=fields[18].strip(),
    )


def read_batch_header(text: str) -> BatchHeader | None:
    """Read the BHS (or, without one, the FHS) that opens ``text``; None if it opens with neither.

    ``text`` may use CR, LF or CRLF between segments; only the first two lines are looked at.
    """
    lines = [line.strip() for line in text.lstrip("\ufeff \t\r\n").splitlines()[:2]]
    if not lines or lines[0][:3] not in ("FHS", "BHS"):
        return None
    has_file_header = lines[0].startswith("FHS")
    segment = lines[0]
    if has_file_header and len(lines) > 1 and lines[1].startswith("BHS"):
        segment = lines[1]
    name = segment[:3]
    fields = _fields(segment, name)
    return BatchHeader(
        segment=name,
        field_separator=fields[1],
        encoding_characters=fields[2],
        sending_application=_field(fields, 3),
        sending_facility=_field(fields, 4),
        receiving_application=_field(fields, 5),
        receiving_facility=_field(fields, 6),
        control_id=_field(fields, 11).strip(),
        has_file_header=has_file_header,
    )


def read_patient_key(message: str, header: MessageHeader) -> str | None:
    """The ordering key of the message's patient: first PID-3 identifier and its authority.

    Returns ``"<id>^<assigning authority>"`` (PID-3.1 and PID-3.4 of the first repetition, as
    sent), or None when there is no PID segment or PID-3 holds no identifier.
    """
    marker = f"{_SEGMENT_END}PID{header.field_separator}"
    start = message.find(marker)
    if start < 0:
        return None
    end = message.find(_SEGMENT_END, start + 1)
    segment = message[start + 1 : end if end >= 0 else len(message)]
    fields = segment.split(header.field_separator, 4)  # PID-3 is fields[3]
    if len(fields) <= 3:
        return None
    encoding = header.encoding_characters
    repetition_separator = encoding[1] if len(encoding) > 1 else "~"
    first = fields[3].split(repetition_separator)[0]
    components = first.split(encoding[0])
    identifier = components[0].strip()
    if not identifier:
        return None
    authority = components[3].strip() if len(components) > 3 else ""
    return f"{identifier}^{authority}"
