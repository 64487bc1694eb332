"""Outbox delivery: an endpoint, a lease and retry columns per outbox row; the sync state table.

Every outbox row names the FHIR endpoint it is for (``endpoint``; rows enqueued before this
revision go to ``default``, the endpoint ``--ehr-url`` configures). The sync worker leases rows
(``lease_until``, ``leased_by``), retries them at ``next_attempt_at``, and keeps the endpoint's
last error and OperationOutcome (``last_error``, ``last_outcome``). ``superseded`` marks a row
that a later Bundle of the same case replaced before it was sent. ``sync_state`` keeps, per
endpoint, what the server holds of each resource we write (server id, version, the hash of what
we last sent), keyed by resource type and business identifier.

Revision ID: 0007_outbox_delivery
Revises: 0006_retention_metrics
Create Date: 2026-12-01
"""

from __future__ import annotations

from importlib import import_module

import sqlalchemy as sa
from alembic import op

revision = "0007_outbox_delivery"
down_revision: str | None = "0006_retention_metrics"
branch_labels: str | None = None
depends_on: str | None = None

_STATES_BEFORE = "'pending', 'sent', 'failed'"
_STATES_AFTER = f"{_STATES_BEFORE}, 'superseded'"


def _restore_sqlite_outbox_triggers() -> None:
    """SQLite rebuilds ``outbox`` for the check constraint, which drops its metric triggers
    (``0006_retention_metrics``): create them again, from that revision's own statements."""
    import_module(
        "cm_fhir.store.migrations.versions.0006_retention_metrics"
    ).restore_sqlite_triggers("outbox")


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(
            sa.Column("endpoint", sa.String(64), nullable=False, server_default="default")
        )
        batch.add_column(sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("leased_by", sa.String(64), nullable=True))
        batch.add_column(sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("last_error", sa.String(500), nullable=True))
        batch.add_column(sa.Column("last_outcome", sa.Text(), nullable=True))
        batch.drop_constraint("ck_outbox_state", type_="check")
        batch.create_check_constraint("ck_outbox_state", f"state IN ({_STATES_AFTER})")
    _restore_sqlite_outbox_triggers()
    op.create_index("ix_outbox_endpoint_patient", "outbox", ["endpoint", "patient_key", "state"])
    op.create_index("ix_outbox_endpoint_state", "outbox", ["endpoint", "state", "id"])
    op.create_table(
        "sync_state",
        sa.Column("endpoint", sa.String(64), nullable=False),
        sa.Column("resource_type", sa.String(64), nullable=False),
        sa.Column("identifier", sa.String(500), nullable=False),
        sa.Column("server_id", sa.String(128), nullable=True),
        sa.Column("version_id", sa.String(64), nullable=True),
        sa.Column("last_sent_sha256", sa.String(64), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("endpoint", "resource_type", "identifier", name="pk_sync_state"),
    )


def downgrade() -> None:
    op.drop_table("sync_state")
    op.drop_index("ix_outbox_endpoint_state", table_name="outbox")
    op.drop_index("ix_outbox_endpoint_patient", table_name="outbox")
    op.execute("UPDATE outbox SET state = 'sent' WHERE state = 'superseded'")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_constraint("ck_outbox_state", type_="check")
        batch.create_check_constraint("ck_outbox_state", f"state IN ({_STATES_BEFORE})")
        for column in (
            "last_outcome",
            "last_error",
            "sent_at",
            "leased_by",
            "lease_until",
            "next_attempt_at",
            "endpoint",
        ):
            batch.drop_column(column)
    _restore_sqlite_outbox_triggers()
