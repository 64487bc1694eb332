"""The SQLite inbox writer and the one write lock: it waits its turn (trying often, not on
SQLite's coarse back-off), commits once the lock is free, and gives up only after its timeout."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from cm_fhir.store.engine import make_engine, upgrade_database
from cm_fhir.store.writer import InboxWriter, begin_immediate
from test_store_inbox import count_rows, message


async def _sqlite_store(tmp_path: Path) -> tuple[Path, AsyncEngine]:
    path = tmp_path / "inbox.sqlite3"
    engine = make_engine(f"sqlite:///{path}")
    await upgrade_database(engine)
    return path, engine


async def test_the_writer_commits_once_another_connection_lets_go(tmp_path: Path) -> None:
    path, engine = await _sqlite_store(tmp_path)
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # as a worker batch holds it
    holder.execute("UPDATE inbox_message SET attempts = attempts WHERE id < 0")
    try:
        async with InboxWriter(engine) as writer:
            store = asyncio.ensure_future(writer.store(message("W1")))
            await asyncio.sleep(0.2)
            assert not store.done()  # waiting for the lock, not failed
            threading.Thread(target=holder.execute, args=("COMMIT",)).start()
            stored = await asyncio.wait_for(store, 30)
            assert not stored.duplicate
        assert await count_rows(engine) == 1
    finally:
        holder.close()
        await engine.dispose()


async def test_begin_immediate_gives_up_after_its_timeout(tmp_path: Path) -> None:
    path, engine = await _sqlite_store(tmp_path)
    await engine.dispose()
    holder = sqlite3.connect(path, isolation_level=None)
    waiter = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            begin_immediate(waiter, timeout=0.05)
        assert not waiter.in_transaction
        assert waiter.execute("PRAGMA busy_timeout").fetchone()[0] == 30000  # as before
        holder.execute("COMMIT")
        begin_immediate(waiter, timeout=0.05)
        assert waiter.in_transaction
        waiter.execute("ROLLBACK")
    finally:
        holder.close()
        waiter.close()
