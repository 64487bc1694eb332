"""``cm-fhir adt send``: send HL7v2 files over MLLP and report every ACK. I/O edge.

Each message of a file (single messages, several back to back, or FHS/BHS batches) goes in its own
frame; with ``--raw`` each file is sent byte for byte as one frame (a batch file is answered by one
batch ACK). One line is printed per ACK (``<file>#<n> <MSH-10> <MSA-1> [ERR <code>]``), then one
summary line per file. MSH-15 decides what is awaited: an accept ACK is awaited when one always
comes (original mode, ``AL``); ``NE`` is never answered; ``ER`` (answered on error only) and
``SU`` (on success only) are not awaited: ACKs come in order, so the next ACK, or the end of the
connection, tells whether theirs came. At the end the connection is half-closed and read until
the listener closes it (over TLS, which has no half-close, for at most two seconds). A file that
cannot be read, a lost connection or a missing ACK is reported and the run goes on with the next
file; the exit status is 2 if a file could not be read, else 1 if anything was not accepted
(AA/CA). ``--host`` and ``--port`` default to the configured listener (``mllp.host``/``mllp.port``
of ``--config`` and ``CM_FHIR_MLLP__...``; a wildcard bind address is reached on loopback).
"""

from __future__ import annotations

import asyncio
import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from cm_fhir.cli._app import adt_app
from cm_fhir.cli.errors import EXIT_PROBLEMS, EXIT_UNUSABLE, fail
from cm_fhir.cli.options import ConfigOption, settings_from
from cm_fhir.errors import Hl7ParseError

if TYPE_CHECKING:
    from cm_fhir.hl7v2.header import MessageHeader
    from cm_fhir.mllp_client import AckSummary, MllpClient


__all__ = ["send"]

_ACCEPTED = ("AA", "CA")


@dataclass(slots=True)
class _Item:
    """One frame to send and what to expect back."""

    label: str
    payload: bytes
    control_ids: list[str]  # MSH-10 of each message in the frame ("" when unreadable)
    wait: bool = True  # an ACK always comes: wait for it
    may_answer: bool = True  # otherwise an ACK may come (ER: on error; SU: on success)
    silence_accepts: bool = True  # no ACK means accepted (ER), or not accepted (SU)
    answered: bool = False
    frames: int = 1  # ACK frames to read: one per message of a raw frame without batch header


@dataclass(slots=True)
class _File:
    path: Path
    items: list[_Item] = field(default_factory=list)
    problem: str | None = None
    accepted: int = 0
    failed: int = 0
    unanswered: int = 0  # sent with MSH-15 NE/ER and no answer came (none was due)


def _header(text: str) -> MessageHeader | None:
    from cm_fhir.hl7v2.header import read_header

    try:
        return read_header(text.lstrip("\ufeff\r\n\t ").replace("\n", "\r"))
    except Hl7ParseError:
        return None


def _item(label: str, payload: bytes, messages: list[str], *, batch: bool) -> _Item:
    from cm_fhir.hl7v2 import ack as acks

    headers = [_header(m) for m in messages] or [None]
    control_ids = [h.control_id if h else "" for h in headers]
    first = headers[0]
    if batch or first is None:
        return _Item(label, payload, control_ids)  # a batch is always answered by a batch ACK
    if len(messages) > 1:  # a raw frame of messages back to back: an ACK frame for each
        return _Item(label, payload, control_ids, frames=len(messages))
    on_success = acks.ack_wanted(first, acks.response_code(first, "AA"))
    on_error = acks.ack_wanted(first, acks.response_code(first, "AR"))
    return _Item(
        label,
        payload,
        control_ids,
        wait=on_success and on_error,
        may_answer=on_success or on_error,
        silence_accepts=not on_success,
    )


