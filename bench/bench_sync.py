"""Benchmark: outbox delivery to a FHIR server, against a naive one-POST-per-resource loop.

Two in-memory test FHIR servers (``tests/fhir_server``, Node.js) run on 127.0.0.1. N admissions
(A01, then an A08 each) go through the listener's intake and the worker into a SQLite store;
their cases' newest Bundles are then delivered:

* ``cm-fhir sync``: the ``sync`` role's delivery (:class:`cm_fhir.sync.runner.SyncWorker`) with
  default settings: one transaction per case, patients concurrently, the EHR's Patient looked up
  once per patient;
* baseline ``naive loop``: one ``httpx`` POST per resource, one after the other, references
  rewritten to the ids the server gave (what a first integration usually does).

It prints resources per second, HTTP requests made (counted by the servers), CPU time per resource
of the client and of the server, and the ratio, and
checks that both servers end with the same resources (compared by business identifier, without
ids, meta and references).

Then ``cm-fhir serve --ehr-url`` runs as a process; A01s of new patients are sent over MLLP at a
steady rate (50 msg/s), and the time from sending each A01 to its case's write being committed on
the FHIR server (the outbox row's ``sent_at``, set after the server answered) is reported as
p50/p95, with the CPU time the serve process and the FHIR server spent per message (wall figures
move with the machine's load; CPU time much less).

Usage: ``python bench/bench_sync.py [--cases 200] [--rate 50] [--seconds 10]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / "tests" / "fhir_server" / "server.mjs"
CLI = str(Path(sys.executable).parent / "cm-fhir")
Json = dict[str, Any]


def start_server() -> tuple[subprocess.Popen[str], str]:
    node = shutil.which("node")
    if node is None:
        sys.exit("node is not installed: the test FHIR server needs it")
    process = subprocess.Popen(
        [node, str(SERVER), "0"],
        cwd=SERVER.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "NODE_ENV": "test"},
    )
    assert process.stdout is not None
    line = process.stdout.readline().split()
    if len(line) != 2 or line[0] != "listening":
        process.kill()
        sys.exit("the test FHIR server did not start")
    return process, f"http://127.0.0.1:{line[1]}/fhir"


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of a process (Linux ``/proc``), or of this one."""
    if pid is None:
        times = os.times()
        return times.user + times.system
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def requests_made(base_url: str) -> int:
    root = base_url.removesuffix("/fhir")
    return int(httpx.get(f"{root}/$test-requests").json()["total"])


def reset_requests(base_url: str) -> None:
    httpx.delete(f"{base_url.removesuffix('/fhir')}/$test-requests")


def adt(kind: str, n: int, at: str) -> str:
    """A synthetic admission-shaped ADT message of patient ``n`` (qualifies for case management)."""
    pv1 = ["PV1", "1", "I", "4WEST^401^A^NORTHSIDE", *[""] * 6, "MED", *[""] * 8, f"V{n:07d}"]
    pv1 += [""] * (44 - len(pv1)) + ["20240305090000+0000", ""]
    return "\r".join(
        [
            f"MSH|^~\\&|BENCH|NORTHSIDE|CMFHIR|CM|{at}||ADT^{kind}|BS{n}-{kind}-{time.time_ns()}"
            "|P|2.5.1",
            f"EVN|{kind}|{at}||||{at}",
            f"PID|1||SYNC{n:06d}^^^NSH^MR||SYNTHETIC^PATIENT||19480304|F",
            "|".join(pv1),
            "PV2|||||||||",
            "DG1|1|I10|I50.9^Heart failure^I10||20240305|A",
            "IN1|1|PLAN-GOLD|PAYER01|Example Health Plan",
        ]
    )


async def prepare_store(url: str, cases: int) -> None:
    from cm_fhir.listener import ListenerConfig, MllpListener
    from cm_fhir.store.engine import make_engine, upgrade_database
    from cm_fhir.store.writer import InboxWriter
    from cm_fhir.worker import Worker, WorkerConfig

    engine = make_engine(url)
    await upgrade_database(engine)
    async with InboxWriter(engine) as writer:
        listener = MllpListener(ListenerConfig(port=0), writer)
        for n in range(cases):
            await listener.handle_payload(adt("A01", n, "20240305090000+0000").encode())
            await listener.handle_payload(adt("A08", n, "20240305100000+0000").encode())
    await Worker(engine, WorkerConfig(retry_delay=0)).run_once()
    await engine.dispose()


async def newest_bundles(url: str) -> list[Json]:
    from sqlalchemy import func, select

    from cm_fhir.store.case_tables import outbox
    from cm_fhir.store.engine import make_engine

    engine = make_engine(url)
    newest = select(func.max(outbox.c.id)).group_by(outbox.c.case_id)
    async with engine.connect() as connection:
        found = await connection.execute(select(outbox.c.bundle).where(outbox.c.id.in_(newest)))
        bundles = [orjson.loads(b) for b in found.scalars()]
    await engine.dispose()
    return bundles


