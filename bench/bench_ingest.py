"""Benchmark: MLLP ingest with persist-before-ACK, against python-hl7's asyncio echo server.

Each server runs in its own subprocess on 127.0.0.1; this process drives it with N concurrent
senders over persistent connections (send one message, wait for its ACK, repeat) and reports
messages per second, p50/p99 ACK latency and the server process's CPU time per message (Linux;
not counting the PostgreSQL server's own work). Servers measured in the same run:

* baseline ``python-hl7 echo``: ``hl7.mllp.start_hl7_server`` answering each message with
  ``message.create_ack()`` (parses the message, no persistence);
* ``cm-fhir sqlite``: our listener committing every message to a SQLite file (WAL,
  synchronous=FULL) before its ACK;
* ``cm-fhir postgres``: the same on PostgreSQL (``CM_FHIR_TEST_PG_URL``, a throw-away schema);
  skipped when the server is unreachable.

Usage: ``python bench/bench_ingest.py [--senders 16] [--messages 400] [--rounds 3]`` (messages
per sender; the servers are measured in alternating rounds and the medians printed).
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

from cm_fhir.mllp_client import MllpClient

PG_URL = os.environ.get("CM_FHIR_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
READY = "bench-server-ready"


def adt_message(sender: int, number: int) -> bytes:
    """A realistic-size synthetic ADT^A08 (about 600 bytes), unique per sender and number."""
    segments = [
        f"MSH|^~\\&|BENCHADT|FAC{sender}|CMFHIR|CM|20240305101500+0100||ADT^A08^ADT_A01|"
        f"B{sender}-{number}-{uuid.uuid4().hex[:8]}|P|2.5.1",
        "EVN|A08|20240305101200+0100||||20240305100000+0100",
        f"PID|1||MRN{sender:03d}{number % 50:04d}^^^BENCH^MR~ENT{number}^^^EMPI^PI||"
        "SYNTHETIC^PATIENT^Q^^^^L||19700101|F|||1 TEST ST^^TOWN^ST^00000||555-0100",
        "PV1|1|I|3EAST^301^A^BENCH||||D0042^DOCTOR^ATTENDING|||MED||||1|||D0042^DOCTOR^ATTENDING"
        f"|IN||SELF|||||||||||||||||||BENCH||||||V{number:07d}",
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


async def serve_cm(url: str, schema: str | None) -> None:
    from cm_fhir.listener import ListenerConfig, MllpListener
    from cm_fhir.store.engine import make_engine, upgrade_database
    from cm_fhir.store.writer import InboxWriter

    engine = make_engine(url, search_path=schema)
    await upgrade_database(engine)
    async with InboxWriter(engine) as writer:
        listener = MllpListener(
            ListenerConfig(port=0, max_connections=1024, max_connections_per_peer=0), writer
        )
        await listener.start()
        print(READY, listener.port, flush=True)
        await asyncio.Event().wait()


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


async def drive(port: int, senders: int, messages: int) -> tuple[float, list[float], int]:
    latencies: list[float] = []
    failures = 0

    async def sender(n: int) -> None:
        nonlocal failures
        payloads = [adt_message(n, m) for m in range(messages)]
        async with await MllpClient.connect("127.0.0.1", port) as client:
            await client.send(adt_message(n, -1))  # warm-up, not timed
            await ready.wait()
            for payload in payloads:
                started = time.perf_counter()
                reply = await client.send(payload, timeout=60)
                latencies.append(time.perf_counter() - started)
                if b"MSA|AA|" not in reply and b"MSA|CA|" not in reply:
                    failures += 1

    ready = asyncio.Event()
    tasks = [asyncio.create_task(sender(n)) for n in range(senders)]
    await asyncio.sleep(0.5)
    started = time.perf_counter()
    ready.set()
    await asyncio.gather(*tasks)
    return time.perf_counter() - started, latencies, failures


@dataclass
class Figures:
    """Runs of one server: throughput and latency percentiles per round."""

    name: str
    rates: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    failures: int = 0

    def line(self) -> str:
        if not self.rates:
            return f"{self.name:<18} skipped"
        rate = statistics.median(self.rates)
        spread = f"{min(self.rates):.0f}-{max(self.rates):.0f}"
        return (
            f"{self.name:<18} {rate:7.0f} msgs/s (rounds {spread})   "
            f"p50 {statistics.median(self.p50):6.2f} ms   p99 {statistics.median(self.p99):6.2f} ms"
            f"   cpu {statistics.median(self.cpu_us) if self.cpu_us else float('nan'):5.0f} us/msg"
            f"   non-AA {self.failures}"
        )


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (Linux /proc), or None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(figures: Figures, args: list[str], senders: int, messages: int) -> None:
    process, port = await start_server(*args)
    try:
        cpu_before = process_cpu_seconds(process.pid)
        elapsed, latencies, failures = await drive(port, senders, messages)
        cpu_after = process_cpu_seconds(process.pid)
    finally:
        process.terminate()
        await process.wait()
    if cpu_before is not None and cpu_after is not None:
        figures.cpu_us.append((cpu_after - cpu_before) / len(latencies) * 1e6)
    quantiles = statistics.quantiles(latencies, n=100)
    figures.rates.append(len(latencies) / elapsed)
    figures.p50.append(quantiles[49] * 1000)
    figures.p99.append(quantiles[98] * 1000)
    figures.failures += failures


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


async def main(senders: int, messages: int, rounds: int) -> None:
    print(f"{senders} senders x {messages} messages, persistent connections, loopback, ")
    print(f"{rounds} rounds alternating the servers; medians reported")
    echo = Figures("python-hl7 echo")
    ours = [Figures("cm-fhir sqlite"), Figures("cm-fhir postgres")]
    schema = f"cmfhir_bench_{uuid.uuid4().hex[:10]}"
    postgres = await pg_schema("CREATE", schema)
    try:
        with tempfile.TemporaryDirectory() as folder:
            for round_number in range(rounds):
                url = f"sqlite+aiosqlite:///{Path(folder) / f'bench{round_number}.sqlite3'}"
                await measure(echo, ["--serve-echo"], senders, messages)
                await measure(ours[0], ["--serve-cm", url], senders, messages)
                if postgres:
                    args = ["--serve-cm", PG_URL, "--schema", schema]
                    await measure(ours[1], args, senders, messages)
    finally:
        if postgres:
            await pg_schema("DROP", schema)
    for figures in (echo, *ours):
        print(figures.line())
    baseline = statistics.median(echo.rates)
    for figures in ours:
        if figures.rates:
            ratio = statistics.median(figures.rates) / baseline
            print(f"ratio {figures.name} / python-hl7 echo: {ratio:.2f}x (target >= 3x)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--senders", type=int, default=16)
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve-echo", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve-cm", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--schema", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.serve_echo:
        asyncio.run(serve_echo())
    elif options.serve_cm:
        asyncio.run(serve_cm(options.serve_cm, options.schema))
    else:
        asyncio.run(main(options.senders, options.messages, options.rounds))
