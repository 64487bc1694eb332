"""MLLP framing as a sans-IO state machine. Pure: no I/O.

The Minimal Lower Layer Protocol wraps each HL7v2 payload as ``0x0B payload 0x1C 0x0D``. A
:class:`MllpFramer` is fed the bytes a socket read returned, split anywhere, and hands back the
events they complete: whole frames, frames over the size limit, and counts of bytes discarded
outside frames. It never blocks and never reads a socket, so the asyncio listener, the client and
the tests drive the same code. Rules, chosen to resynchronise on a noisy line rather than drop a
connection:

* bytes outside a frame (before a start block) are discarded and reported as :class:`Discarded`;
* a start block inside an unfinished frame abandons that partial frame (reported as discarded) and
  starts a new one: a sender that restarts mid-frame has given up on the old one;
* a frame larger than ``max_frame_bytes`` is not buffered: its first ``prefix_bytes`` are kept (to
  read MSH for a reject ACK), the rest is skipped up to the end block, then :class:`FrameTooLarge`
  is reported and framing continues with the next frame;
* ``0x1C`` not followed by ``0x0D`` is payload data (strict end-of-block per the MLLP spec).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "END_BLOCK",
    "START_BLOCK",
    "Discarded",
    "Frame",
    "FrameEvent",
    "FrameTooLarge",
    "MllpFramer",
    "frame",
]

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"
_SB = 0x0B


@dataclass(frozen=True, slots=True)
class Frame:
    """One complete MLLP payload (the bytes between the start and end block)."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class FrameTooLarge:
    """A frame exceeded the size limit; only its first bytes were kept."""

    prefix: bytes
    size: int


@dataclass(frozen=True, slots=True)
class Discarded:
    """Bytes outside any frame (or an abandoned partial frame) were thrown away."""

    size: int


FrameEvent = Frame | FrameTooLarge | Discarded


def frame(payload: bytes) -> bytes:
    """Wrap ``payload`` in an MLLP block."""
    return START_BLOCK + payload + END_BLOCK


class MllpFramer:
    """Incremental MLLP decoder: ``feed`` bytes, get the frame events they complete.

    Memory use is bounded by ``max_frame_bytes`` (plus one read), whatever the peer sends.
    """

    def __init__(self, max_frame_bytes: int = 1_048_576, prefix_bytes: int = 4096) -> None:
        if max_frame_bytes < 1:
            raise ValueError("max_frame_bytes must be positive")
        self.max_frame_bytes = max_frame_bytes
        self._prefix_bytes = min(prefix_bytes, max_frame_bytes)
        self._buffer = bytearray()
        self._in_frame = False
        self._oversize = False
        self._oversize_prefix = b""
        self._oversize_size = 0
        self._oversize_tail_is_eb = False

    @property
    def buffered(self) -> int:
        """Bytes held for an unfinished frame (0 between frames)."""
        return len(self._buffer)

    @property
    def in_frame(self) -> bool:
        """True while a frame has started and not yet ended."""
        return self._in_frame

    def feed(self, data: bytes) -> list[FrameEvent]:
        """Consume ``data`` and return the events it completes, in stream order."""
        events: list[FrameEvent] = []
        view = memoryview(data)
        pos = 0
        end = len(data)
        while pos < end:
            if not self._in_frame:
                start = data.find(START_BLOCK, pos)
                if start < 0:
                    events.append(Discarded(end - pos))
                    return events
                if start > pos:
                    events.append(Discarded(start - pos))
                # The usual case, a whole frame within this read, needs no buffering.
                eb = data.find(END_BLOCK, start + 1)
                if 0 <= eb - start - 1 <= self.max_frame_bytes and (
                    data.find(START_BLOCK, start + 1, eb) < 0
                ):
                    events.append(Frame(data[start + 1 : eb]))
                    pos = eb + 2
                    continue
                self._begin_frame()
                pos = start + 1
                continue
            pos = self._consume_frame_bytes(data, view, pos, events)
        return events

    def _begin_frame(self) -> None:
        self._in_frame = True
        self._oversize = False
        self._oversize_prefix = b""
        self._oversize_size = 0
        self._oversize_tail_is_eb = False
        self._buffer.clear()

    def _consume_frame_bytes(
        self, data: bytes, view: memoryview, pos: int, events: list[FrameEvent]
    ) -> int:
        """Consume bytes inside a frame; return the position after what was used."""
        # A 0x1C held back from the previous read may pair with a 0x0D at the start of this one.
        if self._pending_end_byte() and data[pos] == 0x0D:
            self._drop_last_byte()
            self._finish_frame(events)
            return pos + 1
        eb = data.find(END_BLOCK, pos)
        sb = data.find(START_BLOCK, pos)
        stop = eb if eb >= 0 else len(data)
        if 0 <= sb < stop:
            # A new start block before this frame ended: abandon the partial frame.
            self._append(view[pos:sb])
            events.append(Discarded(self._abandoned_size()))
            self._begin_frame()
            return sb + 1
        if eb < 0:
            self._append(view[pos:])
            return len(data)
        self._append(view[pos:eb])
        self._finish_frame(events)
        return eb + 2

    def _pending_end_byte(self) -> bool:
        if self._oversize:
            return self._oversize_tail_is_eb
        return bool(self._buffer) and self._buffer[-1] == 0x1C

    def _drop_last_byte(self) -> None:
        if self._oversize:
            self._oversize_size -= 1
        else:
            del self._buffer[-1]

    def _append(self, chunk: memoryview) -> None:
        if not chunk:
            return
        if self._oversize:
            self._oversize_size += len(chunk)
            self._oversize_tail_is_eb = chunk[-1] == 0x1C
            return
        # One extra byte is allowed when it may be the 0x1C of an end block split across reads.
        allowance = 1 if chunk[-1] == 0x1C else 0
        if len(self._buffer) + len(chunk) <= self.max_frame_bytes + allowance:
            self._buffer += chunk
            return
        # Crossing the limit: keep a prefix for the reject ACK, stop buffering.
        self._oversize = True
        combined = bytes(self._buffer) + bytes(chunk[: self._prefix_bytes])
        self._oversize_prefix = combined[: self._prefix_bytes]
        self._oversize_size = len(self._buffer) + len(chunk)
        self._oversize_tail_is_eb = chunk[-1] == 0x1C
        self._buffer.clear()

    def _abandoned_size(self) -> int:
        return self._oversize_size if self._oversize else len(self._buffer)

    def _finish_frame(self, events: list[FrameEvent]) -> None:
        if self._oversize:
            events.append(FrameTooLarge(self._oversize_prefix, self._oversize_size))
        else:
            events.append(Frame(bytes(self._buffer)))
        self._buffer.clear()
        self._in_frame = False
        self._oversize = False
        self._oversize_prefix = b""
        self._oversize_size = 0
        self._oversize_tail_is_eb = False
