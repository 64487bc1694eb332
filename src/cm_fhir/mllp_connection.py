"""One MLLP connection: bytes in, frames answered strictly in order, timers. I/O (asyncio).

:class:`MllpConnection` is the :class:`asyncio.Protocol` the listener
(:class:`~cm_fhir.listener.MllpListener`) makes per accepted socket. Received bytes go to the
sans-IO :class:`~cm_fhir.hl7v2.framing.MllpFramer`; complete frames queue up and one task answers
them in order through the listener's :class:`~cm_fhir.ingest.FrameIntake`, writing each ACK after
its commit. Past ``PENDING_FRAME_LIMIT`` queued frames, or while the peer does not read its ACKs,
the connection stops reading (back pressure). It closes after ``idle_timeout`` seconds without a
whole frame, or when a frame does not end within ``frame_timeout``; a half-close still gets every
ACK, in order. Admission, refusals and the peer's unreadable-frame count are the listener's.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, cast

from cm_fhir.hl7v2.framing import Frame, FrameTooLarge, MllpFramer, frame
from cm_fhir.listener_config import tls_identity

if TYPE_CHECKING:
    from cm_fhir.listener import MllpListener

__all__ = ["PENDING_FRAME_LIMIT", "MllpConnection"]

log = logging.getLogger("cm_fhir.listener")
PENDING_FRAME_LIMIT = 64


class MllpConnection(asyncio.Protocol):
    """One sender: frames queue up as they complete and are answered strictly in order."""

    def __init__(self, listener: MllpListener) -> None:
        self._listener = listener
        self._framer = MllpFramer(listener.config.max_message_bytes)
        self._frames: deque[Frame | FrameTooLarge] = deque()
        self._transport: asyncio.Transport | None = None
        self._worker: asyncio.Task[None] | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._active_at = 0.0  # loop time of the last whole frame (or of the connection)
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
        # A stream transport (uvloop's are not asyncio.Transport subclasses, same interface).
        self._transport = cast(asyncio.Transport, transport)
        peer = self._transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.address, self.peer = str(peer[0]), f"{peer[0]}:{peer[1]}"
        self.identity = tls_identity(self._transport)
        if not self._listener.admit(self):
            self._transport.abort()
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
        if len(self._frames) >= PENDING_FRAME_LIMIT:
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
                    listener.note_unreadable(self, answer.unreadable)
            else:
                replies = intake.oversize_reply(event, listener.config.max_message_bytes)
            if transport.is_closing():
                stats.unacknowledged += bool(replies)  # stored; the peer is gone
                continue
            for reply in replies:
                transport.write(frame(reply))
            if not self._can_write.is_set():
                await self._can_write.wait()
            if self._reading_paused and len(self._frames) < PENDING_FRAME_LIMIT // 2:
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
        """Idleness starts again now. The timer is not moved for every frame: when it fires, it
        checks how long ago the last whole frame came and waits the rest."""
        loop = asyncio.get_running_loop()
        self._active_at = loop.time()
        timeout = self._listener.config.idle_timeout
        if self._idle is None and timeout > 0:
            self._idle = loop.call_at(self._active_at + timeout, self._check_idle)

    def _check_idle(self) -> None:
        self._idle = None
        if self._lost:
            return
        if self.busy or self._frames or self._framer.in_frame:
            self._arm_idle_timer()  # at work, or a frame is under way (its deadline applies)
            return
        loop = asyncio.get_running_loop()
        timeout = self._listener.config.idle_timeout
        if self._active_at + timeout > loop.time():  # a frame came since the timer was set
            self._idle = loop.call_at(self._active_at + timeout, self._check_idle)
            return
        self._listener.stats.idle_closes += 1
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
            self._listener.release(self)
        self.closed.set()
