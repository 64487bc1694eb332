"""The workflow trace: which message and which rule caused each change. I/O.

One row per :class:`~cm_fhir.workflow.TraceEntry`, linked to the inbox row that caused it
(``inbox_message_id``, and ``message_key``: sender, control id and receipt time, see
:func:`cm_fhir.store.queue.message_key`) and filed under the patient's key, in the order the
workflow produced them. Rows hold control ids, rule key paths, actions and local ids, never
patient data. Functions run
in the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection

from cm_fhir.store.case_tables import trace
from cm_fhir.workflow import TraceEntry

__all__ = ["TraceRecord", "record_trace"]


@dataclass(frozen=True, slots=True)
class TraceRecord:
    """One trace entry and where it came from."""

    inbox_message_id: int | None
    patient_key: str | None
    entry: TraceEntry
    message_key: str | None = None


def record_trace(connection: Connection, records: Sequence[TraceRecord], now: datetime) -> None:
    """Append the records (one executemany), keeping their order in ``id``."""
    if not records:
        return
    connection.execute(
        trace.insert(),
        [
            {
                "created_at": now,
                "inbox_message_id": r.inbox_message_id,
                "patient_key": r.patient_key,
                "message_control_id": r.entry.message_control_id,
                "event": r.entry.event,
                "rule": r.entry.rule[:200],
                "action": r.entry.action[:64],
                "case_id": r.entry.case_id,
                "target": r.entry.target[:200] if r.entry.target else None,
                "flags": ",".join(f.value for f in r.entry.flags) or None,
                "message_key": r.message_key,
            }
            for r in records
        ],
    )
