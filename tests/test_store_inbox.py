"""The inbox store on SQLite and PostgreSQL: migrations, dedup, control-id reuse, group commit,
race-safe inserts, values that must not poison a group."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from importlib.resources import files

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from cm_fhir.errors import StoreError
from cm_fhir.store.engine import current_revision, upgrade_database
from cm_fhir.store.inbox import NewMessage, store_messages
from cm_fhir.store.tables import inbox_messages, metadata
from cm_fhir.store.writer import InboxWriter


def message(control_id: str, body: str = "A", *, patient: str | None = "P1^H") -> NewMessage:
    raw = f"MSH|^~\\&|APP|FAC|||||ADT^A01|{control_id}|P|2.5\rPID|1||{body}".encode()
    return NewMessage(
        raw=raw,
        content_sha256=hashlib.sha256(raw).hexdigest(),
        state="received",
        ack_code="AA",
        ack_bytes=b"ACK for " + control_id.encode() + body.encode(),
        sending_application="APP",
        sending_facility="FAC",
        control_id=control_id,
        message_type="ADT",
        trigger_event="A01",
        patient_key=patient,
    )


async def count_rows(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int(
            (
                await connection.execute(select(func.count()).select_from(inbox_messages))
            ).scalar_one()
        )


async def test_migrations_match_the_table_definitions(inbox_engine: AsyncEngine) -> None:
    # Tables of later revisions may live in modules this test does not import: compare the
    # tables ``metadata`` knows, and expect the newest revision shipped.
    def include(name: str | None, type_: str, _parent: object) -> bool:
        return type_ != "table" or name in metadata.tables

    def diff(connection: Connection) -> list[object]:
        context = MigrationContext.configure(connection, opts={"include_name": include})
        return list(compare_metadata(context, metadata))

    async with inbox_engine.connect() as connection:
        assert await connection.run_sync(diff) == []
    script = ScriptDirectory.from_config(_config())
    assert await current_revision(inbox_engine) == script.get_current_head()
    await upgrade_database(inbox_engine)  # idempotent
    assert await current_revision(inbox_engine) == script.get_current_head()


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(files("cm_fhir.store") / "migrations"))
    return config


async def test_duplicate_returns_the_original_row_and_ack(inbox_engine: AsyncEngine) -> None:
    async with inbox_engine.begin() as connection:
        [first] = await store_messages(connection, [message("C1")])
    resend = message("C1")
    resend.ack_bytes = b"a different ACK that must not be used"
    async with inbox_engine.begin() as connection:
        [again] = await store_messages(connection, [resend])
    assert not first.duplicate
    assert again.duplicate
    assert again.id == first.id
    assert again.ack_bytes == b"ACK for C1A"
    assert await count_rows(inbox_engine) == 1


async def test_reused_control_id_with_new_content_is_stored_and_flagged(
    inbox_engine: AsyncEngine,
) -> None:
    async with inbox_engine.begin() as connection:
        [first] = await store_messages(connection, [message("C1", "A")])
        [other] = await store_messages(connection, [message("C1", "B")])
        [other_sender] = await store_messages(connection, [_other_sender("C1")])
    assert not first.control_id_reused
    assert other.control_id_reused
    assert not other.duplicate
    assert not other_sender.control_id_reused
    assert await count_rows(inbox_engine) == 3
    async with inbox_engine.connect() as connection:
        flags = (
            await connection.execute(
                select(inbox_messages.c.control_id_reused).order_by(inbox_messages.c.id)
            )
        ).scalars()
        assert list(flags) == [False, True, False]


def _other_sender(control_id: str) -> NewMessage:
    new = message(control_id, "A")
    new.sending_facility = "OTHER"
    return new


async def test_same_message_twice_in_one_group(inbox_engine: AsyncEngine) -> None:
    async with inbox_engine.begin() as connection:
        results = await store_messages(connection, [message("C1"), message("C2"), message("C1")])
    assert [r.duplicate for r in results] == [False, False, True]
    assert results[2].id == results[0].id
    assert await count_rows(inbox_engine) == 2


async def test_messages_without_control_id_are_never_deduplicated(
    inbox_engine: AsyncEngine,
) -> None:
    unreadable = NewMessage(
        raw=b"junk", content_sha256="0" * 64, state="failed", ack_code="AE", ack_bytes=None
    )
    async with inbox_engine.begin() as connection:
        results = await store_messages(connection, [unreadable, unreadable])
    assert results[0].id != results[1].id
    assert await count_rows(inbox_engine) == 2


async def test_concurrent_writers_store_a_retransmission_once(
    inbox_engine: AsyncEngine,
) -> None:
    # Two independent writers (as two listener processes would) race on the same messages.
    async with (
        InboxWriter(inbox_engine, writers=2) as one,
        InboxWriter(inbox_engine, writers=2) as two,
    ):
        batch = [message(f"R{n}") for n in range(40)]
        results = await asyncio.gather(
            *(one.store(m) for m in batch), *(two.store(m) for m in batch)
        )
    assert await count_rows(inbox_engine) == 40
    by_control: dict[bytes, set[int]] = {}
    for result in results:
        assert result.ack_bytes is not None
        by_control.setdefault(result.ack_bytes, set()).add(result.id)
    assert all(len(ids) == 1 for ids in by_control.values())
    assert sum(not r.duplicate for r in results) == 40


async def test_group_commit_batches_concurrent_submitters(inbox_engine: AsyncEngine) -> None:
    async with InboxWriter(inbox_engine, writers=1) as writer:
        results = await asyncio.gather(*(writer.store(message(f"G{n}")) for n in range(200)))
        assert writer.messages == 200
        assert writer.batches < 200
    assert len({r.id for r in results}) == 200
    assert await count_rows(inbox_engine) == 200


async def test_writer_failure_reaches_every_waiter(inbox_engine: AsyncEngine) -> None:
    async with inbox_engine.begin() as connection:
        await connection.execute(text("ALTER TABLE inbox_message RENAME TO inbox_message_moved"))
    try:
        async with InboxWriter(inbox_engine) as writer:
            outcomes = await asyncio.gather(
                *(writer.store(message(f"F{n}")) for n in range(5)), return_exceptions=True
            )
        assert all(isinstance(o, StoreError) for o in outcomes)
    finally:
        async with inbox_engine.begin() as connection:
            await connection.execute(
                text("ALTER TABLE inbox_message_moved RENAME TO inbox_message")
            )
    assert await count_rows(inbox_engine) == 0


async def test_closed_writer_refuses(inbox_engine: AsyncEngine) -> None:
    writer = InboxWriter(inbox_engine)
    writer.start()
    await writer.close()
    with pytest.raises(StoreError):
        await writer.store(message("late"))


async def test_odd_header_values_do_not_poison_a_group(inbox_engine: AsyncEngine) -> None:
    # MSH-10 longer than its column, and a NUL (PostgreSQL refuses it in text).
    odd = dataclasses.replace(message("X" * 300), sending_application="APP\x00NUL")
    async with InboxWriter(inbox_engine) as writer:
        results = await asyncio.gather(writer.store(odd), writer.store(message("fine")))
    assert [r.duplicate for r in results] == [False, False]
    async with inbox_engine.connect() as connection:
        stored = (
            await connection.execute(
                select(inbox_messages.c.control_id, inbox_messages.c.sending_application).order_by(
                    inbox_messages.c.id
                )
            )
        ).all()
    assert [(len(c), a) for c, a in stored] == [(199, "APPNUL"), (4, "APP")]


async def test_writer_rows_read_back_like_sqlalchemy_rows(inbox_engine: AsyncEngine) -> None:
    via_writer = message("W1")
    via_core = message("W2")
    async with InboxWriter(inbox_engine) as writer:
        await writer.store(via_writer)
    async with inbox_engine.begin() as connection:
        await store_messages(connection, [via_core])
    async with inbox_engine.connect() as connection:
        rows = (
            await connection.execute(select(inbox_messages).order_by(inbox_messages.c.id))
        ).all()
    for row, sent in zip(rows, [via_writer, via_core], strict=True):
        assert row.received_at.replace(tzinfo=None) == sent.received_at.replace(tzinfo=None)
        assert (row.raw, row.ack_bytes, row.control_id_reused) == (sent.raw, sent.ack_bytes, False)
        assert (row.patient_key, row.state, row.attempts) == (sent.patient_key, "received", 0)


def test_sqlite_values_share_a_bound_timestamp_only_when_it_is_the_same() -> None:
    from datetime import UTC, datetime, timedelta

    from cm_fhir.store.inbox_sql import SqliteInboxSql

    row = message("V1").row(control_id_reused=True)
    values = SqliteInboxSql._values(SqliteInboxSql.__new__(SqliteInboxSql), row)
    assert values[0] == values[1] == row["received_at"].strftime("%Y-%m-%d %H:%M:%S.%f")
    later = datetime(2024, 3, 5, 10, 0, tzinfo=UTC)
    moved = {**row, "received_at": later, "updated_at": later + timedelta(seconds=5)}
    values = SqliteInboxSql._values(SqliteInboxSql.__new__(SqliteInboxSql), moved)
    assert values[:2] == ["2024-03-05 10:00:00.000000", "2024-03-05 10:00:05.000000"]
    assert values[9] == 1


async def test_writer_flags_a_reused_control_id_within_and_across_groups(
    inbox_engine: AsyncEngine,
) -> None:
    # The writer's own statements (raw sqlite3 or asyncpg) decide reuse as the Core path does.
    async with InboxWriter(inbox_engine, writers=1) as writer:
        first = await writer.store(message("U1", "A"))
        grouped = await writer.store_many([message("U1", "B"), message("U1", "C")])
        resent = await writer.store(message("U1", "B"))
        elsewhere = await writer.store(_other_sender("U1"))
    assert (first.control_id_reused, first.duplicate) == (False, False)
    assert [(r.control_id_reused, r.duplicate) for r in grouped] == [(True, False)] * 2
    assert (resent.duplicate, resent.id, resent.ack_bytes) == (True, grouped[0].id, b"ACK for U1B")
    assert not elsewhere.control_id_reused
    async with inbox_engine.connect() as connection:
        flags = (
            await connection.execute(
                select(inbox_messages.c.control_id_reused).order_by(inbox_messages.c.id)
            )
        ).scalars()
        assert list(flags) == [False, True, True, False]


async def test_lockstep_senders_share_one_commit(inbox_engine: AsyncEngine) -> None:
    # Four senders that each wait for their ACK before the next message, coming back a few
    # loop turns apart (as senders over sockets do): one commit serves all four, not two.
    async def sender(n: int, writer: InboxWriter) -> None:
        for m in range(40):
            await writer.store(message(f"L{n}-{m}"))
            for _ in range(n):
                await asyncio.sleep(0)

    async with InboxWriter(inbox_engine, writers=1) as writer:
        await asyncio.gather(*(sender(n, writer) for n in range(4)))
        assert writer.messages == 160
        assert writer.messages / writer.batches >= 3.0  # two per commit would be 2.0
        assert writer.lingered > 0
    assert await count_rows(inbox_engine) == 160


async def test_a_lone_sender_is_never_held_back(inbox_engine: AsyncEngine) -> None:
    async with InboxWriter(inbox_engine) as writer:
        await asyncio.gather(*(writer.store(message(f"B{n}")) for n in range(8)))  # a burst
        for m in range(20):
            await writer.store(message(f"S{m}"))
        # after the burst, at most one short wait per halving of the expected group (8, 4, 2)
        assert writer.lingered <= 3
        assert writer.messages == 28


async def test_row_ids_follow_arrival_order_within_a_group(inbox_engine: AsyncEngine) -> None:
    # A message without a control id (an unreadable MSH) between two readable ones, one group.
    unreadable = dataclasses.replace(message("ignored"), control_id=None, state="refused")
    async with InboxWriter(inbox_engine) as writer:
        first, between, last = await writer.store_many([message("O1"), unreadable, message("O2")])
        again = await writer.store_many([message("O3"), unreadable, message("O1")])
    assert first.id < between.id < last.id
    assert again[0].id < again[1].id
    assert (again[2].duplicate, again[2].id) == (True, first.id)  # dedup across the runs
    async with inbox_engine.connect() as connection:
        order = (
            await connection.execute(
                select(inbox_messages.c.control_id).order_by(inbox_messages.c.id)
            )
        ).scalars()
        assert list(order) == ["O1", None, "O2", "O3", None]
