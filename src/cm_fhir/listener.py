"""The asyncio MLLP listener: frames in, inbox rows committed, ACKs out. I/O edge.

A thin shell around pure parts: :class:`~cm_fhir.hl7v2.framing.MllpFramer` cuts the byte stream
into frames, :mod:`cm_fhir.hl7v2.header` reads MSH cheaply, :mod:`cm_fhir.hl7v2.ack` decides and
renders the ACK, and :class:`~cm_fhir.store.writer.InboxWriter` commits the raw message (group
commit) *before* the ACK is written to the socket. Frames of one connection are handled in order;
connections run concurrently up to ``max_connections`` (further connections are closed right
after accept, so the sender retries). A frame over ``max_message_bytes`` is answered AR (CR in
enhanced mode) with ERR 207 and the connection stays open: the framer skips to the frame's end
block and resynchronises. A connection idle for ``idle_timeout`` seconds is closed. Stopping closes
the listening socket, lets connections finish the frame they are committing, then closes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import secrets
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime

from cm_fhir.errors import Hl7ParseError, StoreError
from cm_fhir.hl7v2 import ack as acks
from cm_fhir.hl7v2.framing import Frame, FrameTooLarge, MllpFramer, frame
from cm_fhir.hl7v2.header import (
    BatchHeader,
    MessageHeader,
    read_batch_header,
    read_header,
    read_patient_key,
)
from cm_fhir.hl7v2.normalise import decode, split_batch
from cm_fhir.store.inbox import NewMessage, StoredMessage
from cm_fhir.store.writer import InboxWriter

__all__ = ["ListenerConfig", "MllpListener"]

log = logging.getLogger(__name__)
_READ_SIZE = 65536


@dataclass(frozen=True, slots=True)
class ListenerConfig:
    """Where and how the listener accepts connections."""

    host: str = "127.0.0.1"
    port: int = 2575
    max_connections: int = 64
    max_message_bytes: int = 1_048_576
    idle_timeout: float = 600.0  # seconds; 0 disables
    ssl_context: ssl.SSLContext | None = None
    shutdown_grace: float = 10.0


@dataclass(slots=True)
class _Prepared:
    header: MessageHeader | None
    message: NewMessage
    codec: str


@dataclass(slots=True, eq=False)
class _Connection:
    task: asyncio.Task[object] | None
    busy: bool = False
    peer: str = ""


@dataclass(slots=True)
class ListenerStats:
    """Counters for health checks and tests (no message content)."""

    connections: int = 0
    refused_connections: int = 0
    frames: int = 0
    oversize_frames: int = 0
    discarded_bytes: int = 0
    store_failures: int = 0


_CONTROL_ID_PREFIX = secrets.token_hex(4)
_control_ids = itertools.count(1)


def _new_control_id() -> str:
    """A fresh MSH-10 for an ACK: 8 random hex digits per process + a counter (20 characters)."""
    return f"{_CONTROL_ID_PREFIX}{next(_control_ids):012d}"


def _split(text: str) -> tuple[BatchHeader | None, list[str]]:
    """The batch header (if any) and the messages of a frame.

    A frame holding one plain CR-separated message (the usual case) skips the general splitter.
    """
    if text.startswith("MSH") and "\n" not in text and "\rMSH" not in text:
        return None, [text.rstrip("\r\t ")]
    return read_batch_header(text), split_batch(text)


class MllpListener:
    """Accepts MLLP connections and acknowledges each message after committing it."""

    def __init__(self, config: ListenerConfig, writer: InboxWriter) -> None:
        self.config = config
        self._writer = writer
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._stopping = False
        self.stats = ListenerStats()

    @property
    def port(self) -> int:
        """The bound port (useful when configured with port 0)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("listener is not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Bind and start accepting connections."""
        self._server = await asyncio.start_server(
            self._serve_connection,
            self.config.host,
            self.config.port,
            ssl=self.config.ssl_context,
            limit=_READ_SIZE,
        )

    async def stop(self) -> None:
        """Stop accepting, let in-flight commits finish and their ACKs go out, close."""
        self._stopping = True
        if self._server is not None:
            self._server.close()
        for connection in list(self._connections):
            if not connection.busy and connection.task is not None:
                connection.task.cancel()
        tasks = [c.task for c in self._connections if c.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.config.shutdown_grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        peername = writer.get_extra_info("peername")
        peer = f"{peername[0]}:{peername[1]}" if isinstance(peername, tuple) else ""
        if self._stopping or len(self._connections) >= self.config.max_connections:
            self.stats.refused_connections += 1
            log.warning(
                "refusing connection from %s: limit of %d reached", peer, len(self._connections)
            )
            writer.close()
            return
        connection = _Connection(asyncio.current_task(), peer=peer)
        self._connections.add(connection)
        self.stats.connections += 1
        framer = MllpFramer(self.config.max_message_bytes)
        try:
            await self._conversation(reader, writer, framer, connection)
        except asyncio.CancelledError:
            pass  # shutdown of an idle connection
        except (ConnectionError, ssl.SSLError, TimeoutError, OSError) as exc:
            log.info("connection from %s ended: %s", peer, type(exc).__name__)
        finally:
            self._connections.discard(connection)
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _conversation(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        framer: MllpFramer,
        connection: _Connection,
    ) -> None:
        idle = self.config.idle_timeout or None
        while not self._stopping:
            async with asyncio.timeout(idle):
                data = await reader.read(_READ_SIZE)
            if not data:
                return
            connection.busy = True
            for event in framer.feed(data):
                if isinstance(event, Frame):
                    self.stats.frames += 1
                    replies = await self.handle_payload(event.payload, connection.peer)
                elif isinstance(event, FrameTooLarge):
                    self.stats.oversize_frames += 1
                    replies = self._oversize_reply(event)
                else:
                    self.stats.discarded_bytes += event.size
                    continue
                for reply in replies:
                    writer.write(frame(reply))
                async with asyncio.timeout(idle):
                    await writer.drain()
            connection.busy = False

    async def handle_payload(self, payload: bytes, peer: str = "") -> list[bytes]:
        """Store the message(s) of one frame and return the ACK frames' payloads to send."""
        now = datetime.now(UTC)
        try:
            text, codec = payload.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            text, codec = decode(payload), "latin-1"
        try:
            batch, messages = _split(text)
        except Hl7ParseError as exc:
            prepared = [self._prepare_unreadable(payload, exc, now, codec, peer)]
            batch = None
        else:
            batch_id = batch.control_id if batch else None
            single = len(messages) == 1 and batch is None
            prepared = [
                self._prepare(
                    m, payload if single else m.encode(codec, "replace"), batch_id, now, codec, peer
                )
                for m in messages
            ]
        try:
            stored = await self._writer.store_many([p.message for p in prepared])
        except StoreError:
            self.stats.store_failures += 1
            replies = [self._storage_failure_reply(p, now) for p in prepared]
        else:
            replies = [_reply_of(result) for result in stored]
        if batch is not None:
            inner = [r.decode(codec, "replace") for r in replies if r is not None]
            body = acks.build_batch_ack(batch, inner, control_id=_new_control_id(), timestamp=now)
            return [body.encode(codec, "replace")]
        return [r for r in replies if r is not None]

    def _prepare(
        self,
        message: str,
        raw: bytes,
        batch_id: str | None,
        now: datetime,
        codec: str,
        peer: str,
    ) -> _Prepared:
        digest = hashlib.sha256(message.encode("utf-8", "surrogatepass")).hexdigest()
        try:
            header = read_header(message)
        except Hl7ParseError as exc:
            return self._prepare_unreadable(raw, exc, now, codec, peer, digest)
        disposition = acks.decide(header)
        code = acks.response_code(header, disposition.ack_code)
        ack_bytes = None
        if disposition.reply and acks.ack_wanted(header, code):
            text = acks.build_ack(
                header, code, control_id=_new_control_id(), timestamp=now, error=disposition.error
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

    def _prepare_unreadable(
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
            control_id=_new_control_id(),
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
            header,
            code,
            control_id=_new_control_id(),
            timestamp=now,
            error=acks.storage_failure(),
        )
        return text.encode(prepared.codec, "replace")

    def _oversize_reply(self, event: FrameTooLarge) -> list[bytes]:
        log.warning(
            "frame of %d bytes exceeds the limit of %d", event.size, self.config.max_message_bytes
        )
        text = decode(event.prefix)
        try:
            header: MessageHeader | None = read_header(text.replace("\n", "\r"))
        except Hl7ParseError:
            header = None
        code = acks.response_code(header, "AR")
        if not acks.ack_wanted(header, code):
            return []
        error = acks.AckError(
            "207", f"message exceeds the limit of {self.config.max_message_bytes} bytes"
        )
        reply = acks.build_ack(
            header, code, control_id=_new_control_id(), timestamp=datetime.now(UTC), error=error
        )
        return [reply.encode("utf-8" if _is_utf8(event.prefix) else "latin-1", "replace")]


def _reply_of(result: StoredMessage) -> bytes | None:
    return result.ack_bytes


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


async def run_listener(
    config: ListenerConfig,
    database_url: str,
    *,
    migrate: bool | None = None,
    ready: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run a listener until SIGINT/SIGTERM (or ``stop``), then shut down cleanly.

    ``migrate`` defaults to True for SQLite (the embedded default upgrades its own file) and False
    for other databases, which are upgraded with ``cm-fhir db upgrade``.
    """
    import signal

    from cm_fhir.store.engine import make_engine, upgrade_database

    engine = make_engine(database_url)
    try:
        if migrate if migrate is not None else engine.dialect.name == "sqlite":
            await upgrade_database(engine)
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, stop.set)
        async with InboxWriter(engine) as writer:
            listener = MllpListener(config, writer)
            await listener.start()
            log.info("listening on %s:%d", config.host, listener.port)
            print(f"cm-fhir listening on {config.host}:{listener.port}", flush=True)
            if ready is not None:
                ready.set()
            await stop.wait()
            log.info("stopping: no new connections, finishing in-flight messages")
            await listener.stop()
    finally:
        await engine.dispose()
