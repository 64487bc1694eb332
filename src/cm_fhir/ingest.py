"""From one MLLP frame to committed inbox rows and the ACKs to send back. I/O (awaits the inbox).

:class:`FrameIntake` is what the listener (and the HTTP ingest route) call per frame. It splits
the frame (one message, several back to back, or an FHS/BHS batch), reads each MSH cheaply,
decides state and ACK code (:func:`cm_fhir.hl7v2.ack.decide`), renders the ACK, and hands every
message to the :class:`~cm_fhir.store.writer.InboxWriter`. It returns the ACK payloads only after
the writer reports the commit, so nothing is acknowledged before it is stored. A retransmission
gets the stored ACK of its original back; a storage failure gets AR (CE in enhanced mode) with
ERR 207, built fresh and never stored. A batch is answered by one batch of ACKs; its messages are
stored one row each, as UTF-8 text (a single-message frame is stored byte for byte).

At the door (:class:`~cm_fhir.ingest_door.IntakeRules`): a sender outside the MSH-3/MSH-4 allowlist
is answered AR (CR) with ERR 207 and its message body is never stored (a body-less ``refused`` row
records the refusal, a bounded number per minute); a message the store could not hold
(:func:`~cm_fhir.hl7v2.admissible.content_error`: NUL, over-long keys, bytes invalid in the UTF-8
MSH-18 names) is answered AR (CR) with ERR 102 naming the position, and an ADT event the worker
could not read (:func:`~cm_fhir.hl7v2.admissible.processing_error`) AE (CE) with ERR 100/101/102;
both are stored ``refused``: kept, never processed. Of an unreadable message only the first
``unreadable_keep_bytes`` are stored, with the SHA-256 of the whole and its length in the row's
reason. :meth:`FrameIntake.record_refused_connection` writes down a connection refused at accept.
:meth:`FrameIntake.handle_frame` reports how many messages of a frame were unreadable, so the
listener can throttle a peer that sends garbage.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from cm_fhir.errors import Hl7ParseError, StoreError
from cm_fhir.hl7v2 import ack as acks
from cm_fhir.hl7v2.admissible import content_error, processing_error, sender_allowed
from cm_fhir.hl7v2.framing import FrameTooLarge
from cm_fhir.hl7v2.header import (
    BatchHeader,
    MessageHeader,
    read_batch_header,
    read_header,
    read_patient_key,
)
from cm_fhir.hl7v2.normalise import decode, split_batch
from cm_fhir.ingest_door import IntakeRules, IntakeStats, new_control_id
from cm_fhir.mllp_peers import RefusalLog
from cm_fhir.store.inbox import NewMessage, StoredMessage
from cm_fhir.store.tables import InboxState
from cm_fhir.store.writer import InboxWriter

__all__ = ["FrameAnswer", "FrameIntake"]

log = logging.getLogger(__name__)
_RECEIVED = InboxState.RECEIVED.value
_REFUSED = InboxState.REFUSED.value
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_SENDER_REFUSED = acks.AckError(
    "207", "MSH-3/MSH-4 name a sender this interface does not accept", "MSH-3"
)
_SENDER_REASON = "MSH-3/MSH-4 outside mllp.allowed_senders; the message body is not kept"


@dataclass(frozen=True, slots=True)
class FrameAnswer:
    """The ACK payloads of one frame, in order, and how many of its messages were unreadable."""

    replies: list[bytes]
    unreadable: int = 0


@dataclass(slots=True)
class _Prepared:
    header: MessageHeader | None
    message: NewMessage | None  # None: refused at the door, not stored
    codec: str
    reply: bytes | None = None  # the answer of a message that is not stored
    unreadable: bool = False


def _log_received(messages: list[NewMessage], saved: list[StoredMessage], peer: str) -> None:
    """One line per stored message: ids and codes only, never content."""
    if not log.isEnabledFor(logging.INFO):
        return
    for message, row in zip(messages, saved, strict=True):
        sender = f"{message.sending_application or ''}|{message.sending_facility or ''}"
        event = f"{message.message_type or ''}^{message.trigger_event or ''}"
        log.info(
            "message received",
            extra={
                "inbox_id": row.id,
                "sender": None if sender == "|" else sender,
                "control_id": message.control_id,
                "event": None if event == "^" else event,
                "ack_code": row.ack_code,
                "state": message.state,
                "duplicate": row.duplicate,
                "peer": peer,
            },
        )


def _split(text: str) -> tuple[BatchHeader | None, list[str]]:
    """The batch header (if any) and the messages of a frame.

    A frame holding one plain CR-separated message (the usual case) skips the general splitter.
    """
    if text.startswith("MSH") and "\n" not in text and "\rMSH" not in text:
        return None, [text.rstrip("\r\t ")]
    return read_batch_header(text), split_batch(text)


class FrameIntake:
    """Stores the messages of a frame and builds the answers; shared by MLLP and HTTP ingest."""

    def __init__(
        self,
        writer: InboxWriter,
        stats: IntakeStats | None = None,
        rules: IntakeRules | None = None,
    ) -> None:
        self._writer = writer
        self.stats = stats or IntakeStats()
        self.rules = rules or IntakeRules()
        self.refusals = RefusalLog()

    async def handle_payload(self, payload: bytes, peer: str = "") -> list[bytes]:
        """Store the message(s) of one frame; return the ACK payloads to send, in order."""
        return (await self.handle_frame(payload, peer)).replies

    async def handle_frame(self, payload: bytes, peer: str = "") -> FrameAnswer:
        """Store the message(s) of one frame; return the ACKs and the count of unreadable ones."""
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
        to_store = [p.message for p in prepared if p.message is not None]
        replies: list[bytes | None] = [p.reply for p in prepared]
        if to_store:
            try:
                saved = await self._writer.store_many(to_store)
                _log_received(to_store, saved, peer)
                stored = iter(saved)
            except StoreError:
                self.stats.store_failures += 1
                replies = [
                    p.reply if p.message is None else self._storage_failure_reply(p, now)
                    for p in prepared
                ]
            else:
                replies = [
                    p.reply if p.message is None else next(stored).ack_bytes for p in prepared
                ]
        unreadable = sum(p.unreadable for p in prepared)
        self.stats.unreadable_messages += unreadable
        if batch is not None:
            inner = [r.decode(codec, "replace") for r in replies if r is not None]
            body = acks.build_batch_ack(batch, inner, control_id=new_control_id(), timestamp=now)
            return FrameAnswer([body.encode(codec, "replace")], unreadable)
        return FrameAnswer([r for r in replies if r is not None], unreadable)

    def _prepare(
        self, message: str, raw: bytes, batch_id: str | None, now: datetime, codec: str, peer: str
    ) -> _Prepared:
        try:
            header = read_header(message)
        except Hl7ParseError as exc:
            return self._unreadable(raw, exc, now, codec, peer)
        digest = hashlib.sha256(message.encode("utf-8", "surrogatepass")).hexdigest()
        if not sender_allowed(header, self.rules.allowed_senders):
            return self._refused_sender(header, digest, now, codec, peer)
        disposition = acks.decide(header)
        if disposition.ack_code == "AA" and disposition.reply:
            disposition = self._admit(message, header, disposition, codec)
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

    def _admit(
        self, message: str, header: MessageHeader, disposition: acks.Disposition, codec: str
    ) -> acks.Disposition:
        """The disposition of a message its header admits: refused if the store or the worker
        could not take it (AR for what the store cannot hold, AE for what the worker cannot read).
        """
        error = content_error(message, header, self.rules.key_limits, valid_utf8=codec == "utf-8")
        code = "AR"
        if error is not None:
            self.stats.refused_content += 1
        elif disposition.state == _RECEIVED and (error := processing_error(message)):
            self.stats.refused_unreadable_adt += 1
            code = "AE"
        if error is None:
            return disposition
        where = f"{error.location}: " if error.location else ""
        return acks.Disposition(_REFUSED, code, error, f"{where}{error.text}")

    def _unreadable(
        self,
        raw: bytes,
        exc: Hl7ParseError,
        now: datetime,
        codec: str,
        peer: str,
    ) -> _Prepared:
        disposition = acks.unparseable(exc.location, str(exc))
        keep = self.rules.unreadable_keep_bytes
        reason = disposition.reason
        digest = hashlib.sha256(raw).hexdigest()  # of the bytes as received, whole
        if len(raw) > keep:
            # Garbage must not fill the disk: a prefix, the digest of the whole and its length.
            reason = f"{reason}; first {keep} of {len(raw)} bytes stored"
            raw = raw[:keep]
        text = acks.build_ack(
            None,
            disposition.ack_code,
            control_id=new_control_id(),
            timestamp=now,
            error=disposition.error,
        )
        new = NewMessage(
            raw=raw,
            content_sha256=digest,
            state=disposition.state,
            reason=reason,
            ack_code=disposition.ack_code,
            ack_bytes=text.encode(codec, "replace"),
            peer=peer,
            received_at=now,
        )
        return _Prepared(None, new, codec, unreadable=True)

    def _refused_sender(
        self, header: MessageHeader, digest: str, now: datetime, codec: str, peer: str
    ) -> _Prepared:
        """AR (CR) with ERR 207 for a sender outside the allowlist. The body is never stored; a
        ``refused`` row with the header (sender, type, peer; MSH-10 in the reason) is, within the
        bounds of :class:`~cm_fhir.mllp_peers.RefusalLog`, so the operator sees who was turned
        away. The row has no control id: it takes no part in duplicate detection, so the same
        message is accepted once the sender is allowed."""
        self.stats.refused_senders += 1
        log.warning(
            "refusing a message from %s: MSH-3/MSH-4 not in the sender allowlist",
            peer,
            extra={"control_id": header.control_id, "peer": peer},
        )
        code = acks.response_code(header, "AR")
        reply = None
        if acks.ack_wanted(header, code):
            text = acks.build_ack(
                header, code, control_id=new_control_id(), timestamp=now, error=_SENDER_REFUSED
            )
            reply = text.encode(codec, "replace")
        sender = f"{header.sending_application}|{header.sending_facility}"
        if not self.refusals.should_record(sender, "sender", time.monotonic()):
            return _Prepared(header, None, codec, reply)
        new = NewMessage(
            raw=b"",
            content_sha256=digest,
            state=_REFUSED,
            reason=f"{_SENDER_REASON} (MSH-10 {header.control_id[:40]})",
            ack_code=code,
            ack_bytes=reply,
            sending_application=header.sending_application,
            sending_facility=header.sending_facility,
            message_type=header.message_type or None,
            trigger_event=header.trigger_event or None,
            version_id=header.version_id or None,
            peer=peer,
            received_at=now,
        )
        return _Prepared(header, new, codec)

    async def record_refused_connection(self, address: str, reason: str) -> None:
        """Write down a connection refused at accept (no message, no body), within the bounds of
        :class:`~cm_fhir.mllp_peers.RefusalLog`; a storage failure is logged, not raised."""
        if not self.refusals.should_record(address, reason, time.monotonic()):
            return
        row = NewMessage(
            raw=b"",
            content_sha256=_EMPTY_SHA256,
            state=_REFUSED,
            reason=f"connection refused at accept: {reason}",
            ack_code=None,
            ack_bytes=None,
            peer=address,
        )
        try:
            await self._writer.store(row)
        except StoreError:
            log.warning("could not record the refused connection from %s", address)

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
