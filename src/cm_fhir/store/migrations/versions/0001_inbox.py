"""Inbox of inbound HL7v2 messages.

Revision ID: 0001_inbox
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_inbox"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "inbox_message",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(500), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("sending_application", sa.String(255), nullable=True),
        sa.Column("sending_facility", sa.String(255), nullable=True),
        sa.Column("control_id", sa.String(199), nullable=True),
        sa.Column("content_sha256", sa.String(64), nullable=False),
        sa.Column("control_id_reused", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("message_type", sa.String(16), nullable=True),
        sa.Column("trigger_event", sa.String(16), nullable=True),
        sa.Column("version_id", sa.String(16), nullable=True),
        sa.Column("application_ack_type", sa.String(2), nullable=True),
        sa.Column("patient_key", sa.String(255), nullable=True),
        sa.Column("batch_control_id", sa.String(199), nullable=True),
        sa.Column("peer", sa.String(100), nullable=True),
        sa.Column("ack_code", sa.String(2), nullable=True),
        sa.Column("ack_bytes", sa.LargeBinary(), nullable=True),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_inbox_message"),
        sa.CheckConstraint(
            "state IN ('received', 'processed', 'ignored', 'failed', 'dead_lettered')",
            name="ck_inbox_message_state",
        ),
    )
    op.create_index(
        "uq_inbox_message_dedup",
        "inbox_message",
        ["control_id", "sending_application", "sending_facility", "content_sha256"],
        unique=True,
    )
    op.create_index(
        "ix_inbox_message_claim", "inbox_message", ["state", "patient_key", "id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_inbox_message_claim", table_name="inbox_message")
    op.drop_index("uq_inbox_message_dedup", table_name="inbox_message")
    op.drop_table("inbox_message")
