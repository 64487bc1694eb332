"""Subscriptions: those the payer side holds (PAS topic) and those the hospital side made.

``payer_subscriptions`` and ``payer_review_submitters`` are the payer side's
(:mod:`cm_fhir.store.subscriptions`): the subscriptions its clients created and, per review, the
subject that submitted it (notifications go to that subject's subscriptions only).
``payer_subscribed`` is the hospital side's (:mod:`cm_fhir.store.payer_subscribed`): per payer
endpoint, the Subscription it holds there and the digest of the secret its notifications carry.

Revision ID: 0012_subscriptions
Revises: 0011_outbox_counted_once
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_subscriptions"
down_revision: str | None = "0011_outbox_counted_once"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "payer_subscriptions",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("topic", sa.String(500), nullable=False),
        sa.Column("org_filter", sa.String(500), nullable=True),
        sa.Column("endpoint_url", sa.String(2000), nullable=False),
        sa.Column("headers", sa.Text(), nullable=False),
        sa.Column("payload", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("end_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_payer_subscriptions"),
    )
    op.create_index("ix_payer_subscriptions_owner", "payer_subscriptions", ["owner", "status"])
    op.create_table(
        "payer_review_submitters",
        sa.Column("review_id", sa.String(64), nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("review_id", name="pk_payer_review_submitters"),
    )
    op.create_table(
        "payer_subscribed",
        sa.Column("endpoint", sa.String(64), nullable=False),
        sa.Column("subscription_id", sa.String(64), nullable=True),
        sa.Column("secret_sha256", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.PrimaryKeyConstraint("endpoint", name="pk_payer_subscribed"),
    )


def downgrade() -> None:
    op.drop_table("payer_subscribed")
    op.drop_table("payer_review_submitters")
    op.drop_index("ix_payer_subscriptions_owner", "payer_subscriptions")
    op.drop_table("payer_subscriptions")
