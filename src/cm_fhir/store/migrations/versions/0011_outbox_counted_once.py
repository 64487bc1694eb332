"""The outbox is counted once: drop the outbox metric triggers and their counter rows.

``/metrics`` counts outbox rows by endpoint and state with one indexed aggregate over the outbox
(small: sent entries are purged), so the per-state counters that the ``0006_retention_metrics``
triggers kept on ``outbox`` were written on every outbox change and read by nothing. The upgrade
drops those triggers (and their PostgreSQL functions) and the ``outbox`` rows of ``metric_delta``
and ``metric_total``; the inbox, latency and flag counters stay. The downgrade creates the
triggers again from revision 0006's own statements and seeds the counters from the stored rows.

Revision ID: 0011_outbox_counted_once
Revises: 0010_payer_exchange
Create Date: 2026-12-01
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from alembic import op

revision = "0011_outbox_counted_once"
down_revision: str | None = "0010_payer_exchange"
branch_labels: str | None = None
depends_on: str | None = None

_SQLITE_TRIGGERS = (
    "tr_outbox_metrics_insert",
    "tr_outbox_metrics_delete",
    "tr_outbox_metrics_update",
)
_PG_TRIGGERS = (*_SQLITE_TRIGGERS, "tr_outbox_metrics_truncate")
_PG_FUNCTIONS = (
    "cm_fhir_outbox_inserted",
    "cm_fhir_outbox_deleted",
    "cm_fhir_outbox_updated",
    "cm_fhir_outbox_truncated",
)
_FORGET = (
    "DELETE FROM metric_delta WHERE metric = 'outbox'",
    "DELETE FROM metric_total WHERE metric = 'outbox'",
)
_SEED = """INSERT INTO metric_total (metric, labels, value, total)
    SELECT 'outbox', state, count(*), 0 FROM outbox GROUP BY state"""


def _postgresql() -> bool:
    return bool(op.get_bind().dialect.name == "postgresql")


def upgrade() -> None:
    if _postgresql():
        for trigger in _PG_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {trigger} ON outbox")
        for function in _PG_FUNCTIONS:
            op.execute(f"DROP FUNCTION IF EXISTS {function}()")
    else:
        for trigger in _SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    for statement in _FORGET:
        op.execute(statement)


def downgrade() -> None:
    metrics: Any = import_module("cm_fhir.store.migrations.versions.0006_retention_metrics")
    for statement in _FORGET:
        op.execute(statement)
    op.execute(_SEED)
    if _postgresql():
        for name in _PG_FUNCTIONS:
            op.execute(metrics._pg_function(name, metrics._PG_FUNCTIONS[name]))
        for trigger, table, event, referencing, function in metrics._PG_TRIGGERS:
            if trigger in _PG_TRIGGERS:
                refs = f"REFERENCING {referencing} " if referencing else ""
                op.execute(
                    f"CREATE TRIGGER {trigger} AFTER {event} ON {table} {refs}"
                    f"FOR EACH STATEMENT EXECUTE FUNCTION {function}()"
                )
    else:
        for statement in metrics._SQLITE_TRIGGERS:
            if " ON outbox" in statement:
                op.execute(statement)
