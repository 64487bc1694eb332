"""Table definitions of the store (SQLAlchemy Core). Declarations only; no I/O at import.

The inbox keeps every inbound HL7v2 message, and every FHIR message Bundle (``format``), as
received, before it is acknowledged. A worker
claims rows in arrival order (``id``) per patient (``patient_key``); the unique dedup index makes
a retransmission (same sender, MSH-10 and content) land on the row that already holds its ACK.
Migrations in ``cm_fhir.store.migrations`` create the same schema by hand; a test compares them.
"""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    false,
)

__all__ = ["INBOX_STATES", "InboxFormat", "InboxState", "inbox_messages", "metadata"]

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class InboxState(StrEnum):
    """Life cycle of an inbox row: received -> processed / ignored / failed / dead_lettered /
    needs_attention (the workflow could not apply the event; see ``cm_fhir.worker.attention``).
    ``refused`` rows were answered AE/AR (CE/CR) at the door and are kept, never processed."""

    RECEIVED = "received"
    PROCESSED = "processed"
    IGNORED = "ignored"
    FAILED = "failed"
    DEAD_LETTERED = "dead_lettered"
    NEEDS_ATTENTION = "needs_attention"
    REFUSED = "refused"


class InboxFormat(StrEnum):
    """What an inbox row holds: an HL7v2 message, or a FHIR message Bundle (JSON)."""

    HL7V2 = "hl7v2"
    FHIR = "fhir"


INBOX_STATES = tuple(state.value for state in InboxState)

inbox_messages = Table(
    "inbox_message",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("state", String(16), nullable=False),
    Column("reason", String(500), nullable=True),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("sending_application", String(255), nullable=True),
    Column("sending_facility", String(255), nullable=True),
    Column("control_id", String(199), nullable=True),
    Column("content_sha256", String(64), nullable=False),
    Column("control_id_reused", Boolean, nullable=False, server_default=false()),
    Column("message_type", String(16), nullable=True),
    Column("trigger_event", String(16), nullable=True),
    Column("version_id", String(16), nullable=True),
    Column("application_ack_type", String(2), nullable=True),
    Column("patient_key", String(255), nullable=True),
    Column("batch_control_id", String(199), nullable=True),
    Column("peer", String(100), nullable=True),
    Column("ack_code", String(2), nullable=True),
    Column("ack_bytes", LargeBinary, nullable=True),
    Column("raw", LargeBinary, nullable=False),
    # Set when retention blanked ``raw`` (cm_fhir.store.retention); the row itself stays.
    Column("raw_purged_at", DateTime(timezone=True), nullable=True),
    # "hl7v2", or "fhir" for a FHIR message Bundle (``0009_inbox_fhir``).
    Column("format", String(8), nullable=False, server_default="hl7v2"),
    CheckConstraint(
        "state IN ('received', 'processed', 'ignored', 'failed', 'dead_lettered', "
        "'needs_attention', 'refused')",
        name="state",
    ),
)

Index(
    "uq_inbox_message_dedup",
    inbox_messages.c.control_id,
    inbox_messages.c.sending_application,
    inbox_messages.c.sending_facility,
    inbox_messages.c.content_sha256,
    unique=True,
)
Index(
    "ix_inbox_message_claim",
    inbox_messages.c.state,
    inbox_messages.c.patient_key,
    inbox_messages.c.id,
)
Index("ix_inbox_message_raw_purged_at", inbox_messages.c.raw_purged_at, inbox_messages.c.id)
