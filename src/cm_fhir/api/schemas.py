"""Response and request bodies of the inbox, outbox and replay routes (pydantic). No I/O.

These are the documented shapes of ``/api/messages``, ``/api/dead-letters`` and ``/api/outbox``
in the OpenAPI document. Raw HL7v2 content is PHI: it appears only in :class:`MessageDetail` when
asked for (``include_raw=true``), and such a read is audited.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from cm_fhir.api.paging import PageLinks

__all__ = [
    "MessageDetail",
    "MessagePage",
    "MessageSummary",
    "OutboxCount",
    "OutboxItem",
    "OutboxPage",
    "OutboxSummary",
    "ReplayRequest",
    "ReplayResult",
    "TraceItem",
]


def _as_utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; the store writes UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class MessageSummary(_Out):
    """One inbox row, without its content."""

    id: int
    received_at: UtcDatetime
    updated_at: UtcDatetime
    state: str
    reason: str | None = None
    attempts: int
    sending_application: str | None = None
    sending_facility: str | None = None
    control_id: str | None = None
    control_id_reused: bool
    message_type: str | None = None
    trigger_event: str | None = None
    version_id: str | None = None
    patient_key: str | None = None
    batch_control_id: str | None = None
    peer: str | None = None
    ack_code: str | None = None
    format: str = Field(
        "hl7v2", description="hl7v2, or fhir for a FHIR message Bundle (notification, PAS request)."
    )
    raw_purged_at: UtcDatetime | None = Field(
        None, description="When retention blanked the raw message (it can no longer be replayed)."
    )


class MessagePage(PageLinks):
    """A page of inbox rows, newest first (paged as every list: :mod:`cm_fhir.api.paging`)."""

    items: list[MessageSummary]


class TraceItem(_Out):
    """One workflow step a message caused (which rule did what to which case)."""

    id: int
    created_at: UtcDatetime
    event: str | None = None
    rule: str
    action: str
    case_id: str | None = None
    target: str | None = None
    flags: str | None = None


class OutboxItem(_Out):
    """One FHIR write (a transaction Bundle for one case) queued by the worker."""

    id: int
    created_at: UtcDatetime
    updated_at: UtcDatetime
    state: str
    attempts: int
    reason: str | None = None
    case_id: str
    inbox_message_id: int | None = None
    case_identifier: str
    bundle_sha256: str
    bundle_bytes: int = Field(description="Size of the Bundle body.")
    endpoint: str = Field("default", description="The FHIR endpoint the write is for.")
    next_attempt_at: UtcDatetime | None = Field(None, description="When a retry is due.")
    sent_at: UtcDatetime | None = None
    last_error: str | None = Field(None, description="The endpoint's last answer (status, class).")
    last_outcome: dict[str, Any] | None = Field(
        None, description="The OperationOutcome the endpoint answered the last attempt with."
    )

    @field_validator("last_outcome", mode="before")
    @classmethod
    def _outcome_json(cls, value: Any) -> Any:
        return orjson.loads(value) if isinstance(value, str | bytes) else value


class MessageDetail(MessageSummary):
    """One inbox row with its ACK, what it caused (trace, FHIR writes) and, on request, its raw
    content."""

    ack: str | None = Field(None, description="The ACK sent back, segments separated by CR.")
    raw: str | None = Field(None, description="The message as received (only if include_raw).")
    trace: list[TraceItem] = Field(default_factory=list)
    outbox: list[OutboxItem] = Field(default_factory=list)


class ReplayRequest(BaseModel):
    """Which rows to put back to ``received``: explicit ids, or every dead letter."""

    model_config = ConfigDict(extra="forbid")

    ids: list[Annotated[int, Field(ge=1, le=2**63 - 1)]] = Field(
        default_factory=list, max_length=1000, description="Inbox row ids."
    )
    all_dead_letters: bool = Field(False, description="Replay every dead-lettered message.")


class ReplayResult(BaseModel):
    """What a replay did."""

    replayed: list[int] = Field(description="Rows put back to `received`.")
    skipped: dict[str, str] = Field(
        default_factory=dict, description="Row id -> why it was not replayed."
    )


class OutboxCount(BaseModel):
    endpoint: str
    state: str
    count: int
    oldest: UtcDatetime | None = None


class OutboxSummary(BaseModel):
    """Pending, sent and failed FHIR writes, per endpoint and state."""

    counts: list[OutboxCount]


class OutboxPage(PageLinks):
    """A page of outbox rows, newest first (paged as every list: :mod:`cm_fhir.api.paging`)."""

    items: list[OutboxItem]


def outbox_item(row: Any) -> OutboxItem:
    """An :class:`OutboxItem` from an outbox row mapping that has ``bundle_bytes``."""
    return OutboxItem.model_validate(dict(row))
