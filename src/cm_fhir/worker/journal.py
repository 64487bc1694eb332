"""One log line per processing outcome of an inbox row, written after its batch commits. I/O (logs).

:func:`outcome_lines` reads a batch's :class:`~cm_fhir.store.case_writes.CaseChanges` (while the
batch runs) into plain fields: the inbox id, its new state, its control id, the rules that fired
and the cases they touched, and the reason of a row not processed (reasons name error types and
positions, never content). :func:`log_outcomes` writes them once the transaction has committed,
so a rolled-back batch leaves no line claiming otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from cm_fhir.store.case_writes import CaseChanges
from cm_fhir.store.queue import ClaimedMessage

__all__ = ["log_outcomes", "outcome_lines"]

log = logging.getLogger("cm_fhir.worker.outcome")


def outcome_lines(changes: CaseChanges, rows: Sequence[ClaimedMessage]) -> list[dict[str, Any]]:
    """The fields of one line per settled inbox row of ``changes`` (none when INFO is off)."""
    if not log.isEnabledFor(logging.INFO):
        return []
    control_ids = {row.id: row.control_id for row in rows}
    rules: dict[int, list[str]] = {}
    cases: dict[int, list[str]] = {}
    for record in changes.trace:
        if record.inbox_message_id is None:
            continue
        rules.setdefault(record.inbox_message_id, []).append(record.entry.rule)
        if record.entry.case_id:
            cases.setdefault(record.inbox_message_id, []).append(record.entry.case_id)
    lines = []
    for outcome in changes.outcomes:
        fields: dict[str, Any] = {
            "inbox_id": outcome.id,
            "state": outcome.state.value,
            "control_id": control_ids.get(outcome.id),
            "rule": ",".join(dict.fromkeys(rules.get(outcome.id, ()))) or None,
            "case_id": ",".join(dict.fromkeys(cases.get(outcome.id, ()))) or None,
        }
        if outcome.reason:
            fields["reason"] = outcome.reason
        lines.append(fields)
    return lines


def log_outcomes(lines: list[dict[str, Any]]) -> None:
    """Log each line: INFO; WARNING for a row that failed, was dead-lettered or needs attention
    (a row put back for another attempt is ``received``, with the failed attempt's reason)."""
    for fields in lines:
        level = logging.INFO if fields["state"] in ("processed", "ignored") else logging.WARNING
        log.log(level, "message %s", fields["state"], extra=fields)
