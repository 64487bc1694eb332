"""Soak and fuzz runs, marked ``slow``: ``make soak`` runs them, ``make test`` does not.

- Damaged messages (bytes flipped, dropped, inserted; delimiters shuffled; segments cut) never
  escape the error tree from the parser, and always get an ACK (never a dropped frame) from the
  listener's intake, which stores every one of them.
- A long interleaved ADT feed for many patients through the store and the worker ends with every
  row processed once and the same patient states as the pure workflow.
"""

from __future__ import annotations

import random

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from cm_fhir.errors import CmFhirError
from cm_fhir.hl7v2.adt import parse_adt
from cm_fhir.mapping.adt_maps import load_adt_concept_maps
from cm_fhir.workflow import PatientState
from hl7v2_samples import ADT_A01_V23, ADT_A01_V251, ADT_A03_V28, ADT_A40_V251, BATCH
from worker_fixtures import (
    expected_states,
    inbox_messages,
    ingest,
    patient_states,
    rows,
    settle_worker,
)
from workflow_messages import Visit, hours

pytestmark = pytest.mark.slow
SEEDS = [ADT_A01_V251, ADT_A01_V23, ADT_A03_V28, ADT_A40_V251, BATCH]
SPECIAL = b"|^~\\&\r\n\x0b\x1c\"'\xef\xbb\xbf"


def damaged(rng: random.Random, message: str) -> bytes:
    """``message`` with one to four random injuries."""
    data = bytearray(message.encode())
    for _ in range(rng.randint(1, 4)):
        if not data:
            break
        at = rng.randrange(len(data))
        match rng.randrange(5):
            case 0:
                data[at] = rng.randrange(256)
            case 1:
                del data[at : at + rng.randint(1, 40)]
            case 2:
                data[at:at] = bytes(rng.choice(SPECIAL) for _ in range(rng.randint(1, 6)))
            case 3:
                data = data[:at]
            case _:
                segments = bytes(data).split(b"\r")
                rng.shuffle(segments)
                data = bytearray(b"\r".join(segments))
    return bytes(data)


def test_parser_fuzz_raises_only_our_errors() -> None:
    rng = random.Random(20261127)
    maps = load_adt_concept_maps()
    outcomes = {"parsed": 0, "refused": 0}
    for i in range(20_000):
        raw = damaged(rng, SEEDS[i % len(SEEDS)])
        try:
            parse_adt(raw, maps)
            outcomes["parsed"] += 1
        except CmFhirError:
            outcomes["refused"] += 1
    assert outcomes["parsed"] > 0
    assert outcomes["refused"] > 0


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_intake_fuzz_always_acks_and_stores(worker_engine: AsyncEngine) -> None:
    rng = random.Random(7)
    payloads = [damaged(rng, SEEDS[i % len(SEEDS)]) for i in range(3_000)]
    acks = await ingest(worker_engine, payloads)
    assert len(acks) >= len(payloads)  # a batch frame answers once per message inside it
    for ack in acks:
        # one ACK per message, or a batch envelope (FHS/BHS) holding one ACK per message; the
        # ACK speaks the sender's delimiters, whatever the damage made of them
        assert ack[:3] in (b"MSH", b"FHS", b"BHS"), ack[:40]
        assert b"\rMSA" in ack
    async with worker_engine.connect() as connection:
        stored = (
            await connection.execute(select(func.count()).select_from(inbox_messages))
        ).scalar_one()
    assert stored > 0
    await settle_worker(worker_engine)  # damaged rows fail or are ignored; none blocks the queue
    async with worker_engine.connect() as connection:
        left = await connection.execute(
            select(func.count()).where(inbox_messages.c.state == "received")
        )
        assert left.scalar_one() == 0


def long_feed(patients: int, rng: random.Random) -> list[str]:
    """Admit, transfers, updates and a discharge per patient, interleaved across patients."""
    queues = []
    units = ["5NORTH", "3EAST", "4WEST", "ED"]
    for n in range(patients):
        visit = Visit(mrn=f"MRN-SK{n:04d}", visit=f"VSK{n:04d}")
        feed = [visit.raw("A01", f"S{n}-0", hours(0))]
        for i in range(1, 8):
            event = "A08" if i % 3 == 0 else "A02"
            feed.append(visit.raw(event, f"S{n}-{i}", hours(i), location=units[i % 4]))
        feed.append(visit.raw("A03", f"S{n}-8", hours(40), disposition="01", discharge=hours(40)))
        queues.append(feed)
    out: list[str] = []
    while any(queues):
        queue = rng.choice([q for q in queues if q])
        out.append(queue.pop(0))
    return out


@pytest.mark.parametrize("database", ["sqlite", "postgres"], indirect=True)
async def test_long_feed_is_processed_once_in_order(worker_engine: AsyncEngine) -> None:
    messages = long_feed(200, random.Random(3))
    acks = await ingest(worker_engine, messages)
    assert all(b"MSA|AA|" in ack for ack in acks)
    await settle_worker(worker_engine)
    async with worker_engine.connect() as connection:
        states = await connection.execute(
            select(inbox_messages.c.state, func.count()).group_by(inbox_messages.c.state)
        )
        assert dict(states.all()) == {"processed": len(messages)}
    stored = {
        r.patient_key: PatientState.model_validate_json(r.document)
        for r in await rows(worker_engine, patient_states)
        if r.document
    }
    assert stored == expected_states(messages)
