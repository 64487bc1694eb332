"""Which messages the worker applies, and which need a person. Pure: no I/O.

**Processing id (MSH-11).** Only messages whose MSH-11.1 is in the configured set
(``worker.apply_processing_ids``, default ``P``: production) change cases. Training (``T``) and
debugging (``D``) messages are stored and acknowledged like any other, then settled ``ignored``
with a reason naming MSH-11 and a trace row (:data:`NOT_APPLIED_RULE`). An empty MSH-11 counts
as ``P``.

**Needs attention.** An event whose outcome carries one of :data:`ATTENTION_FLAGS` could not be
applied as meant (no usable visit identity): its inbox row ends ``needs_attention`` with a
reason naming the flag and the position, never ``processed``. Such a message is in no visit's
log, so a replay, e.g. after the rules or the sender's data were fixed, applies it again instead
of calling it a duplicate.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from cm_fhir.hl7v2.parse import Hl7Message
from cm_fhir.workflow import Flag

__all__ = [
    "ATTENTION_FLAGS",
    "DEFAULT_PROCESSING_IDS",
    "NOT_APPLIED_RULE",
    "attention_reason",
    "not_applied_reason",
    "processing_id",
]

#: Workflow flags that put a message in ``needs_attention``, with the position each concerns.
ATTENTION_FLAGS: dict[Flag, str] = {
    Flag.NO_VISIT_NUMBER: "PV1-19",
    Flag.UNKNOWN_REVIEW: "ClaimResponse.request",
    Flag.DECISION_CONFLICT: "ClaimResponse.outcome",
}
DEFAULT_PROCESSING_IDS = frozenset({"P"})
#: The trace rule of a message not applied because of its processing id.
NOT_APPLIED_RULE = "worker.apply_processing_ids"


def processing_id(message: Hl7Message) -> str:
    """MSH-11.1 (``P``, ``T``, ``D``), upper case; ``P`` when empty."""
    value = message.msh.text(11)
    return value.upper() if value else "P"


def not_applied_reason(processing: str, applied: Collection[str]) -> str | None:
    """The ``ignored`` reason for a processing id outside ``applied``, or None to apply it."""
    if processing in applied:
        return None
    allowed = ", ".join(sorted(applied)) or "none"
    return f"not applied: MSH-11 processing id {processing[:8]} (applied: {allowed})"


def attention_reason(flags: Iterable[Flag]) -> str | None:
    """The ``needs_attention`` reason for an outcome's flags, or None."""
    found = [f for f in ATTENTION_FLAGS if f in set(flags)]
    if not found:
        return None
    named = ", ".join(f"{f.value} ({ATTENTION_FLAGS[f]})" for f in found)
    return f"needs attention: {named}; the event was not applied"
