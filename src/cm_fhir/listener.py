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

from cm_fhir.ingest import FrameIntake
from cm_fhir.ingest_door import LISTENER_COUNTERS, IntakeRules, IntakeStats
from cm_fhir.listener_config import ListenerConfig, check_exposure, server_tls_context
from cm_fhir.mllp_connection import MllpConnection
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
_REFUSAL_COUNTERS = {
    "not_allowed": "refused_not_allowed",
    "cooling_down": "refused_cooling_down",
    "peer_limit": "refused_peer_limit",
    "identity_limit": "refused_peer_limit",
}


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
        self._connections: set[MllpConnection] = set()
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
            lambda: MllpConnection(self),
            self.config.host,
            self.config.port,
            ssl=self.config.ssl_context,
            ssl_handshake_timeout=handshake or None,
        )

    async def handle_payload(self, payload: bytes, peer: str = "") -> list[bytes]:
        """Store the message(s) of one frame; return the ACK payloads (see :class:`FrameIntake`)."""
        return await self.intake.handle_payload(payload, peer)

    def admit(self, connection: MllpConnection) -> bool:
        """Whether the connection may stay (gate, limits); a refusal is counted and recorded."""
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

    def release(self, connection: MllpConnection) -> None:
        """The connection has closed: its place with the gate is free."""
        now = asyncio.get_running_loop().time()
        self.gate.release(connection.address, connection.identity, now)
        self._connections.discard(connection)

    def note_unreadable(self, connection: MllpConnection, count: int) -> None:
        """Count unreadable frames of the peer; one that sent too many cools down."""
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
