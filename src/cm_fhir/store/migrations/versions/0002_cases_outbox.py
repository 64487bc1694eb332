"""Patient states, cases, outbox, trace and FHIR resources written by the worker.

Revision ID: 0002_cases_outbox
Revises: 0001_inbox
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_cases_outbox"
down_revision: str | None = "0001_inbox"
branch_labels: str | None = None
depends_on: str | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "patient_states",
        sa.Column("patient_key", sa.String(255), nullable=False),
        sa.Column("alias_of", sa.String(255), nullable=True),
        sa.Column("document", sa.Text(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("patient_key", name="pk_patient_states"),
    )
    op.create_table(
        "cases",
        sa.Column("case_id", sa.String(64), nullable=False),
        sa.Column("patient_key", sa.String(255), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("programme", sa.String(64), nullable=False),
        sa.Column("team", sa.String(64), nullable=True),
        sa.Column("owner", sa.String(255), nullable=True),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("last_bundle_sha256", sa.String(64), nullable=True),
        sa.Column("case_json", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("case_id", name="pk_cases"),
    )
    op.create_index("ix_cases_patient_key", "cases", ["patient_key"])
    op.create_index("ix_cases_status", "cases", ["status", "team"])
    op.create_table(
        "outbox",
        sa.Column("id", _ID, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("reason", sa.String(500), nullable=True),
        sa.Column("case_id", sa.String(64), nullable=False),
        sa.Column("patient_key", sa.String(255), nullable=False),
        sa.Column("inbox_message_id", sa.BigInteger(), nullable=True),
        sa.Column("case_identifier", sa.String(500), nullable=False),
        sa.Column("identifiers", sa.Text(), nullable=False),
        sa.Column("bundle_sha256", sa.String(64), nullable=False),
        sa.Column("bundle", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
        sa.CheckConstraint("state IN ('pending', 'sent', 'failed')", name="ck_outbox_state"),
    )
    op.create_index("ix_outbox_state", "outbox", ["state", "id"])
    op.create_index("ix_outbox_case_id", "outbox", ["case_id", "id"])
    op.create_table(
        "trace",
        sa.Column("id", _ID, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("inbox_message_id", sa.BigInteger(), nullable=True),
        sa.Column("patient_key", sa.String(255), nullable=True),
        sa.Column("message_control_id", sa.String(199), nullable=True),
        sa.Column("event", sa.String(16), nullable=True),
        sa.Column("rule", sa.String(200), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("case_id", sa.String(64), nullable=True),
        sa.Column("target", sa.String(200), nullable=True),
        sa.Column("flags", sa.String(300), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_trace"),
    )
    op.create_index("ix_trace_inbox_message_id", "trace", ["inbox_message_id"])
    op.create_index("ix_trace_patient_key", "trace", ["patient_key", "id"])
    op.create_index("ix_trace_case_id", "trace", ["case_id", "id"])
    op.create_table(
        "fhir_resources",
        sa.Column("resource_type", sa.String(64), nullable=False),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("case_id", sa.String(64), nullable=False),
        sa.Column("identifier", sa.String(500), nullable=False),
        sa.Column("patient_identifier", sa.String(500), nullable=True),
        sa.Column("status", sa.String(32), nullable=True),
        sa.Column("version_id", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("last_updated", sa.DateTime(timezone=True), nullable=False),
        sa.Column("content_sha256", sa.String(64), nullable=False),
        sa.Column("resource", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("resource_type", "id", name="pk_fhir_resources"),
    )
    op.create_index("ix_fhir_resources_case_id", "fhir_resources", ["case_id"])
    op.create_index(
        "ix_fhir_resources_identifier", "fhir_resources", ["resource_type", "identifier"]
    )
    op.create_index(
        "ix_fhir_resources_patient_identifier", "fhir_resources", ["patient_identifier"]
    )


def downgrade() -> None:
    for table, indexes in (
        (
            "fhir_resources",
            [
                "ix_fhir_resources_patient_identifier",
                "ix_fhir_resources_identifier",
                "ix_fhir_resources_case_id",
            ],
        ),
        ("trace", ["ix_trace_case_id", "ix_trace_patient_key", "ix_trace_inbox_message_id"]),
        ("outbox", ["ix_outbox_case_id", "ix_outbox_state"]),
        ("cases", ["ix_cases_status", "ix_cases_patient_key"]),
        ("patient_states", []),
    ):
        for index in indexes:
            op.drop_index(index, table_name=table)
        op.drop_table(table)