async def deliver_ours(url: str, base_url: str) -> float:
    from cm_fhir.store.engine import make_engine
    from cm_fhir.sync.config import EndpointSettings
    from cm_fhir.sync.runner import SyncWorker

    engine = make_engine(url)
    start = time.perf_counter()
    async with SyncWorker(engine, [EndpointSettings(name="default", base_url=base_url)]) as sync:
        await sync.drain(settle_backoff=True, timeout=600)
    elapsed = time.perf_counter() - start
    await engine.dispose()
    return elapsed


def _rewrite(value: Any, ids: dict[str, str]) -> None:
    if isinstance(value, dict):
        ref = value.get("reference")
        if isinstance(ref, str) and ref in ids:
            value["reference"] = ids[ref]
        for item in value.values():
            _rewrite(item, ids)
    elif isinstance(value, list):
        for item in value:
            _rewrite(item, ids)


async def deliver_naive(bundles: list[Json], base_url: str) -> float:
    """One POST per resource; back links (references to later entries) patched with a PUT."""
    start = time.perf_counter()
    async with httpx.AsyncClient(timeout=60) as client:
        for bundle in bundles:
            ids: dict[str, str] = {}
            later: list[tuple[str, Json]] = []
            for entry in bundle["entry"]:
                resource = orjson.loads(orjson.dumps(entry["resource"]))
                _rewrite(resource, ids)
                pending = orjson.dumps(resource).count(b"urn:uuid:") > 0
                answer = await client.post(f"{base_url}/{resource['resourceType']}", json=resource)
                answer.raise_for_status()
                created = answer.json()
                ids[entry["fullUrl"]] = f"{resource['resourceType']}/{created['id']}"
                if pending:
                    later.append((entry["fullUrl"], entry["resource"]))
            for full_url, original in later:
                resource = orjson.loads(orjson.dumps(original))
                _rewrite(resource, ids)
                rtype, rid = ids[full_url].split("/")
                resource["id"] = rid
                (await client.put(f"{base_url}/{rtype}/{rid}", json=resource)).raise_for_status()
    return time.perf_counter() - start


def _content(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _content(v) for k, v in value.items() if k not in ("id", "meta", "reference")}
    if isinstance(value, list):
        return [_content(v) for v in value]
    return value


async def same_state(bundles: list[Json], a: str, b: str) -> bool:
    async with httpx.AsyncClient(timeout=60) as client:
        for bundle in bundles:
            for entry in bundle["entry"]:
                resource = entry["resource"]
                ident = resource["identifier"][0]
                system = quote(ident["system"], safe=":/")
                query = f"identifier={system}|{quote(ident['value'], safe='')}"
                found = []
                for base in (a, b):
                    answer = await client.get(f"{base}/{resource['resourceType']}?{query}")
                    found.append([e["resource"] for e in answer.json().get("entry") or []])
                if len(found[0]) != 1 or len(found[1]) != 1:
                    return False
                if _content(found[0][0]) != _content(found[1][0]):
                    return False
    return True


async def throughput(cases: int) -> None:
    ours_server, ours_url = start_server()
    naive_server, naive_url = start_server()
    try:
        with tempfile.TemporaryDirectory() as folder:
            url = f"sqlite+aiosqlite:///{Path(folder) / 'bench.sqlite3'}"
            await prepare_store(url, cases)
            bundles = await newest_bundles(url)
            resources = sum(len(b["entry"]) for b in bundles)
            reset_requests(ours_url)
            reset_requests(naive_url)
            cpu = [cpu_seconds(), cpu_seconds(ours_server.pid), cpu_seconds(naive_server.pid)]
            ours = await deliver_ours(url, ours_url)
            mid = cpu_seconds()
            naive = await deliver_naive(bundles, naive_url)
            ours_cpu = (mid - cpu[0], cpu_seconds(ours_server.pid) - cpu[1])
            naive_cpu = (cpu_seconds() - mid, cpu_seconds(naive_server.pid) - cpu[2])
            ours_requests = requests_made(ours_url)
            naive_requests = requests_made(naive_url)
            same = await same_state(bundles, ours_url, naive_url)
        print(
            f"cases {len(bundles)}, resources {resources} ({resources / len(bundles):.1f} per case)"
        )
        for name, wall, made, (client, server) in (
            ("cm-fhir sync", ours, ours_requests, ours_cpu),
            ("naive loop  ", naive, naive_requests, naive_cpu),
        ):
            print(
                f"{name} : {resources / wall:8.0f} resources/s, {made} HTTP requests; CPU per "
                f"resource: client {client / resources * 1000:.2f} ms, "
                f"server {server / resources * 1000:.2f} ms"
            )
        print(
            f"ratio        : {naive / ours:.1f}x faster (target >= 5x), "
            f"{naive_requests / max(ours_requests, 1):.1f}x fewer requests; "
            f"same final server state: {'yes' if same else 'NO'}"
        )
    finally:
        ours_server.terminate()
        naive_server.terminate()


