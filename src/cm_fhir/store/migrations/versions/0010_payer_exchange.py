"""Payer exchange on the hospital side: outbox rows that are messages, and sent reviews.

``outbox.operation`` names the FHIR operation a row's Bundle is posted to (``$process-message``,
``Claim/$submit``); NULL is a case's transaction Bundle, as before. ``payer_reviews`` holds, per
utilization review sent to a payer, where it went, its state, when to ask again
(``Claim/$inquire``) and the payer's last ClaimResponse as received (see
:mod:`cm_fhir.store.payer_reviews`).

Revision ID: 0010_payer_exchange
Revises: 0009_inbox_fhir
Create Date: 2026-12-01
"""

from __future__ import annotations

from importlib import import_module

import sqlalchemy as sa
from alembic import op

revision = "0010_payer_exchange"
down_revision: str | None = "0009_inbox_fhir"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("operation", sa.String(64), nullable=True))
    op.create_table(
        "payer_reviews",
        sa.Column("case_id", sa.String(64), nullable=False),
        sa.Column("review_id", sa.String(64), nullable=False),
        sa.Column("endpoint", sa.String(64), nullable=False),
        sa.Column("request_key", sa.String(500), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_inquiry_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("inquiries", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("claim_response", sa.Text(), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("case_id", "review_id", name="pk_payer_reviews"),
    )
    op.create_index(
        "ix_payer_reviews_endpoint_state_next_inquiry_at",
        "payer_reviews",
        ["endpoint", "state", "next_inquiry_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_payer_reviews_endpoint_state_next_inquiry_at", "payer_reviews")
    op.drop_table("payer_reviews")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("operation")
    # The batch rebuilds the table on SQLite, dropping its metric triggers: create them again.
    import_module(
        "cm_fhir.store.migrations.versions.0006_retention_metrics"
    ).restore_sqlite_triggers("outbox")