def _read_file(path: Path, raw: bool) -> _File:
    from cm_fhir.hl7v2.header import read_batch_header
    from cm_fhir.hl7v2.normalise import decode, split_batch

    entry = _File(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        entry.problem = f"cannot read: {exc.strerror or 'unreadable'}"
        return entry
    try:
        messages = split_batch(data)
    except Hl7ParseError as exc:
        if not raw:
            entry.problem = str(exc)
            return entry
        messages = []
    if raw:
        batch = read_batch_header(decode(data)) is not None
        entry.items = [_item(str(path), data, messages, batch=batch)]
    else:
        entry.items = [
            _item(f"{path}#{n}", m.encode("utf-8"), [m], batch=False)
            for n, m in enumerate(messages, start=1)
        ]
    return entry


class _Sender:
    """One connection, reopened for the next file after a failure."""

    def __init__(self, host: str, port: int, timeout: float, context: ssl.SSLContext | None):
        self.host, self.port, self.timeout, self.context = host, port, timeout, context
        self.client: MllpClient | None = None
        self.waiting: list[tuple[_File, _Item]] = []  # sent; an ACK may still come (ER)

    async def connect(self) -> MllpClient:
        from cm_fhir.mllp_client import MllpClient

        if self.client is None:
            self.client = await MllpClient.connect(
                self.host, self.port, ssl_context=self.context, timeout=self.timeout
            )
        return self.client

    async def drop(self) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None

    def _owner(self, summaries: list[AckSummary]) -> tuple[_File, _Item] | None:
        ids = {s.control_id for s in summaries}
        for pair in self.waiting:
            if ids & set(pair[1].control_ids):
                return pair
        return None

    def record(self, entry: _File, item: _Item, reply: bytes) -> None:
        from cm_fhir.mllp_client import AckSummary, read_ack

        item.answered = True
        for summary in read_ack(reply) or [AckSummary("??", "")]:
            error = f" ERR {summary.error_code}" if summary.error_code else ""
            typer.echo(f"{item.label} {summary.control_id or '-'} {summary.code}{error}")
            if summary.code in _ACCEPTED:
                entry.accepted += 1
            else:
                entry.failed += 1

    async def send(self, entry: _File, item: _Item) -> None:
        from cm_fhir.mllp_client import read_ack

        client = await self.connect()
        await client.send_only(item.payload)
        control_id = item.control_ids[0] if item.control_ids else "-"
        if not item.wait:
            if item.may_answer:
                self.waiting.append((entry, item))
            condition = "NE: no ACK requested"
            if item.may_answer:
                condition = (
                    "ER: ACK on error only" if item.silence_accepts else "SU: ACK on success"
                )
            typer.echo(f"{item.label} {control_id or '-'} sent (MSH-15 {condition})")
            entry.unanswered += 1
            return
        for _ in range(item.frames):
            while True:
                reply = await client.receive(timeout=self.timeout)
                ids = {s.control_id for s in read_ack(reply)}
                late = self._owner(read_ack(reply))
                if late is None or ids & set(item.control_ids):
                    break
                self._settle_late(late, reply)  # the answer to an earlier ER message
            self.record(entry, item, reply)
        self.settle_silent()  # ACKs come in order: the earlier ones that were due have come

    def settle_silent(self) -> None:
        """The messages still waiting got no ACK: fine for ER, not accepted for SU."""
        for entry, item in self.waiting:
            if not item.silence_accepts:
                entry.unanswered -= 1
                entry.failed += 1
                control_id = item.control_ids[0] if item.control_ids else ""
                typer.echo(f"{item.label} {control_id or '-'} no ACK (MSH-15 SU: not accepted)")
        self.waiting.clear()

    def _settle_late(self, pair: tuple[_File, _Item], reply: bytes) -> None:
        self.waiting.remove(pair)
        entry, item = pair
        entry.unanswered -= 1  # its answer came after all
        self.record(entry, item, reply)

    async def collect(self) -> None:
        """Half-close and read the ACKs still due (ER messages) until the listener closes."""
        from cm_fhir.mllp_client import read_ack

        if self.client is None or not self.waiting:
            return
        client = self.client
        half_closed = client.finish_sending()
        # Without a half-close (TLS) the listener will not close: give it a short while.
        timeout = self.timeout if half_closed else min(self.timeout, 2.0)
        try:
            while self.waiting:
                reply = await client.receive_or_end(timeout=timeout)
                if reply is None:
                    break
                pair = self._owner(read_ack(reply))
                if pair is not None:
                    self._settle_late(pair, reply)
        except TimeoutError:
            if half_closed:
                typer.echo(f"no close from the listener within {timeout:g}s", err=True)
        self.settle_silent()


async def _send_files(files: list[_File], sender: _Sender) -> None:
    for entry in files:
        if entry.problem is not None:
            continue
        for position, item in enumerate(entry.items):
            try:
                await sender.send(entry, item)
            except TimeoutError:
                control_id = item.control_ids[0] if item.control_ids else ""
                typer.echo(f"{item.label} {control_id or '-'} no ACK within {sender.timeout:g}s")
                entry.failed += 1
                await sender.drop()  # a late ACK must not be taken for the next message's
            except (OSError, ConnectionError) as exc:
                reason = os.strerror(exc.errno) if exc.errno else (str(exc) or "closed")
                entry.problem = f"connection lost or refused ({reason})"
                entry.failed += len(entry.items) - position
                await sender.drop()
                break
    await sender.collect()
    await sender.drop()


@adt_app.command("send")
def send(
    files: list[Path] = typer.Argument(
        ..., help="HL7v2 files: messages, back to back, or batches."
    ),
    host: str | None = typer.Option(None, help="Listener host [mllp.host: 127.0.0.1]."),
    port: int | None = typer.Option(None, help="Listener port [mllp.port: 2575]."),
    timeout: float = typer.Option(30.0, help="Seconds to wait for each ACK."),
    raw: bool = typer.Option(False, "--raw", help="Send each file byte for byte as one frame."),
    tls: bool = typer.Option(False, help="Use TLS."),
    ca_file: Path | None = typer.Option(None, help="CA bundle to verify the listener (TLS)."),
    client_cert: Path | None = typer.Option(None, help="PEM client certificate (mutual TLS)."),
    client_key: Path | None = typer.Option(None, help="PEM key of --client-cert."),
    config: ConfigOption = None,
) -> None:
    """Send messages over MLLP, print each ACK and a line per file; exit 1 unless all AA/CA."""
    mllp = settings_from(config, mllp={"host": host, "port": port}).mllp
    wildcard = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}  # a bind-all address
    target_host, target_port = wildcard.get(mllp.host, mllp.host), mllp.port
    for name, path in (("--ca-file", ca_file), ("--client-cert", client_cert)):
        if path is not None and not path.is_file():
            fail(f"{name} {path}: no such file")
    entries = [_read_file(path, raw) for path in files]
    context = None
    if tls or ca_file is not None or client_cert is not None:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        if client_cert is not None:
            try:
                context.load_cert_chain(client_cert, client_key)
            except (OSError, ssl.SSLError) as exc:
                reason = exc.strerror or getattr(exc, "reason", None) or "unusable"
                fail(f"cannot load the client certificate or key {client_cert}: {reason}")
    sender = _Sender(target_host, target_port, timeout, context)
    asyncio.run(_send_files(entries, sender))
    ok = True
    unreadable = False
    for entry in entries:
        if entry.problem is not None and entry.problem.startswith("connection"):
            entry.problem = f"cannot reach {target_host}:{target_port} or lost it: {entry.problem}"
        if entry.problem is not None:
            typer.echo(f"error: {entry.path}: {entry.problem}", err=True)
            unreadable = unreadable or entry.problem.startswith("cannot read")
            ok = False
        typer.echo(
            f"{entry.path}: {len(entry.items)} frame(s), {entry.accepted} accepted, "
            f"{entry.failed} not accepted, {entry.unanswered} without ACK (MSH-15)"
        )
        ok = ok and entry.failed == 0
    if unreadable:
        raise typer.Exit(EXIT_UNUSABLE)
    if not ok:
        raise typer.Exit(EXIT_PROBLEMS)
