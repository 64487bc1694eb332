"""The records of one worker batch, and what a batch does around its work. No I/O of its own
(:func:`prefer_lz4` issues one statement on the caller's connection).

:class:`BatchResult` counts a batch (or a run); :class:`Parsed` is a claimed row parsed (or
already settled); :class:`PreparedBatch` is a batch worked out and not yet written (the read half
on SQLite); :class:`Applied` is what a row came to (the dry run). :func:`describe_error` words a
failure without PHI. :func:`collection_paused` holds the cyclic garbage collector off while a
batch runs; :func:`prefer_lz4` asks PostgreSQL to compress a batch's large values with lz4.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from cm_fhir.domain.case import Case
from cm_fhir.errors import CmFhirError, Hl7ParseError, UnsupportedEventError
from cm_fhir.store.case_writes import CaseChanges
from cm_fhir.store.queue import ClaimedMessage, InboxOutcome
from cm_fhir.store.trace import TraceRecord
from cm_fhir.workflow import DomainEvent, Outcome, TraceEntry

__all__ = [
    "Applied",
    "BatchResult",
    "Parsed",
    "PreparedBatch",
    "collection_paused",
    "describe_error",
    "keys_of",
    "prefer_lz4",
]


@dataclass(slots=True)
class BatchResult:
    """Counts for one batch (or a whole run, summed)."""

    claimed: int = 0
    processed: int = 0
    ignored: int = 0
    failed: int = 0
    needs_attention: int = 0
    retried: int = 0
    dead_lettered: int = 0
    outbox: int = 0
    trace: int = 0
    resources_written: int = 0
    resources_removed: int = 0

    def add(self, other: BatchResult) -> None:
        for name in self.__slots__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


def describe_error(exc: BaseException) -> str:
    """A reason without PHI: our errors name positions; others are named by type only."""
    if isinstance(exc, Hl7ParseError | UnsupportedEventError):
        where = f" at {exc.location}" if exc.location else ""
        return f"{type(exc).__name__}{where}: {exc}"[:400]
    if isinstance(exc, CmFhirError):
        return f"{type(exc).__name__}: {exc}"[:400]
    return f"{type(exc).__name__} while processing"


@dataclass(slots=True)
class Parsed:
    """One claimed row, parsed: its event and patient keys, or already settled (with trace)."""

    row: ClaimedMessage
    event: DomainEvent | None = None
    settled: InboxOutcome | None = None
    keys: tuple[str, ...] = ()
    trace: tuple[TraceRecord, ...] = ()


@dataclass(slots=True)
class PreparedBatch:
    """A batch worked out and not yet written: its claimed rows, what to write, and (when read
    without locks) the versions of the patient states it read."""

    rows: list[ClaimedMessage]
    changes: CaseChanges
    now: datetime
    versions: dict[str, int] | None = None


@dataclass(frozen=True, slots=True)
class Applied:
    """What one row came to: its inbox outcome, the workflow outcome if the workflow ran, the
    cases of the states it was applied to (before), and its trace."""

    parsed: Parsed
    settled: InboxOutcome
    outcome: Outcome | None
    before: tuple[Case, ...]
    trace: tuple[TraceEntry, ...]


def keys_of(parsed: list[Parsed]) -> set[str]:
    """Every patient key the parsed rows name (the states to load and lock)."""
    return {k for p in parsed for k in p.keys}


def prefer_lz4(connection: Connection, *, probe: bool) -> bool:
    """Have PostgreSQL compress this transaction's large values with lz4; False if it cannot.

    Bundles and state documents are kilobytes each: lz4 stores them at a fraction of the server
    CPU of the default pglz (each stored value records its method; reading is unchanged). The
    first time runs in a savepoint, so a server without lz4 (or before 14) only loses the hint.
    """
    statement = "SET LOCAL default_toast_compression = 'lz4'"
    if not probe:
        connection.exec_driver_sql(statement)
        return True
    try:
        with connection.begin_nested():
            connection.exec_driver_sql(statement)
    except DBAPIError:
        return False
    return True


@contextmanager
def collection_paused() -> Iterator[None]:
    """Hold the cyclic garbage collector off for one batch; it catches up right after.

    A batch allocates hundreds of thousands of short-lived model objects while the decoded states
    of earlier batches stay alive, so the default thresholds run a young collection every few
    hundred allocations and a full one over those states every few batches. Reference counting
    still frees everything at once; only cycles wait for the collection that follows the batch.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