async def _sent_at(
    database: str, schema: str | None
) -> list[tuple[str, datetime, datetime, datetime]]:
    """(control id, received, outbox row created, sent) of every A01 whose case write is on the
    server."""
    from sqlalchemy import select

    from cm_fhir.store.case_tables import outbox
    from cm_fhir.store.engine import make_engine
    from cm_fhir.store.tables import inbox_messages

    engine = make_engine(database, search_path=schema)
    query = (
        select(
            inbox_messages.c.control_id,
            inbox_messages.c.received_at,
            outbox.c.created_at,
            outbox.c.sent_at,
        )
        .join(outbox, outbox.c.inbox_message_id == inbox_messages.c.id)
        .where(outbox.c.state == "sent")
    )
    async with engine.connect() as connection:
        rows = [(str(c), r, o, s) for c, r, o, s in (await connection.execute(query)).all()]
    await engine.dispose()
    return rows


async def _reset_pg(url: str) -> None:
    from sqlalchemy import text

    from cm_fhir.store.engine import make_engine

    engine = make_engine(url)
    async with engine.begin() as connection:
        await connection.execute(text("DROP SCHEMA IF EXISTS bench_sync CASCADE"))
        await connection.execute(text("CREATE SCHEMA bench_sync"))
    await engine.dispose()


async def latency(rate: float, seconds: float, pg_url: str | None) -> None:
    from cm_fhir.mllp_client import MllpClient

    server, base_url = start_server()
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "data"
        env = {k: v for k, v in os.environ.items() if not k.startswith("CM_FHIR_")}
        database = f"sqlite+aiosqlite:///{data / 'cm-fhir.sqlite3'}"
        where = ["--data-dir", str(data)]
        if pg_url is not None:
            await _reset_pg(pg_url)
            database = pg_url
            env["CM_FHIR_DATABASE_SCHEMA"] = "bench_sync"
            where = ["--data-dir", str(data), "--database-url", pg_url, "--migrate"]
        process = await asyncio.create_subprocess_exec(
            CLI, "serve", "--http-port", "0", "--mllp-port", "0", *where,
            "--ehr-url", base_url, "--log-level", "WARNING",
            stdout=asyncio.subprocess.PIPE, stderr=None, env=env,
        )  # fmt: skip
        assert process.stdout is not None
        port = 0
        while True:
            line = (await process.stdout.readline()).decode()
            if not line:
                sys.exit("serve did not start")
            if line.startswith("cm-fhir listening on "):
                port = int(line.rsplit(":", 1)[1])
            if line.startswith("cm-fhir ready"):
                break
        sent: dict[str, float] = {}
        count = int(rate * seconds)
        before = cpu_seconds(process.pid), cpu_seconds(server.pid)
        async with await MllpClient.connect("127.0.0.1", port) as client:
            start = time.monotonic()
            for n in range(count):
                await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))
                message = adt("A01", 500_000 + n, "20240305090000+0000")
                control = message.split("\r", 1)[0].split("|")[9]
                sent[control] = time.time()
                await client.send(message, timeout=30)
        await asyncio.sleep(5)  # let the last writes go out
        used = cpu_seconds(process.pid) - before[0], cpu_seconds(server.pid) - before[1]
        process.terminate()
        await process.wait()
        rows = await _sent_at(database, "bench_sync" if pg_url is not None else None)
    server.terminate()
    delays, parts = [], []

    def stamp(value: datetime) -> float:
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()

    for control, received_at, enqueued_at, sent_at in rows:
        if control in sent and sent_at:
            delays.append(stamp(sent_at) - sent[control])
            parts.append(
                (
                    stamp(received_at) - sent[control],
                    stamp(enqueued_at) - stamp(received_at),
                    stamp(sent_at) - stamp(enqueued_at),
                )
            )
    store = "PostgreSQL" if pg_url is not None else "SQLite"
    if len(delays) < 20:
        print(f"A01 -> on the FHIR server ({store}): only {len(delays)} of {count} measured")
        return
    cut = statistics.quantiles(delays, n=20)
    print(
        f"A01 over MLLP -> its case written on the FHIR server ({store}), {rate:.0f} msg/s, "
        f"{len(delays)}/{count} messages: p50 {statistics.median(delays) * 1000:.0f} ms, "
        f"p95 {cut[18] * 1000:.0f} ms (target <= 500 ms)"
    )
    print(
        f"  CPU per message: serve {used[0] / count * 1000:.1f} ms (listener, worker, sync), "
        f"FHIR server {used[1] / count * 1000:.1f} ms"
    )
    for i, name in enumerate(("MLLP -> inbox", "inbox -> outbox", "outbox -> server")):
        values = [p[i] for p in parts]
        print(
            f"  {name:17}: p50 {statistics.median(values) * 1000:6.0f} ms, "
            f"p95 {statistics.quantiles(values, n=20)[18] * 1000:6.0f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("CM_FHIR_TEST_PG_URL"),
        help="PostgreSQL URL for the latency run on PostgreSQL too (schema bench_sync); "
        "default: CM_FHIR_TEST_PG_URL",
    )
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()
    if not args.skip_throughput:
        asyncio.run(throughput(args.cases))
    asyncio.run(latency(args.rate, args.seconds, None))
    if args.pg_url:
        asyncio.run(latency(args.rate, args.seconds, args.pg_url))


if __name__ == "__main__":
    main()
