"""The kill soak, marked ``slow`` (``make soak``): 10,000 ADT messages into ``cm-fhir serve``
SIGKILLed at 20 random moments, on SQLite and on PostgreSQL.

``cm-fhir serve`` runs as a real process (MLLP listener, API and workers). Senders keep one
persistent connection each, send one message at a time and, when the service dies under them,
reconnect to the restarted service and resend whatever was not acknowledged. The moments of the
kills are drawn (seeded) from the count of ACKs so far, plus a random few milliseconds, so they
land during commits, ACK writes and worker batches alike. After the last restart the workers
settle and the test checks, and prints:

- no ACKed message lost: every control id that got AA has its inbox row;
- no duplicates: one inbox row per message, one served resource per business identifier, at most
  one outbox bundle per case and message, no message's trace entries twice;
- every patient's final state (state document, cases, served resources, outbox bundle sequence
  per case, trace) identical to a run of the same feed without kills: the listener's intake and
  a worker in-process, on a fresh database of the same kind.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import signal
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from cm_fhir.listener import ListenerConfig, MllpListener
from cm_fhir.mllp_client import MllpClient, read_ack
from cm_fhir.store.engine import upgrade_database
from cm_fhir.store.writer import InboxWriter
from inbox_fixtures import PG_URL, Database, _pg_admin
from test_serve_process import CLI, _env
from worker_fixtures import (
    cases,
    fhir_resources,
    inbox_messages,
    outbox,
    patient_states,
    rows,
    settle_worker,
    trace,
)
from workflow_messages import Visit

pytestmark = pytest.mark.slow

MESSAGES = 10_000
KILLS = 20
SENDERS = 8
SEED = 20261201
SEND_SECONDS = 900  # bounds for a machine under load; a quiet one needs a fraction
SETTLE_SECONDS = 600


# --- the feed ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message of the feed: its MSH-10 and its text."""

    control_id: str
    text: str


def patient_story(n: int, rng: random.Random, start: datetime) -> list[Outgoing]:
    """One synthetic patient's ADT traffic, in order: an admission, then (mostly) transfers,
    updates, a pending discharge and a discharge; some admissions are cancelled (A11), some
    discharges cancelled (A13) and sent again. Times count from ``start``, a few days ago, so the
    service's case-closing schedule (wall clock) finds nothing due in either run."""

    def hours(n: float) -> datetime:
        return start + timedelta(hours=n)

    visit = Visit(
        mrn=f"MRN-KS{n:05d}",
        visit=f"VKS{n:05d}",
        birth=rng.choice(["19480304", "19900521", "19551111", "19370619"]),
        diagnosis=rng.choice(["I50.9", "J44.1", "N18.4", "K35.8", None]),
        payer=rng.choice(["PAYER01", "MEDICARE", "MEDICAID", None]),
    )
    units = ["4WEST", "3EAST", "5NORTH", "ED"]
    unit = rng.choice(units)
    story: list[tuple[str, float, dict[str, Any]]] = [("A01", 0, {"location": unit})]
    kind = rng.random()
    if kind < 0.08:
        story.append(("A11", 1, {"location": unit}))
    else:
        at = 2.0
        for _ in range(rng.randint(0, 2)):
            target = rng.choice([u for u in units if u != unit])
            prior = f"{unit}^401^A^NORTHSIDE"
            story.append(("A02", at, {"location": target, "prior_location": prior}))
            unit, at = target, at + rng.uniform(2, 12)
        if rng.random() < 0.5:
            story.append(("A08", at, {"location": unit}))
            at += 1
        expected = (start + timedelta(days=rng.randint(2, 15))).strftime("%Y%m%d")
        story.append(("A16", at + 8, {"location": unit, "expected": expected}))
        if kind < 0.85:
            end = at + rng.uniform(20, 60)
            disposition = rng.choice(["01", "03", "06", "50"])
            discharge = {"location": unit, "disposition": disposition, "discharge": hours(end)}
            story.append(("A03", end, discharge))
            if rng.random() < 0.12:
                story.append(("A13", end + 1, {"location": unit}))
                again = {**discharge, "discharge": hours(end + 6)}
                story.append(("A03", end + 6, again))
    return [
        Outgoing(f"KS{n:05d}-{i}", visit.raw(event, f"KS{n:05d}-{i}", hours(at), **fields))
        for i, (event, at, fields) in enumerate(story)
    ]


