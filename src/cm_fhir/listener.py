"""The asyncio MLLP listener: frames in, inbox rows committed, ACKs out. I/O edge.

A thin shell: an :class:`asyncio.Protocol` per connection feeds received bytes to the sans-IO
:class:`~cm_fhir.hl7v2.framing.MllpFramer` and hands complete frames, in order, to
:class:`~cm_fhir.ingest.FrameIntake`, which commits them (group commit across connections) before
returning the ACKs this module writes back. Frames of one connection are handled one after the
other. A frame over ``max_message_bytes`` is answered AR (CR in enhanced mode) with ERR 207 and the
connection stays open: the framer skips to the frame's end block and resynchronises. A sender that
stops reading its ACKs is not read from until it does (back pressure).

Every frame received whole is stored, whatever happens to the connection next: a sender that
half-closes (``shutdown(SHUT_WR)``) still gets every ACK, in order, before the listener closes;
one that closes at once finds its frames stored (a resend is answered as a duplicate). A frame
begun but not ended at close is counted (``incomplete_frames``) and logged, without content.

Who may connect is decided at accept by :class:`~cm_fhir.mllp_peers.PeerGate`: the global and
per-peer connection limits (per address, and per TLS client identity), the address allowlist,
and the cool-down of a peer that sent too many unreadable frames; a refused connection is closed
at once and written down as a body-less ``refused`` inbox row (bounded: see
:class:`~cm_fhir.mllp_peers.RefusalLog`). A frame must end within ``frame_timeout`` seconds of its
start block, and a connection that completes no frame for ``idle_timeout`` seconds is closed
(bytes that make no whole frame do not keep it open). :meth:`MllpListener.start` refuses a bind
beyond loopback without TLS or an address allowlist unless ``allow_public_bind`` is set.
:meth:`MllpListener.stop` closes the listening socket, lets connections finish the frames they are
committing and write those ACKs, then closes every connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque

from cm_fhir.hl7v2.framing import Frame, FrameTooLarge, MllpFramer, frame
from cm_fhir.ingest import LISTENER_COUNTERS, FrameIntake, IntakeRules, IntakeStats
from cm_fhir.listener_config import (
    ListenerConfig,
    check_exposure,
    server_tls_context,
    tls_identity,
)
from cm_fhir.mllp_peers import PeerGate
from cm_fhir.store.writer import InboxWriter

__all__ = [
    "LISTENER_COUNTERS",
    "ListenerConfig",
    "ListenerStats",
    "MllpListener",
    "check_exposure",
    "run_listener",
    "server_tls_context",
]

log = logging.getLogger(__name__)
ListenerStats = IntakeStats
_PENDING_FRAME_LIMIT = 64
_REFUSAL_COUNTERS = {
    "not_allowed": "refused_not_allowed",
    "cooling_down": "refused_cooling_down",
    "peer_limit": "refused_peer_limit",
    "identity_limit": "refused_peer_limit",
}


class _MllpConnection(asyncio.Protocol):
    """One sender: frames queue up as they complete and are answered strictly in order."""

    def __init__(self, listener: MllpListener) -> None:
        self._listener = listener
        self._framer = MllpFramer(listener.config.max_message_bytes)
        self._frames: deque[Frame | FrameTooLarge] = deque()
        self._transport: asyncio.Transport | None = None
        self._worker: asyncio.Task[None] | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._reading_paused = False
        self._admitted = False
        self._eof = False  # the peer will send no more (half-close or close)
        self._finishing = False  # answer what is queued, read nothing more, then close
        self._lost = False
        self._incomplete_noted = False
        self._can_write = asyncio.Event()
        self._can_write.set()
        self.address = ""
        self.peer = ""
        self.identity: str | None = None
        self.closed = asyncio.Event()

    @property
    def busy(self) -> bool:
        """True while a frame is being stored or answered."""
        return self._worker is not None and not self._worker.done()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.address, self.peer = str(peer[0]), f"{peer[0]}:{peer[1]}"
        self.identity = tls_identity(transport)
        if not self._listener._admit(self):
            transport.abort()
            self.closed.set()
            return
        self._admitted = True
        self._arm_idle_timer()

    def data_received(self, data: bytes) -> None:
        if self._finishing:
            return
        completed = False
        for event in self._framer.feed(data):
            if isinstance(event, Frame | FrameTooLarge):
                self._frames.append(event)
                completed = True
            else:
                self._listener.stats.discarded_bytes += event.size
        if completed:
            self._arm_idle_timer()  # idleness counts whole frames only
        if self._framer.in_frame:
            if completed or self._deadline is None:
                self._arm_deadline()  # a frame has begun: it must end in time
        elif self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if len(self._frames) >= _PENDING_FRAME_LIMIT:
            self._pause_reading()
        self._kick()

    def eof_received(self) -> bool:
        self._eof = True
        self._note_incomplete("closed its side")
        # True keeps our side open until the queued frames are answered. Nothing left to answer,
        # or TLS (which has no half-close): close; queued frames are still stored.
        pending = self.busy or bool(self._frames)
        return pending and self._listener.config.ssl_context is None

    def _kick(self) -> None:
        if self._frames and not self.busy and not self._listener.stopping:
            self._worker = asyncio.get_running_loop().create_task(self._answer())

    async def _answer(self) -> None:
        listener = self._listener
        intake, stats = listener.intake, listener.stats
        answered_one = False
        transport = self._transport
        assert transport is not None
        while self._frames:
            if listener.stopping and answered_one:
                break  # stopping: finish the frame in hand, leave the rest unacknowledged
            answered_one = True
            event = self._frames.popleft()
            if isinstance(event, Frame):
                stats.frames += 1
                answer = await intake.handle_frame(event.payload, self.peer)
                replies = answer.replies
                if answer.unreadable:
                    listener._unreadable(self, answer.unreadable)
            else:
                replies = intake.oversize_reply(event, listener.config.max_message_bytes)
            if transport.is_closing():
                stats.unacknowledged += bool(replies)  # stored; the peer is gone
                continue
            for reply in replies:
                transport.write(frame(reply))
            if not self._can_write.is_set():
                await self._can_write.wait()
            if self._reading_paused and len(self._frames) < _PENDING_FRAME_LIMIT // 2:
                self._resume_reading()
        if listener.stopping or self._eof or self._finishing:
            self.close()
        if self._lost:
            self._done()

    def finish(self, why: str) -> None:
        """Read nothing more; answer the frames already received, then close."""
        if self._finishing:
            return
        self._finishing = True
        log.info("closing connection from %s: %s", self.peer, why)
        self._note_incomplete(why)
        self._pause_reading()
        if not self.busy and not self._frames:
            self.close()

    def _note_incomplete(self, why: str) -> None:
        if self._framer.in_frame and not self._incomplete_noted:
            self._incomplete_noted = True
            self._listener.stats.incomplete_frames += 1
            log.warning(
                "connection from %s %s with an incomplete frame (%d bytes received)",
                self.peer,
                why,
                self._framer.buffered,
            )

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    def _pause_reading(self) -> None:
        if self._transport is not None and not self._reading_paused:
            self._reading_paused = True
            self._transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._transport is not None and self._reading_paused and not self._finishing:
            self._reading_paused = False
            self._transport.resume_reading()

    def _arm_idle_timer(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        timeout = self._listener.config.idle_timeout
        if timeout > 0:
            self._idle = asyncio.get_running_loop().call_later(timeout, self._check_idle)

    def _check_idle(self) -> None:
        self._idle = None
        if self.busy or self._frames or self._framer.in_frame:
            self._arm_idle_timer()  # at work, or a frame is under way (its deadline applies)
            return
        self._listener.stats.idle_closes += 1
        timeout = self._listener.config.idle_timeout
        log.info("closing connection from %s: no whole frame for %.0f s", self.peer, timeout)
        self.close()

    def _arm_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        timeout = self._listener.config.frame_timeout
        if timeout > 0:
            self._deadline = asyncio.get_running_loop().call_later(timeout, self._frame_too_slow)

    def _frame_too_slow(self) -> None:
        self._deadline = None
        if self._framer.in_frame:
            self._listener.stats.frame_timeouts += 1
            timeout = self._listener.config.frame_timeout
            self.finish(f"frame not finished within {timeout:g} s")

    def close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        for timer in (self._idle, self._deadline):
            if timer is not None:
                timer.cancel()
        self._can_write.set()
        self._note_incomplete("closed")
        if self.busy:
            return  # the worker stores what was received, then calls _done
        if self._frames and not self._listener.stopping:
            self._worker = asyncio.get_running_loop().create_task(self._answer())
            return
        self._done()

    def _done(self) -> None:
        if self._admitted:
            self._admitted = False
            self._listener._release(self)
        self.closed.set()


class MllpListener:
    """Accepts MLLP connections and acknowledges each message after committing it."""

    def __init__(self, config: ListenerConfig, writer: InboxWriter) -> None:
        self.config = config
        rules = IntakeRules(
            allowed_senders=config.allowed_senders,
            unreadable_keep_bytes=config.unreadable_keep_bytes,
        )
        self.intake = FrameIntake(writer, rules=rules)
        self.stats = self.intake.stats
        self.gate = PeerGate(config)
        self._server: asyncio.Server | None = None
        self._connections: set[_MllpConnection] = set()
        self._records: set[asyncio.Task[None]] = set()  # refused connections being written down
        self.stopping = False

    @property
    def port(self) -> int:
        """The bound port (useful when configured with port 0)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("listener is not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Bind and start accepting connections.

        Raises:
            ConfigError: a bind beyond loopback without TLS or an allowlist (see
                :func:`check_exposure`).
        """
        check_exposure(self.config)
        loop = asyncio.get_running_loop()
        handshake = self.config.frame_timeout if self.config.ssl_context else None
        self._server = await loop.create_server(
            lambda: _MllpConnection(self),
            self.config.host,
            self.config.port,
            ssl=self.config.ssl_context,
            ssl_handshake_timeout=handshake or None,
        )

    async def handle_payload(self, payload: bytes, peer: str = "") -> list[bytes]:
        """Store the message(s) of one frame; return the ACK payloads (see :class:`FrameIntake`)."""
        return await self.intake.handle_payload(payload, peer)

    def _admit(self, connection: _MllpConnection) -> bool:
        reason = "stopping"
        if not self.stopping:
            now = asyncio.get_running_loop().time()
            admission = self.gate.admit(connection.address, connection.identity, now)
            if admission.admitted:
                self._connections.add(connection)
                self.stats.connections += 1
                return True
            reason = admission.reason
        self.stats.refused_connections += 1
        if counter := _REFUSAL_COUNTERS.get(reason):
            setattr(self.stats, counter, getattr(self.stats, counter) + 1)
        log.warning("refusing connection from %s: %s", connection.address, reason)
        if not self.stopping:
            record = self.intake.record_refused_connection(connection.address, reason)
            task = asyncio.get_running_loop().create_task(record)
            self._records.add(task)
            task.add_done_callback(self._records.discard)
        return False

    def _release(self, connection: _MllpConnection) -> None:
        now = asyncio.get_running_loop().time()
        self.gate.release(connection.address, connection.identity, now)
        self._connections.discard(connection)

    def _unreadable(self, connection: _MllpConnection, count: int) -> None:
        now = asyncio.get_running_loop().time()
        for _ in range(count):
            if self.gate.unreadable(connection.address, now):
                self.stats.cooldowns += 1
                log.warning(
                    "peer %s sent %d unreadable frames within %g s: refused for %g s",
                    connection.address,
                    self.config.unreadable_limit,
                    self.config.unreadable_window,
                    self.config.cooldown,
                )
                connection.finish("cooling down after unreadable frames")

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
        if self._records:
            await asyncio.wait(list(self._records), timeout=self.config.shutdown_grace)


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

    check_exposure(config)
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
