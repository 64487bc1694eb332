"""An asyncio MLLP client: send HL7v2 messages over one connection, wait for each ACK. I/O edge.

Used by ``cm-fhir adt send``, the tests and the benchmark. Each :meth:`MllpClient.send` frames one
message, writes it and reads frames until one ACK arrives (or the timeout expires); frames are
decoded by the same sans-IO :class:`~cm_fhir.hl7v2.framing.MllpFramer` the listener uses.
:meth:`MllpClient.finish_sending` half-closes the connection (plain TCP), so a listener answers
what it has and closes; :meth:`MllpClient.receive` then returns the remaining ACKs, then None.
:func:`read_ack` pulls MSA-1/MSA-2 and the first ERR code out of an ACK without a full parse.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from dataclasses import dataclass

from cm_fhir.hl7v2.framing import Frame, MllpFramer, frame

__all__ = ["AckSummary", "MllpClient", "read_ack"]


@dataclass(frozen=True, slots=True)
class AckSummary:
    """MSA-1 (code), MSA-2 (acknowledged control id) and the first ERR table-0357 code."""

    code: str
    control_id: str
    error_code: str | None = None


def read_ack(payload: bytes) -> list[AckSummary]:
    """Read every MSA (one, or one per message of a batch ACK) and its ERR code, in order."""
    text = payload.decode("latin-1")
    if len(text) < 4 or text[:3] not in ("MSH", "FHS", "BHS"):
        return []
    fs = text[3]
    summaries: list[AckSummary] = []
    current: list[str] | None = None
    for segment in text.replace("\n", "\r").split("\r"):
        fields = segment.split(fs)
        if fields[0] == "MSA":
            if current is not None:
                summaries.append(AckSummary(current[0], current[1]))
            current = [fields[1] if len(fields) > 1 else "", fields[2] if len(fields) > 2 else ""]
        elif fields[0] == "ERR" and current is not None:
            summaries.append(AckSummary(current[0], current[1], _err_code(fields)))
            current = None
    if current is not None:
        summaries.append(AckSummary(current[0], current[1]))
    return summaries


def _err_code(fields: list[str]) -> str | None:
    # ERR-3 (v2.5+) holds the code as its first component; ERR-1 (before) as ELD-4.1.
    if len(fields) > 3 and fields[3]:
        return fields[3].split("^")[0]
    if len(fields) > 1 and fields[1]:
        parts = fields[1].split("^")
        return parts[3].split("&")[0] if len(parts) > 3 else None
    return None


class MllpClient:
    """One MLLP connection. Use as ``async with MllpClient.connect(...) as client``."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        max_frame_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._framer = MllpFramer(max_frame_bytes)
        self._frames: deque[bytes] = deque()

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 10.0,
        local_address: str | None = None,
    ) -> MllpClient:
        """Open a connection (TLS when ``ssl_context`` is given; from ``local_address`` if set)."""
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                host,
                port,
                ssl=ssl_context,
                server_hostname=host if ssl_context else None,
                local_addr=(local_address, 0) if local_address else None,
            )
        return cls(reader, writer)

    async def __aenter__(self) -> MllpClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def send(self, message: bytes | str, *, timeout: float = 30.0) -> bytes:
        """Send one message and return the payload of the next ACK frame.

        Raises:
            TimeoutError: no ACK within ``timeout`` seconds.
            ConnectionError: the peer closed the connection first.
        """
        await self.send_only(message)
        return await self.receive(timeout=timeout)

    async def send_only(self, message: bytes | str) -> None:
        """Send one message without waiting for an answer."""
        data = message.encode("utf-8") if isinstance(message, str) else message
        self._writer.write(frame(data))
        await self._writer.drain()

    async def receive(self, *, timeout: float = 30.0) -> bytes:
        """Return the payload of the next frame the peer sends.

        Raises:
            TimeoutError: no frame within ``timeout`` seconds.
            ConnectionError: the peer closed the connection first.
        """
        payload = await self.receive_or_end(timeout=timeout)
        if payload is None:
            raise ConnectionError("the listener closed the connection")
        return payload

    async def receive_or_end(self, *, timeout: float = 30.0) -> bytes | None:
        """The payload of the next frame, or None once the peer has closed and none is left."""
        async with asyncio.timeout(timeout):
            while not self._frames:
                data = await self._reader.read(65536)
                if not data:
                    return None
                for event in self._framer.feed(data):
                    if isinstance(event, Frame):
                        self._frames.append(event.payload)
        return self._frames.popleft()

    def finish_sending(self) -> bool:
        """Half-close (no more frames from us); False where the transport cannot (TLS)."""
        if not self._writer.can_write_eof():
            return False
        self._writer.write_eof()
        return True

    async def close(self) -> None:
        """Close the connection."""
        self._writer.close()
        with contextlib.suppress(OSError, TimeoutError, ssl.SSLError):
            await asyncio.wait_for(self._writer.wait_closed(), 5.0)
