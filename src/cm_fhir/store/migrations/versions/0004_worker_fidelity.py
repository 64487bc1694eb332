"""Closing schedule, message identity in the trace, the needs_attention inbox state.

``patient_states.close_check_at`` is when the worker next checks the patient's cases for closing
(indexed: the scheduler reads only due rows); every stored document is due once right after the
upgrade, so cases already in transition are looked at. ``trace.message_key`` names the inbox
message (``<MSH-3>|<MSH-4>|<MSH-10>|<received at>``) so the trace and Provenance survive reused
control ids and a pruned inbox; ``trace.flags`` is indexed for the flag counts of ``/metrics``.
The inbox state check admits ``needs_attention``.

Revision ID: 0004_worker_fidelity
Revises: 0003_audit
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_worker_fidelity"
down_revision: str | None = "0003_audit"
branch_labels: str | None = None
depends_on: str | None = None

_STATES_BEFORE = "'received', 'processed', 'ignored', 'failed', 'dead_lettered'"
_STATES_AFTER = f"{_STATES_BEFORE}, 'needs_attention'"


def _inbox_states(states: str) -> None:
    with op.batch_alter_table("inbox_message") as batch:
        batch.drop_constraint("ck_inbox_message_state", type_="check")
        batch.create_check_constraint("ck_inbox_message_state", f"state IN ({states})")


def upgrade() -> None:
    with op.batch_alter_table("patient_states") as batch:
        batch.add_column(sa.Column("close_check_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_patient_states_close_check_at", "patient_states", ["close_check_at"])
    op.execute(
        "UPDATE patient_states SET close_check_at = CURRENT_TIMESTAMP WHERE document IS NOT NULL"
    )
    with op.batch_alter_table("trace") as batch:
        batch.add_column(sa.Column("message_key", sa.String(800), nullable=True))
    op.create_index("ix_trace_flags", "trace", ["flags"])
    _inbox_states(_STATES_AFTER)


def downgrade() -> None:
    op.execute("UPDATE inbox_message SET state = 'processed' WHERE state = 'needs_attention'")
    _inbox_states(_STATES_BEFORE)
    op.drop_index("ix_trace_flags", table_name="trace")
    with op.batch_alter_table("trace") as batch:
        batch.drop_column("message_key")
    op.drop_index("ix_patient_states_close_check_at", table_name="patient_states")
    with op.batch_alter_table("patient_states") as batch:
        batch.drop_column("close_check_at")
