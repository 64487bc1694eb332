"""FHIR messages in the inbox, and the payer reviewer queue indexed.

``inbox_message.format`` tells HL7v2 rows (``hl7v2``, every row stored before) from FHIR message
Bundles (``fhir``: ``$process-message`` notifications and recorded ``Claim/$submit`` requests).
They share the dedup index: a FHIR row's control id is its Bundle identifier (else its
MessageHeader id), its sender the MessageHeader source endpoint and the authenticated client.
``ix_cases_programme`` lets the reviewer queue read a programme's cases without a scan.

Revision ID: 0009_inbox_fhir
Revises: 0008_status_back
Create Date: 2026-12-01
"""

from __future__ import annotations

from importlib import import_module

import sqlalchemy as sa
from alembic import op

revision = "0009_inbox_fhir"
down_revision: str | None = "0008_status_back"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("inbox_message") as batch:
        batch.add_column(sa.Column("format", sa.String(8), nullable=False, server_default="hl7v2"))
    op.create_index("ix_cases_programme", "cases", ["programme", "status"])


def downgrade() -> None:
    op.drop_index("ix_cases_programme", table_name="cases")
    op.execute("DELETE FROM inbox_message WHERE format <> 'hl7v2'")
    with op.batch_alter_table("inbox_message") as batch:
        batch.drop_column("format")
    # The batch rebuilds the table on SQLite, dropping its metric triggers: create them again.
    import_module(
        "cm_fhir.store.migrations.versions.0006_retention_metrics"
    ).restore_sqlite_triggers("inbox_message")
