"""Benchmark: MLLP ingest with persist-before-ACK, against python-hl7's asyncio echo server.

Each server runs in its own subprocess on 127.0.0.1; this process drives it with N concurrent
senders over persistent lockstep connections (send one message, wait for its ACK, send the next)
and reports messages per second, p50/p99 ACK latency and the server process's CPU time per
message (Linux; not counting the PostgreSQL server's own work). Then the same server gets a paced
load of 200 msg/s spread over the senders, and the p99 ACK latency of that is reported (what an
interface sees on an ordinary day). Servers measured in the same run:

* baseline ``python-hl7 echo``: ``hl7.mllp.start_hl7_server`` answering each message with
  ``message.create_ack()`` (parses the message, no persistence);
* ``cm-fhir sqlite``: our listener committing every message to a SQLite file (WAL,
  synchronous=FULL: every commit is fsynced) before its ACK, on the event loop ``cm-fhir serve``
  runs on (:mod:`cm_fhir.event_loop`: uvloop's when installed; the header line names it);
* ``cm-fhir postgres``: the same on PostgreSQL (``CM_FHIR_TEST_PG_URL``, a throw-away schema);
  skipped when the server is unreachable.

The load generator is a plain :class:`asyncio.Protocol` per connection (no task or timeout per
message) so that it is not the bottleneck; every server gets the same one. Rounds alternate the
servers, with an echo run just before each of ours: the ratio is taken round by round, and the
median of the rounds is printed with their range.

With ``--with-worker`` each database is measured once more with the inbox worker running in the
server process, as in ``cm-fhir serve``: the lockstep run leaves a backlog, so the paced run's p99
is the ACK latency while the worker processes (on SQLite its write transactions and ours take turns
on the one write lock).

Usage: ``python bench/bench_ingest.py [--senders 4] [--messages 1000] [--rounds 3]
[--paced 1000] [--with-worker]`` (messages per sender; paced messages in total, 0 skips the paced
run).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

PG_URL = os.environ.get("CM_FHIR_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
READY = "bench-server-ready"
PACED_RATE = 200.0  # messages per second, all senders together
START_BLOCK, END_BLOCK = b"\x0b", b"\x1c\r"


def adt_message(sender: int, number: int) -> bytes:
    """A realistic-size synthetic ADT^A08 (about 600 bytes), unique per sender and number."""
    segments = [
        f"MSH|^~\\&|BENCHADT|FAC{sender}|CMFHIR|CM|20240305101500+0100||ADT^A08^ADT_A01|"
        f"B{sender}-{number}-{uuid.uuid4().hex[:8]}|P|2.5.1",
        "EVN|A08|20240305101200+0100||||20240305100000+0100",
        f"PID|1||MRN{sender:03d}{number % 50:04d}^^^BENCH^MR~ENT{number}^^^EMPI^PI||"
        "SYNTHETIC^PATIENT^Q^^^^L||19700101|F|||1 TEST ST^^TOWN^ST^00000||555-0100",
        "PV1|1|I|3EAST^301^A^BENCH||||D0042^DOCTOR^ATTENDING|||MED||||1|||D0042^DOCTOR^ATTENDING"
        f"|IN|V{number:07d}|SELF|||||||||||||||||||BENCH|||||20240305093000+0100",
        "PV2|||^Synthetic reason||||||20240309",
        "DG1|1||R50.9^Fever, unspecified^I10||20240305|A",
        "IN1|1|PLAN-GOLD^Gold plan|PAYER01|Example Health Plan",
    ]
    return "\r".join(segments).encode()


# --- servers (run in a subprocess) ---------------------------------------------------------------


async def serve_echo() -> None:
    import hl7.mllp

    async def handle(reader: hl7.mllp.HL7StreamReader, writer: hl7.mllp.HL7StreamWriter) -> None:
        try:
            while True:
                message = await reader.readmessage()
                writer.writemessage(message.create_ack())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await hl7.mllp.start_hl7_server(handle, "127.0.0.1", 0, limit=1024 * 1024)
    print(READY, server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()


async def serve_cm(url: str, schema: str | None, with_worker: bool) -> None:
    from cm_fhir.listener import ListenerConfig, MllpListener
    from cm_fhir.store.engine import make_engine, upgrade_database
    from cm_fhir.store.writer import InboxWriter

    engine = make_engine(url, search_path=schema)
    await upgrade_database(engine)
    stop = asyncio.Event()
    async with InboxWriter(engine) as writer:
        listener = MllpListener(
            ListenerConfig(port=0, max_connections=1024, max_connections_per_peer=0), writer
        )
        await listener.start()
        worker = None
        if with_worker:  # as in ``cm-fhir serve``: the worker shares the process and its loop
            from cm_fhir.service_roles import SWITCH_INTERVAL
            from cm_fhir.worker import Worker

            sys.setswitchinterval(SWITCH_INTERVAL)  # as serve sets it beside a worker
            worker = asyncio.create_task(Worker(engine, own_loop=True).run(stop))
        print(READY, listener.port, flush=True)
        await stop.wait()  # never set: the bench terminates this process
        if worker is not None:
            await worker


# --- load generator ------------------------------------------------------------------------------


async def start_server(*args: str) -> tuple[asyncio.subprocess.Process, int]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, __file__, *args, stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    async with asyncio.timeout(60):
        while True:
            line = (await process.stdout.readline()).decode()
            if not line:
                raise RuntimeError(f"server {args} exited before it was ready")
            if line.startswith(READY):
                return process, int(line.split()[1])


class Lockstep(asyncio.Protocol):
    """One sender: writes a message, waits for its ACK frame, writes the next (when paced, not
    before the message's slot on a fixed schedule). Records each ACK's latency."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.latencies: list[float] = []
        self.failures = 0
        self._frames: list[bytes] = []
        self._next = 0
        self._sent_at = 0.0
        self._slots: list[float] | None = None
        self._done: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def run(self, messages: list[bytes], slots: list[float] | None = None) -> asyncio.Future[None]:
        """Send ``messages`` one at a time (the i-th not before ``slots[i]``, loop time)."""
        self._frames = [START_BLOCK + m + END_BLOCK for m in messages]
        self._next, self._slots = 0, slots
        self.latencies, self.failures = [], 0
        self._done = asyncio.get_running_loop().create_future()
        self._send_next()
        return self._done

    def _send_next(self) -> None:
        if self._slots is not None:
            loop = asyncio.get_running_loop()
            wait = self._slots[self._next] - loop.time()
            if wait > 0:
                loop.call_later(wait, self._write)
                return
        self._write()

    def _write(self) -> None:
        assert self.transport is not None
        self._sent_at = time.perf_counter()
        self.transport.write(self._frames[self._next])

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(END_BLOCK)
        if end < 0:
            return
        self.latencies.append(time.perf_counter() - self._sent_at)
        reply, self.buffer = self.buffer[:end], self.buffer[end + 2 :]
        if b"MSA|AA|" not in reply and b"MSA|CA|" not in reply:
            self.failures += 1
        self._next += 1
        if self._next < len(self._frames):
            self._send_next()
        elif self._done is not None and not self._done.done():
            self._done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_exception(ConnectionError("the server closed the connection"))


async def connect(port: int, senders: int) -> list[Lockstep]:
    """Open the senders' connections; each sends one untimed message first (warm-up)."""
    loop = asyncio.get_running_loop()
    protocols = []
    for _ in range(senders):
        _, protocol = await loop.create_connection(Lockstep, "127.0.0.1", port)
        protocols.append(protocol)
    await asyncio.gather(*(p.run([adt_message(n, -1)]) for n, p in enumerate(protocols)))
    return protocols


async def drive(
    senders: list[Lockstep], messages: int, *, paced: bool = False, offset: int = 0
) -> tuple[float, list[float], int]:
    """Every sender sends ``messages``: (elapsed seconds, ACK latencies, non-AA answers)."""
    count = len(senders)
    batches = [[adt_message(n, offset + m) for m in range(messages)] for n in range(count)]
    loop = asyncio.get_running_loop()
    started, start_time = time.perf_counter(), loop.time()
    runs = []
    for n, (sender, batch) in enumerate(zip(senders, batches, strict=True)):
        slots = None
        if paced:  # message i of sender n has the slot (i * count + n) / rate
            slots = [start_time + (i * count + n) / PACED_RATE for i in range(messages)]
        runs.append(sender.run(batch, slots))
    async with asyncio.timeout(600):
        await asyncio.gather(*runs)
    elapsed = time.perf_counter() - started
    latencies = [value for sender in senders for value in sender.latencies]
    return elapsed, latencies, sum(sender.failures for sender in senders)


@dataclass
class Figures:
    """Rounds of one server: throughput, latency percentiles and ratios to the echo server."""

    name: str
    rates: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    paced_p99: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    failures: int = 0
    missing: int = 0  # positively acknowledged, not found in the inbox afterwards
    stores: bool = True

    def line(self) -> str:
        if not self.rates:
            return f"{self.name:<16} skipped"
        text = (
            f"{self.name:<16} {_median(self.rates):5.0f} msgs/s ({_span(self.rates, '.0f')})"
            f"  p50 {_median(self.p50):.2f} ms  p99 {_median(self.p99):.2f} ms"
            f"  cpu {_median(self.cpu_us):.0f} us/msg  non-AA {self.failures}"
        )
        if self.stores:
            text += f"  ACKed but not stored {self.missing}"
        if self.ratios:
            text += f"\n{'':<16} ratio to echo {_median(self.ratios):.2f}x"
            text += f" ({_span(self.ratios, '.2f')}; target >= 3x)"
        if self.paced_p99:
            text += f"  paced {PACED_RATE:.0f} msg/s: p99 {_median(self.paced_p99):.2f} ms"
            text += f" ({_span(self.paced_p99, '.2f')}; target <= 10 ms)"
        return text


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _span(values: list[float], spec: str) -> str:
    return f"{format(min(values), spec)}-{format(max(values), spec)}"


def _percentile(latencies: list[float], percentile: int) -> float:
    return statistics.quantiles(latencies, n=100)[percentile - 1] * 1000


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (Linux /proc), or None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def inbox_rows(args: list[str]) -> int | None:
    """Rows in the inbox of the cm-fhir server started with ``args`` (None for the echo)."""
    if "--serve-cm" not in args:
        return None
    from sqlalchemy import func, select

    from cm_fhir.store.engine import make_engine, upgrade_database
    from cm_fhir.store.tables import inbox_messages

    url = args[args.index("--serve-cm") + 1]
    schema = args[args.index("--schema") + 1] if "--schema" in args else None
    engine = make_engine(url, search_path=schema)
    try:
        await upgrade_database(engine)
        async with engine.connect() as connection:
            count = select(func.count()).select_from(inbox_messages)
            return int((await connection.execute(count)).scalar_one())
    finally:
        await engine.dispose()


async def measure(
    figures: Figures, args: list[str], senders: int, messages: int, paced: int
) -> float:
    """One round of one server: lockstep throughput, then (if ``paced``) the paced run. For our
    server, every positive ACK is checked against the inbox afterwards (durable: it is there)."""
    rows_before = await inbox_rows(args)
    acked = 0
    process, port = await start_server(*args)
    try:
        protocols = await connect(port, senders)
        acked += senders - sum(p.failures for p in protocols)
        cpu_before = process_cpu_seconds(process.pid)
        elapsed, latencies, failures = await drive(protocols, messages)
        cpu_after = process_cpu_seconds(process.pid)
        if paced:
            each = max(1, paced // senders)
            _, slow, more = await drive(protocols, each, paced=True, offset=messages)
            figures.paced_p99.append(_percentile(slow, 99))
            failures += more
            acked += len(slow)
        for protocol in protocols:
            assert protocol.transport is not None
            protocol.transport.close()
    finally:
        process.terminate()
        await process.wait()
    if cpu_before is not None and cpu_after is not None:
        figures.cpu_us.append((cpu_after - cpu_before) / len(latencies) * 1e6)
    rate = len(latencies) / elapsed
    figures.rates.append(rate)
    figures.p50.append(_percentile(latencies, 50))
    figures.p99.append(_percentile(latencies, 99))
    figures.failures += failures
    rows_after = await inbox_rows(args)
    if rows_before is not None and rows_after is not None:
        acked += len(latencies) - failures
        figures.missing += max(0, acked - (rows_after - rows_before))
    return rate


def commit_floor(folder: str, samples: int = 100) -> float:
    """Median milliseconds of a 4 KiB append + ``fdatasync`` in ``folder``: no durable commit on
    this disk is faster, so N lockstep senders get at most N / this many messages per ms."""
    path = Path(folder) / "fdatasync.probe"
    timings = []
    with path.open("wb") as probe:
        for _ in range(samples):
            probe.write(b"x" * 4096)
            probe.flush()
            started = time.perf_counter()
            os.fdatasync(probe.fileno())
            timings.append(time.perf_counter() - started)
    path.unlink()
    return statistics.median(timings) * 1000


async def pg_schema(action: str, schema: str) -> bool:
    from sqlalchemy import text

    from cm_fhir.store.engine import make_engine

    engine = make_engine(PG_URL)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                text(f'{action} SCHEMA "{schema}"' + (" CASCADE" if action == "DROP" else ""))
            )
        return True
    except Exception as exc:  # the bench runs without PostgreSQL too
        print(f"postgres unavailable: {type(exc).__name__}")
        return False
    finally:
        await engine.dispose()


async def main(senders: int, messages: int, rounds: int, paced: int, with_worker: bool) -> None:
    from cm_fhir.event_loop import loop_name

    print(
        f"{senders} lockstep senders x {messages} messages, loopback, {rounds} rounds; paced run"
        f" {paced} messages at {PACED_RATE:.0f}/s; load average {os.getloadavg()[0]:.1f};"
        f" our server on the {loop_name()} loop (as cm-fhir serve), the echo on asyncio's"
    )
    echo = Figures("python-hl7 echo", stores=False)
    ours = [Figures("cm-fhir sqlite"), Figures("cm-fhir postgres")]
    busy = [Figures("sqlite + worker"), Figures("postgres + worker")] if with_worker else []
    schema = f"cmfhir_bench_{uuid.uuid4().hex[:10]}"
    postgres = await pg_schema("CREATE", schema)
    try:
        with tempfile.TemporaryDirectory() as folder:
            floors = [commit_floor(folder)]
            for round_number in range(rounds):
                url = f"sqlite+aiosqlite:///{Path(folder) / f'bench{round_number}.sqlite3'}"
                servers = [(ours[0], ["--serve-cm", url])]
                if postgres:
                    servers.append((ours[1], ["--serve-cm", PG_URL, "--schema", schema]))
                for figures, args in servers:
                    baseline = await measure(echo, ["--serve-echo"], senders, messages, 0)
                    rate = await measure(figures, args, senders, messages, paced)
                    figures.ratios.append(rate / baseline)
                for figures, (_, args) in zip(busy, servers, strict=False):
                    # The lockstep run leaves a backlog: the paced run is answered while the
                    # worker, in the same process, processes it (and then the paced messages).
                    await measure(figures, [*args, "--with-worker"], senders, messages, paced)
            floors.append(commit_floor(folder))
    finally:
        if postgres:
            await pg_schema("DROP", schema)
    for figures in (echo, *ours, *busy):
        print(figures.line())
    before, after = floors
    print(
        f"disk: append + fdatasync {before:.2f} ms before the runs, {after:.2f} ms after (medians)."
        f" A durable commit takes at least that: {senders} lockstep senders sharing each commit"
        f" get at most {senders / before * 1000:.0f} / {senders / after * 1000:.0f} msgs/s"
    )
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--paced", type=int, default=1000)
    parser.add_argument(
        "--with-worker",
        action="store_true",
        help="also measure each database with the inbox worker running in the server process",
    )
    parser.add_argument("--serve-echo", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve-cm", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--schema", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.serve_echo:
        asyncio.run(serve_echo())
    elif options.serve_cm:
        from cm_fhir import event_loop  # the loop ``cm-fhir serve`` runs on

        event_loop.run(serve_cm(options.serve_cm, options.schema, options.with_worker))
    else:
        run = (options.senders, options.messages, options.rounds, options.paced)
        asyncio.run(main(*run, options.with_worker))
