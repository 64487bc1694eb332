"""From one MLLP frame to committed inbox rows and the ACKs to send back. I/O (awaits the inbox).

:class:`FrameIntake` is what the listener (and the HTTP ingest route) call per frame. It splits
the frame (one message, several back to back, or an FHS/BHS batch), reads each MSH cheaply,
decides state and ACK code (:func:`cm_fhir.hl7v2.ack.decide`), renders the ACK, and hands every
message to the :class:`~cm_fhir.store.writer.InboxWriter`. It returns the ACK payloads only after
the writer reports the commit, so nothing is acknowledged before it is stored. A retransmission
gets the stored ACK of its original back; a storage failure gets AR (CE in enhanced mode) with
ERR 207, built fresh and never stored. A batch is answered by one batch of ACKs; its messages are
stored one row each, as UTF-8 text (a single-message frame is stored byte for byte).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from cm_fhir.errors import Hl7ParseError, StoreError
from cm_fhir.hl7v2 import ack as acks
from cm_fhir.hl7v2.framing import FrameTooLarge
from cm_fhir.hl7v2.header import (
    BatchHeader,
    MessageHeader,
    read_batch_header,
    read_header,
    read_patient_key,
)
from cm_fhir.hl7v2.normalise import decode, split_batch
from cm_fhir.store.inbox import NewMessage
from cm_fhir.store.writer import InboxWriter

__all__ = ["FrameIntake", "IntakeStats", "new_control_id"]

log = logging.getLogger(__name__)
_CONTROL_ID_PREFIX = secrets.token_hex(4)
_control_ids = itertools.count(1)


def new_control_id() -> str:
    """A fresh MSH-10 for an ACK: 8 random hex digits per process + a counter (20 characters)."""
    return f"{_CONTROL_ID_PREFIX}{next(_control_ids):012d}"


@dataclass(slots=True)
class IntakeStats:
    """Counters for health checks and tests (no message content)."""

    connections: int = 0
    refused_connections: int = 0
    frames: int = 0
    oversize_frames: int = 0
    discarded_bytes: int = 0
    store_failures: int = 0


@dataclass(slots=True)
class _Prepared:
    header: MessageHeader | None
    message: NewMessage
    codec: str


def _split(text: str) -> tuple[BatchHeader | None, list[str]]:
    """The batch header (if any) and the messages of a frame.

    A frame holding one plain CR-separated message (the usual case) skips the general splitter.
    """
    if text.startswith("MSH") and "\n" not in text and "\rMSH" not in text:
        return None, [text.rstrip("\r\t ")]
    return read_batch_header(text), split_batch(text)


class FrameIntake:
    """Stores the messages of a frame and builds the answers; shared by MLLP and HTTP ingest."""

    def __init__(self, writer: InboxWriter, stats: IntakeStats | None = None) -> None:
        self._writer = writer
        self.stats = stats or IntakeStats()

    async def handle_payload(self, payload: bytes, peer: str = "") -> list[bytes]:
        """Store the message(s) of one frame; return the ACK payloads to send, in order."""
        now = datetime.now(UTC)
        try:
            text, codec = payload.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            text, codec = decode(payload), "latin-1"
        batch: BatchHeader | None = None
        try:
            batch, messages = _split(text)
        except Hl7ParseError as exc:
            prepared = [self._unreadable(payload, exc, now, codec, peer)]
        else:
            batch_id = batch.control_id if batch else None
            single = len(messages) == 1 and batch is None
            prepared = [
                self._prepare(m, payload if single else m.encode(), batch_id, now, codec, peer)
                for m in messages
            ]
        try:
            stored = await self._writer.store_many([p.message for p in prepared])
        except StoreError:
            self.stats.store_failures += 1
            replies = [self._storage_failure_reply(p, now) for p in prepared]
        else:
            replies = [result.ack_bytes for result in stored]
        if batch is not None:
            inner = [r.decode(codec, "replace") for r in replies if r is not None]
            body = acks.build_batch_ack(batch, inner, control_id=new_control_id(), timestamp=now)
            return [body.encode(codec, "replace")]
        return [r for r in replies if r is not None]

    def _prepare(
        self, message: str, raw: bytes, batch_id: str | None, now: datetime, codec: str, peer: str
    ) -> _Prepared:
        digest = hashlib.sha256(message.encode("utf-8", "surrogatepass")).hexdigest()
        try:
            header = read_header(message)
        except Hl7ParseError as exc:
            return self._unreadable(raw, exc, now, codec, peer, digest)
        disposition = acks.decide(header)
        code = acks.response_code(header, disposition.ack_code)
        ack_bytes = None
        if disposition.reply and acks.ack_wanted(header, code):
            text = acks.build_ack(
                header, code, control_id=new_control_id(), timestamp=now, error=disposition.error
            )
            ack_bytes = text.encode(codec, "replace")
        new = NewMessage(
            raw=raw,
            content_sha256=digest,
            state=disposition.state,
            reason=disposition.reason,
            ack_code=code,
            ack_bytes=ack_bytes,
            sending_application=header.sending_application,
            sending_facility=header.sending_facility,
            control_id=header.control_id,
            message_type=header.message_type or None,
            trigger_event=header.trigger_event or None,
            version_id=header.version_id or None,
            application_ack_type=header.application_ack_type or None,
            patient_key=read_patient_key(message, header),
            batch_control_id=batch_id,
            peer=peer,
            received_at=now,
        )
        return _Prepared(header, new, codec)

    def _unreadable(
        self,
        raw: bytes,
        exc: Hl7ParseError,
        now: datetime,
        codec: str,
        peer: str,
        digest: str | None = None,
    ) -> _Prepared:
        disposition = acks.unparseable(exc.location, str(exc))
        text = acks.build_ack(
            None,
            disposition.ack_code,
            control_id=new_control_id(),
            timestamp=now,
            error=disposition.error,
        )
        new = NewMessage(
            raw=raw,
            content_sha256=digest or hashlib.sha256(raw).hexdigest(),
            state=disposition.state,
            reason=disposition.reason,
            ack_code=disposition.ack_code,
            ack_bytes=text.encode(codec, "replace"),
            peer=peer,
            received_at=now,
        )
        return _Prepared(None, new, codec)

    def _storage_failure_reply(self, prepared: _Prepared, now: datetime) -> bytes | None:
        header = prepared.header
        code = "CE" if header is not None and header.enhanced_mode else "AR"
        if not acks.ack_wanted(header, code):
            return None
        text = acks.build_ack(
            header, code, control_id=new_control_id(), timestamp=now, error=acks.storage_failure()
        )
        return text.encode(prepared.codec, "replace")

    def oversize_reply(self, event: FrameTooLarge, limit: int) -> list[bytes]:
        """AR (CR in enhanced mode) with ERR 207 for a frame over ``limit``; it is not stored."""
        self.stats.oversize_frames += 1
        log.warning("frame of %d bytes exceeds the limit of %d", event.size, limit)
        text = decode(event.prefix)
        try:
            header: MessageHeader | None = read_header(text.replace("\n", "\r"))
        except Hl7ParseError:
            header = None
        code = acks.response_code(header, "AR")
        if not acks.ack_wanted(header, code):
            return []
        error = acks.AckError("207", f"message exceeds the limit of {limit} bytes")
        reply = acks.build_ack(
            header, code, control_id=new_control_id(), timestamp=datetime.now(UTC), error=error
        )
        try:
            event.prefix.decode("utf-8")
            codec = "utf-8"
        except UnicodeDecodeError:
            codec = "latin-1"
        return [reply.encode(codec, "replace")]
