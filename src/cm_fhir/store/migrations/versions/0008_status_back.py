"""Status back from EHR endpoints: the poll watermark, subscription event count and counters.

``ehr_status_back`` has one row per endpoint name (see :mod:`cm_fhir.store.ehr_status`).

Revision ID: 0008_status_back
Revises: 0007_outbox_delivery
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_status_back"
down_revision: str | None = "0007_outbox_delivery"
branch_labels: str | None = None
depends_on: str | None = None

_COUNTERS = ("applied", "unchanged", "echo", "illegal", "unknown", "unreadable")


def upgrade() -> None:
    op.create_table(
        "ehr_status_back",
        sa.Column("endpoint", sa.String(64), nullable=False),
        sa.Column("watermark", sa.DateTime(timezone=True), nullable=True),
        sa.Column("subscription", sa.String(500), nullable=True),
        sa.Column("events_seen", sa.BigInteger(), nullable=True),
        sa.Column("polled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        *(
            sa.Column(name, sa.BigInteger(), nullable=False, server_default="0")
            for name in _COUNTERS
        ),
        sa.PrimaryKeyConstraint("endpoint", name="pk_ehr_status_back"),
    )


def downgrade() -> None:
    op.drop_table("ehr_status_back")
