"""Acknowledgment decisions and ACK messages (original and enhanced mode). Pure: no I/O.

:func:`decide` turns a read header into an intake :class:`Disposition`: the inbox state, the
acknowledgment code and an optional error with an HL7 table 0357 code. :func:`build_ack` renders
the ACK: MSH-3/4 and MSH-5/6 swapped, MSH-9 ``ACK^<event>^ACK``, a fresh MSH-10, MSH-11/12
copied, the sender's separators, MSA-2 echoing MSH-10 and, on error, an ERR segment (ERR-2/3/4/8
from v2.5 on, ERR-1 before) whose text names positions only, never values. :func:`ack_wanted`
applies the enhanced-mode accept-acknowledgment condition of MSH-15 (HL7 table 0155).

Original mode (MSH-15 and MSH-16 empty) answers AA/AE/AR; enhanced mode answers with an accept
acknowledgment CA/CE/CR. Application acknowledgments in enhanced mode (MSH-16) are not sent here:
they would come from the worker once a message is processed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cm_fhir.hl7v2.header import BatchHeader, MessageHeader
from cm_fhir.hl7v2.structures import SUPPORTED_EVENTS, is_supported_version

__all__ = [
    "ENHANCED_CODES",
    "HANDLED_ADT_EVENTS",
    "AckError",
    "Disposition",
    "ack_wanted",
    "build_ack",
    "build_batch_ack",
    "decide",
    "hl7_timestamp",
    "response_code",
    "storage_failure",
    "unparseable",
]

HANDLED_ADT_EVENTS = SUPPORTED_EVENTS
"""ADT trigger events the case-management workflow acts on (the events the ADT parser reads);
other ADT events are ignored (AA)."""

ENHANCED_CODES = {"AA": "CA", "AE": "CE", "AR": "CR"}
"""Original-mode code -> enhanced-mode accept acknowledgment code."""

_ERROR_TEXT = {
    "100": "Segment sequence error",
    "101": "Required field missing",
    "102": "Data type error",
    "200": "Unsupported message type",
    "201": "Unsupported event code",
    "203": "Unsupported version id",
    "207": "Application internal error",
}
_last_timestamp: list[tuple[tuple[float, timedelta | None] | None, str]] = [(None, "")]
_DEFAULT_FIELD_SEPARATOR = "|"
_DEFAULT_ENCODING = "^~\\&"


@dataclass(frozen=True, slots=True)
class AckError:
    """One ERR segment: table 0357 code, location (``MSH-9`` / ``MSH-9.2``) and a PHI-free text."""

    code: str
    text: str
    location: str | None = None
    severity: str = "E"


@dataclass(frozen=True, slots=True)
class Disposition:
    """What the intake does with one message: inbox state, original-mode ACK code, error."""

    state: str  # "received" | "ignored" (AA, nothing to do) | "refused" (AE/AR at the door)
    ack_code: str  # "AA" | "AE" | "AR" (original mode; see ENHANCED_CODES)
    error: AckError | None = None
    reason: str | None = None
    reply: bool = True  # False for inbound ACK messages: acknowledgments are never acknowledged


# The outcomes without an error are the same every time (frozen, so they are shared).
_RECEIVED = Disposition("received", "AA")
_NOT_HANDLED = Disposition("ignored", "AA", None, "ADT event not handled")
_ACKNOWLEDGMENT = Disposition("ignored", "AA", None, "acknowledgment message", reply=False)


def decide(header: MessageHeader) -> Disposition:
    """Classify a message by its header alone (the ACK path never runs a full parse)."""
    if not header.message_type:
        return _content_error("101", "MSH-9", "MSH-9 is empty")
    if not header.control_id:
        return _content_error("101", "MSH-10", "MSH-10 is empty")
    if not header.version_id:
        return _content_error("101", "MSH-12", "MSH-12 is empty")
    if not is_supported_version(header.version_id):
        error = AckError("203", "MSH-12 names a version this interface does not accept", "MSH-12")
        return Disposition("refused", "AR", error, "unsupported version")
    if header.message_type == "ACK":
        return _ACKNOWLEDGMENT
    if header.message_type != "ADT":
        error = AckError("200", "MSH-9.1 is not a message type this interface accepts", "MSH-9.1")
        return Disposition("refused", "AR", error, "unsupported message type")
    if not header.trigger_event:
        return _content_error("101", "MSH-9.2", "MSH-9.2 is empty")
    if header.trigger_event not in HANDLED_ADT_EVENTS:
        return _NOT_HANDLED
    return _RECEIVED


def _content_error(code: str, location: str, text: str) -> Disposition:
    return Disposition("refused", "AE", AckError(code, text, location), f"{location}: {text}")


def unparseable(location: str | None, text: str) -> Disposition:
    """The disposition of a message whose MSH cannot be read at all."""
    error = AckError("100", text, location or "MSH")
    return Disposition("refused", "AE", error, f"{location or 'MSH'}: {text}")


def storage_failure() -> AckError:
    """The ERR of an AR/CE sent because the inbox could not commit the message."""
    return AckError("207", "message could not be stored; please resend")


def ack_wanted(header: MessageHeader | None, code: str) -> bool:
    """Whether an accept acknowledgment is sent, per MSH-15 (table 0155) in enhanced mode.

    Original mode always answers. In enhanced mode: AL (or empty) always, NE never, ER only on
    error or reject, SU only on success.
    """
    if header is None or not header.enhanced_mode:
        return True
    condition = header.accept_ack_type or "AL"
    success = code in ("AA", "CA")
    if condition == "NE":
        return False
    if condition == "ER":
        return not success
    if condition == "SU":
        return success
    return True


def response_code(header: MessageHeader | None, original_code: str) -> str:
    """The MSA-1 code for this sender: the original-mode code or its enhanced counterpart."""
    if header is not None and header.enhanced_mode:
        return ENHANCED_CODES[original_code]
    return original_code


def hl7_timestamp(moment: datetime) -> str:
    """Format an aware datetime as an HL7 DTM with offset: ``YYYYMMDDHHMMSS+ZZZZ``."""
    # The ACKs of one second share their text: keep the last one. The key holds the offset too,
    # since equal instants with other offsets print differently. One tuple, replaced whole.
    key = (moment.timestamp() // 1, moment.utcoffset())
    last = _last_timestamp[0]
    if last[0] == key:
        return last[1]
    text = moment.strftime("%Y%m%d%H%M%S%z")
    _last_timestamp[0] = (key, text)
    return text


def _escape(text: str, field_separator: str, encoding: str) -> str:
    """Escape our own text for the sender's separators (HL7 escape sequences)."""
    escape = encoding[2] if len(encoding) > 2 else "\\"
    names = dict(zip(encoding[:2] + encoding[3:4], "SRT", strict=False))
    out = text.replace(escape, f"{escape}E{escape}").replace(field_separator, f"{escape}F{escape}")
    for char, name in names.items():
        out = out.replace(char, f"{escape}{name}{escape}")
    return out.replace("\r", " ").replace("\n", " ")


