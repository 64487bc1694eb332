"""The asyncio MLLP listener: frames in, inbox rows committed, ACKs out. I/O edge.

A thin shell: an :class:`asyncio.Protocol` per connection feeds received bytes to the sans-IO
:class:`~cm_fhir.hl7v2.framing.MllpFramer` and hands complete frames, in order, to
:class:`~cm_fhir.ingest.FrameIntake`, which commits them (group commit across connections) before
returning the ACKs this module writes back. Frames of one connection are handled one after the
other; connections run concurrently up to ``max_connections`` (further connections are closed
right after accept, so the sender retries later). A frame over ``max_message_bytes`` is answered
AR (CR in enhanced mode) with ERR 207 and the connection stays open: the framer skips to the
frame's end block and resynchronises. A connection that sends nothing for ``idle_timeout`` seconds
is closed. A sender that stops reading its ACKs is not read from until it does (back pressure).
:meth:`MllpListener.stop` closes the listening socket, lets connections finish the frames they
are committing and write those ACKs, then closes every connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections import deque
from dataclasses import dataclass

from cm_fhir.hl7v2.framing import Frame, FrameTooLarge, MllpFramer, frame
from cm_fhir.ingest import FrameIntake, IntakeStats
from cm_fhir.store.writer import InboxWriter

__all__ = ["ListenerConfig", "ListenerStats", "MllpListener", "run_listener"]

log = logging.getLogger(__name__)
ListenerStats = IntakeStats
_WRITE_BUFFER_LIMIT = 1_048_576
_PENDING_FRAME_LIMIT = 64


@dataclass(frozen=True, slots=True)
class ListenerConfig:
    """Where and how the listener accepts connections."""

    host: str = "127.0.0.1"
    port: int = 2575
    max_connections: int = 64
    max_message_bytes: int = 1_048_576
    idle_timeout: float = 600.0  # seconds without received bytes; 0 disables
    ssl_context: ssl.SSLContext | None = None
    shutdown_grace: float = 10.0


class _MllpConnection(asyncio.Protocol):
    """One sender: frames queue up as they complete and are answered strictly in order."""

    def __init__(self, listener: MllpListener) -> None:
        self._listener = listener
        self._framer = MllpFramer(listener.config.max_message_bytes)
        self._frames: deque[Frame | FrameTooLarge] = deque()
        self._transport: asyncio.Transport | None = None
        self._worker: asyncio.Task[None] | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._last_data = 0.0
        self._reading_paused = False
        self._answered_one = False
        self._can_write = asyncio.Event()
        self._can_write.set()
        self.peer = ""
        self.closed = asyncio.Event()

    @property
    def busy(self) -> bool:
        """True while a frame is being stored or answered."""
        return self._worker is not None and not self._worker.done()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else ""
        if not self._listener._admit(self):
            transport.abort()
            return
        self._last_data = asyncio.get_running_loop().time()
        self._arm_idle_timer()

    def data_received(self, data: bytes) -> None:
        self._last_data = asyncio.get_running_loop().time()
        stats = self._listener.stats
        for event in self._framer.feed(data):
            if isinstance(event, Frame | FrameTooLarge):
                self._frames.append(event)
            else:
                stats.discarded_bytes += event.size
        if len(self._frames) >= _PENDING_FRAME_LIMIT:
            self._pause_reading()
        if self._frames and not self.busy and not self._listener.stopping:
            self._worker = asyncio.get_running_loop().create_task(self._answer())

    async def _answer(self) -> None:
        self._answered_one = False
        intake, limit = self._listener.intake, self._listener.config.max_message_bytes
        while self._frames and self._transport is not None:
            if self._listener.stopping and self._answered_one:
                break  # stopping: finish the frame in hand, leave the rest unacknowledged
            self._answered_one = True
            event = self._frames.popleft()
            if isinstance(event, Frame):
                intake.stats.frames += 1
                replies = await intake.handle_payload(event.payload, self.peer)
            else:
                replies = intake.oversize_reply(event, limit)
            if self._transport.is_closing():
                return
            for reply in replies:
                self._transport.write(frame(reply))
            if not self._can_write.is_set():
                await self._can_write.wait()
            if self._reading_paused and len(self._frames) < _PENDING_FRAME_LIMIT // 2:
                self._resume_reading()
        if self._listener.stopping:
            self.close()

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    def _pause_reading(self) -> None:
        if self._transport is not None and not self._reading_paused:
            self._reading_paused = True
            self._transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._transport is not None and self._reading_paused:
            self._reading_paused = False
            self._transport.resume_reading()

    def _arm_idle_timer(self) -> None:
        timeout = self._listener.config.idle_timeout
        if timeout > 0:
            due = self._last_data + timeout
            self._idle = asyncio.get_running_loop().call_at(due, self._check_idle)

    def _check_idle(self) -> None:
        timeout = self._listener.config.idle_timeout
        if asyncio.get_running_loop().time() - self._last_data >= timeout and not self.busy:
            log.info("closing connection from %s: idle for %.0f s", self.peer, timeout)
            self.close()
        else:
            self._arm_idle_timer()

    def close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle is not None:
            self._idle.cancel()
        self._can_write.set()
        self._listener._release(self)
        self.closed.set()


class MllpListener:
    """Accepts MLLP connections and acknowledges each message after committing it."""

    def __init__(self, config: ListenerConfig, writer: InboxWriter) -> None:
        self.config = config
        self.intake = FrameIntake(writer)
        self.stats = self.intake.stats
        self._server: asyncio.Server | None = None
        self._connections: set[_MllpConnection] = set()
        self.stopping = False

    @property
    def port(self) -> int:
        """The bound port (useful when configured with port 0)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("listener is not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Bind and start accepting connections."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _MllpConnection(self),
            self.config.host,
            self.config.port,
            ssl=self.config.ssl_context,
        )

    async def handle_payload(self, payload: bytes, peer: str = "") -> list[bytes]:
        """Store the message(s) of one frame; return the ACK payloads (see :class:`FrameIntake`)."""
        return await self.intake.handle_payload(payload, peer)

    def _admit(self, connection: _MllpConnection) -> bool:
        if self.stopping or len(self._connections) >= self.config.max_connections:
            self.stats.refused_connections += 1
            log.warning("refusing connection from %s: limit reached or stopping", connection.peer)
            return False
        self._connections.add(connection)
        self.stats.connections += 1
        return True

    def _release(self, connection: _MllpConnection) -> None:
        self._connections.discard(connection)

    async def stop(self) -> None:
        """Stop accepting, let in-flight commits finish and their ACKs go out, close."""
        self.stopping = True
        if self._server is not None:
            self._server.close()
        for connection in list(self._connections):
            if not connection.busy:
                connection.close()  # busy ones close themselves after their current frame
        waits = [asyncio.ensure_future(c.closed.wait()) for c in self._connections]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=self.config.shutdown_grace)
            for task in pending:
                task.cancel()
            for connection in list(self._connections):
                connection.close()


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
