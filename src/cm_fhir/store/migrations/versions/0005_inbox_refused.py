"""The ``refused`` inbox state: messages answered AE/AR at the door, kept and never processed.

Revision ID: 0005_inbox_refused
Revises: 0004_worker_fidelity
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0005_inbox_refused"
down_revision: str | None = "0004_worker_fidelity"
branch_labels: str | None = None
depends_on: str | None = None

_STATES_BEFORE = "'received', 'processed', 'ignored', 'failed', 'dead_lettered', 'needs_attention'"
_STATES_AFTER = f"{_STATES_BEFORE}, 'refused'"


def _inbox_states(states: str) -> None:
    with op.batch_alter_table("inbox_message") as batch:
        batch.drop_constraint("ck_inbox_message_state", type_="check")
        batch.create_check_constraint("ck_inbox_message_state", f"state IN ({states})")


def upgrade() -> None:
    _inbox_states(_STATES_AFTER)


def downgrade() -> None:
    op.execute("UPDATE inbox_message SET state = 'failed' WHERE state = 'refused'")
    _inbox_states(_STATES_BEFORE)