def _version_tuple(version: str) -> tuple[int, ...]:
    parts: list[int] = []
    for piece in version.split("."):
        if not piece.isdigit():
            break
        parts.append(int(piece))
    return tuple(parts)


def _err_segment(error: AckError, version: str, fs: str, encoding: str) -> str:
    cs = encoding[0]
    sub = encoding[3] if len(encoding) > 3 else "&"
    segment, field, component = "", "", ""
    if error.location:
        segment, _, position = error.location.partition("-")
        field, _, component = position.partition(".")
    text = _escape(error.text, fs, encoding)
    meaning = _ERROR_TEXT.get(error.code, "")
    if _version_tuple(version) >= (2, 5) or not version:
        # ERL: segment ^ sequence ^ field ^ repetition ^ component, as far as the position goes
        parts = [segment, "1", *([field, "1", component] if field else [])]
        location = cs.join(parts).rstrip(cs) if segment else ""
        code = cs.join([error.code, meaning, "HL70357"])
        fields = ["ERR", "", location, code, error.severity, "", "", "", text]
    else:
        eld_code = sub.join([error.code, meaning, "HL70357"])
        eld = cs.join([segment, "1" if segment else "", field, eld_code])
        fields = ["ERR", eld]
    return fs.join(fields)


def build_ack(
    header: MessageHeader | None,
    code: str,
    *,
    control_id: str,
    timestamp: datetime,
    error: AckError | None = None,
) -> str:
    """Render an ACK for ``header`` (None when MSH could not be read: defaults are used).

    ``code`` is MSA-1 as sent (AA/AE/AR or CA/CE/CR). Segments end with CR.
    """
    fs = header.field_separator if header else _DEFAULT_FIELD_SEPARATOR
    encoding = header.encoding_characters if header else _DEFAULT_ENCODING
    cs = encoding[0]
    version = header.version_id if header else ""
    trigger = header.trigger_event if header else ""
    msh = [
        "MSH",
        encoding,
        header.receiving_application if header else "",
        header.receiving_facility if header else "",
        header.sending_application if header else "",
        header.sending_facility if header else "",
        hl7_timestamp(timestamp),
        "",
        cs.join(["ACK", trigger, "ACK"]) if trigger else "ACK",
        control_id,
        header.processing_id if header else "P",
        version or "2.5",
    ]
    if header is not None and header.character_set:
        msh += ["", "", "", "", "", header.character_set]
    msa = ["MSA", code, header.control_id if header else ""]
    if error is not None and _version_tuple(version) < (2, 5) and version:
        msa.append(_escape(error.text, fs, encoding))
    segments = [fs.join(msh), fs.join(msa)]
    if error is not None:
        segments.append(_err_segment(error, version, fs, encoding))
    return "".join(segment + "\r" for segment in segments)


def build_batch_ack(
    batch: BatchHeader,
    acks: list[str],
    *,
    control_id: str,
    timestamp: datetime,
) -> str:
    """Wrap ACK messages in a batch answering ``batch`` (BHS-12 echoes BHS-11; FHS if sent)."""
    fs, encoding = batch.field_separator, batch.encoding_characters
    header = [
        encoding,
        batch.receiving_application,
        batch.receiving_facility,
        batch.sending_application,
        batch.sending_facility,
        hl7_timestamp(timestamp),
        "",
        "",
        "",
        control_id,
        batch.control_id,
    ]
    out: list[str] = []
    if batch.has_file_header:
        out.append(fs.join(["FHS", *header]) + "\r")
    out.append(fs.join(["BHS", *header]) + "\r")
    out.extend(acks)
    out.append(fs.join(["BTS", str(len(acks))]) + "\r")
    if batch.has_file_header:
        out.append(fs.join(["FTS", "1"]) + "\r")
    return "".join(out)