def sender_feeds(rng: random.Random) -> list[list[Outgoing]]:
    """``MESSAGES`` messages for many patients, split over the senders: each patient belongs to
    one sender, whose feed interleaves its patients at random but keeps each patient's order."""
    stories: list[list[list[Outgoing]]] = [[] for _ in range(SENDERS)]
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=3)
    total, n = 0, 0
    while total < MESSAGES:
        story = patient_story(n, rng, start)[: MESSAGES - total]
        stories[n % SENDERS].append(story)
        total, n = total + len(story), n + 1
    feeds = []
    for queues in stories:
        feed: list[Outgoing] = []
        while any(queues):
            feed.append(rng.choice([q for q in queues if q]).pop(0))
        feeds.append(feed)
    return feeds


# --- the service under test ----------------------------------------------------------------------


class ServeProcess:
    """``cm-fhir serve`` as a subprocess that can be SIGKILLed and started again."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.args = args
        self.env = env
        self.log = log
        self.port = 0
        self.up = asyncio.Event()
        self.process: asyncio.subprocess.Process | None = None
        self.starts = 0

    async def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                CLI,
                "serve",
                "--http-port",
                "0",
                "--mllp-port",
                "0",
                "--log-level",
                "WARNING",
                *self.args,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                env=self.env,
            )
        assert self.process.stdout is not None
        async with asyncio.timeout(120):
            while True:
                line = (await self.process.stdout.readline()).decode()
                assert line, f"serve exited before it was ready; see {self.log.name}"
                if line.startswith("cm-fhir listening on "):
                    self.port = int(line.rsplit(":", 1)[1])
                elif line.startswith("cm-fhir ready"):
                    break
        self.starts += 1
        self.up.set()

    async def kill(self) -> None:
        """SIGKILL: no shutdown code runs, the kernel closes every socket."""
        assert self.process is not None
        assert self.process.returncode is None, "the service died before it was killed"
        self.up.clear()
        os.kill(self.process.pid, signal.SIGKILL)
        assert await asyncio.wait_for(self.process.wait(), 30) == -signal.SIGKILL

    async def stop(self) -> int:
        """SIGTERM and the exit code of a graceful stop."""
        assert self.process is not None
        self.up.clear()
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.process.wait(), 60)

    async def abort(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


@dataclass
class Tally:
    """What the senders and the killer saw."""

    sends: int = 0
    resends: int = 0
    negative: int = 0
    kills: int = 0
    acked: list[str] = field(default_factory=list)


async def send_feed(service: ServeProcess, feed: list[Outgoing], tally: Tally) -> None:
    """Send ``feed`` in order, one message per ACK; resend what the service died before ACKing."""
    tried: set[str] = set()
    index = 0
    while index < len(feed):
        await service.up.wait()
        try:
            async with await MllpClient.connect("127.0.0.1", service.port, timeout=5) as client:
                while index < len(feed):
                    message = feed[index]
                    tally.sends += 1
                    if message.control_id in tried:
                        tally.resends += 1
                    tried.add(message.control_id)
                    answer = read_ack(await client.send(message.text, timeout=60))
                    if answer and (answer[0].code, answer[0].control_id) == (
                        "AA",
                        message.control_id,
                    ):
                        tally.acked.append(message.control_id)
                        index += 1
                    else:  # AR: the inbox could not commit; resend later
                        tally.negative += 1
                        assert tally.negative < 1_000, "too many negative ACKs"
                        await asyncio.sleep(0.05)
        except (ConnectionError, OSError, TimeoutError):
            await asyncio.sleep(0.02)  # the service died: reconnect once it is back


async def kill_repeatedly(service: ServeProcess, tally: Tally, rng: random.Random) -> None:
    """SIGKILL the service when the ACK count passes each of ``KILLS`` random marks; restart."""
    marks = sorted(rng.sample(range(200, MESSAGES - 200), KILLS))
    for mark in marks:
        while len(tally.acked) < mark:
            await asyncio.sleep(0.002)
        await asyncio.sleep(rng.uniform(0, 0.03))
        await service.kill()
        tally.kills += 1
        await service.start()


async def wait_until_processed(engine: AsyncEngine) -> None:
    """Poll until no inbox row waits for the worker."""
    query = select(func.count()).where(inbox_messages.c.state == "received")
    async with asyncio.timeout(SETTLE_SECONDS):
        while True:
            async with engine.connect() as connection:
                if (await connection.execute(query)).scalar_one() == 0:
                    return
            await asyncio.sleep(0.5)


# --- what is compared ----------------------------------------------------------------------------


@dataclass
class Snapshot:
    """The end state of one run, per patient key."""

    inbox_states: Counter[str]
    control_ids: Counter[str]
    patients: dict[str, tuple[Any, ...]]
    duplicate_resources: int
    duplicate_outbox: int


async def snapshot(engine: AsyncEngine) -> Snapshot:
    inbox = await rows(engine, inbox_messages)
    by_case: dict[str, list[Any]] = defaultdict(list)
    for r in await rows(engine, fhir_resources):
        by_case[r.case_id].append(
            (r.resource_type, r.id, r.identifier, r.status, r.content_sha256, r.resource)
        )
    bundles: dict[str, list[str]] = defaultdict(list)
    for r in await rows(engine, outbox):
        bundles[r.case_id].append(r.bundle_sha256)
    case_rows: dict[str, list[Any]] = defaultdict(list)
    for r in await rows(engine, cases):
        case_rows[r.patient_key].append(
            (
                r.case_id,
                r.status,
                r.programme,
                r.team,
                r.owner,
                r.last_bundle_sha256,
                r.case_json,
                sorted(by_case.pop(r.case_id, [])),
                bundles.pop(r.case_id, []),
            )
        )
    traced: dict[str | None, Counter[tuple[Any, ...]]] = defaultdict(Counter)
    for r in await rows(engine, trace):
        key = (r.message_control_id, r.event, r.rule, r.action, r.case_id, r.target, r.flags)
        traced[r.patient_key][key] += 1
    states = await rows(engine, patient_states)
    documents = {r.patient_key: (r.alias_of, r.document) for r in states}
    keys = set(documents) | set(case_rows) | {k for k in traced if k is not None}
    patients = {
        key: (documents.get(key), sorted(case_rows.get(key, [])), traced.get(key, Counter()))
        for key in keys
    }
    assert not by_case, "served resources of no known case"
    assert not bundles, "outbox rows of no known case"
    async with engine.connect() as connection:
        same_identifier = (
            select(func.count() - 1)
            .select_from(fhir_resources)
            .group_by(fhir_resources.c.resource_type, fhir_resources.c.identifier)
        )
        same_bundle = (
            select(func.count() - 1)
            .select_from(outbox)
            .group_by(outbox.c.case_id, outbox.c.inbox_message_id)
        )
        duplicate_resources = sum((await connection.execute(same_identifier)).scalars())
        duplicate_outbox = sum((await connection.execute(same_bundle)).scalars())
    return Snapshot(
        inbox_states=Counter(r.state for r in inbox),
        control_ids=Counter(r.control_id for r in inbox),
        patients=patients,
        duplicate_resources=duplicate_resources,
        duplicate_outbox=duplicate_outbox,
    )


# --- databases -----------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def soak_databases(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[str, Database, Database, list[str], dict[str, str]]]:
    """(kind, soak database, reference database, serve arguments, serve environment)."""
    env = _env()
    # Every sender connects from 127.0.0.1: leave room above the per-address limit.
    env["CM_FHIR_MLLP__MAX_CONNECTIONS_PER_PEER"] = str(2 * SENDERS)
    if request.param == "sqlite":
        soak = Database(f"sqlite+aiosqlite:///{tmp_path / 'data' / 'cm-fhir.sqlite3'}")
        reference = Database(f"sqlite+aiosqlite:///{tmp_path / 'reference.sqlite3'}")
        yield "sqlite", soak, reference, ["--data-dir", str(tmp_path / "data")], env
        return
    schemas = [f"cmfhir_soak_{uuid.uuid4().hex[:10]}", f"cmfhir_ref_{uuid.uuid4().hex[:10]}"]
    try:
        await _pg_admin(f'CREATE SCHEMA "{schemas[0]}"')
    except Exception as exc:
        pytest.skip(f"PostgreSQL at CM_FHIR_TEST_PG_URL unreachable: {type(exc).__name__}")
    await _pg_admin(f'CREATE SCHEMA "{schemas[1]}"')
    try:
        soak, reference = (Database(PG_URL, search_path=s) for s in schemas)
        env["CM_FHIR_DATABASE_SCHEMA"] = schemas[0]
        yield "postgres", soak, reference, ["--database-url", PG_URL, "--migrate"], env
    finally:
        for schema in schemas:
            await _pg_admin(f'DROP SCHEMA "{schema}" CASCADE')


async def reference_run(database: Database, feeds: list[list[Outgoing]]) -> Snapshot:
    """The same feed without kills: the listener's intake, the senders' feeds side by side (each
    in order, ACK by ACK, as over sockets), then one worker, in-process."""
    engine = database.engine()
    try:
        await upgrade_database(engine)
        async with InboxWriter(engine) as writer:
            listener = MllpListener(ListenerConfig(port=0), writer)

            async def send(feed: list[Outgoing]) -> int:
                acks = [await listener.handle_payload(m.text.encode()) for m in feed]
                return sum(b"MSA|AA|" in ack for ack in itertools.chain(*acks))

            assert sum(await asyncio.gather(*(send(feed) for feed in feeds))) == MESSAGES
        await settle_worker(engine)
        return await snapshot(engine)
    finally:
        await engine.dispose()


# --- the soak ------------------------------------------------------------------------------------


async def test_sigkill_soak_loses_nothing_duplicates_nothing_and_ends_like_a_quiet_run(
    soak_databases: tuple[str, Database, Database, list[str], dict[str, str]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    kind, soak_db, reference_db, args, env = soak_databases
    rng = random.Random(SEED)
    feeds = sender_feeds(rng)
    assert sum(map(len, feeds)) == MESSAGES
    service = ServeProcess(args, env, tmp_path / "serve.log")
    tally = Tally()
    started = time.monotonic()
    await service.start()
    engine = soak_db.engine()
    try:
        # Any sender's or the killer's failure cancels the others; the whole run is bounded.
        async with asyncio.timeout(SEND_SECONDS), asyncio.TaskGroup() as group:
            for feed in feeds:
                group.create_task(send_feed(service, feed, tally))
            group.create_task(kill_repeatedly(service, tally, rng))
        await wait_until_processed(engine)
        assert await service.stop() == 0, f"graceful stop failed; see {service.log.name}"
        wall = time.monotonic() - started
        soaked = await snapshot(engine)
    finally:
        await service.abort()
        await engine.dispose()
    reference = await reference_run(reference_db, feeds)

    lost = [c for c in tally.acked if c not in soaked.control_ids]
    duplicates = (
        sum(n - 1 for n in soaked.control_ids.values())
        + soaked.duplicate_resources
        + soaked.duplicate_outbox
    )
    mismatched = sorted(
        key
        for key in set(soaked.patients) | set(reference.patients)
        if soaked.patients.get(key) != reference.patients.get(key)
    )
    with capsys.disabled():
        print(
            f"\nkill soak [{kind}]: sent {MESSAGES} messages ({tally.sends} sends, "
            f"{tally.resends} resends, {tally.negative} negative ACKs), kills {tally.kills}, "
            f"ACKed {len(set(tally.acked))}, lost {len(lost)}, duplicates {duplicates} "
            f"(inbox {sum(n - 1 for n in soaked.control_ids.values())}, resources "
            f"{soaked.duplicate_resources}, outbox {soaked.duplicate_outbox}), patients compared "
            f"{len(reference.patients)}, mismatches {len(mismatched)}, wall {wall:.0f} s "
            f"(service started {service.starts} times)"
        )
    assert tally.kills == KILLS
    assert len(set(tally.acked)) == MESSAGES
    assert lost == []
    assert duplicates == 0
    assert soaked.inbox_states == reference.inbox_states == Counter({"processed": MESSAGES})
    assert len(reference.patients) > MESSAGES // 6  # many patients
    assert sum(bool(p[1]) for p in reference.patients.values()) > MESSAGES // 12  # with cases
    assert mismatched == []
