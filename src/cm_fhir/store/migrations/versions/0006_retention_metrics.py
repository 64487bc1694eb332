"""Retention marks and indexes; the metric counters and the triggers that keep them.

``inbox_message.raw_purged_at`` is set when retention blanks a row's raw bytes (indexed with
``id``: the purge walks only rows not yet purged); ``trace.created_at`` is indexed for the trace's
retention. ``metric_delta`` and ``metric_total`` hold the counters of ``/metrics`` (see
:mod:`cm_fhir.store.counters`): triggers on ``inbox_message``, ``trace`` and ``outbox`` append
deltas (per row on SQLite, per statement with transition tables on PostgreSQL), and the upgrade
seeds the totals from the rows already stored. A row is one latency observation each time it
changes from ``received`` to a settled state, or when it is stored settled (an unreadable message,
0 seconds). The SQL is written out here, frozen with the
revision: the latency bucket bounds are those of ``cm_fhir.store.counters.LATENCY_BOUNDS``.

Revision ID: 0006_retention_metrics
Revises: 0005_inbox_refused
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_retention_metrics"
down_revision: str | None = "0005_inbox_refused"
branch_labels: str | None = None
depends_on: str | None = None

_BOUNDS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
_SETTLED = "('processed', 'failed', 'dead_lettered', 'needs_attention')"


def _key(row: str) -> str:
    return (
        f"coalesce({row}.message_type, '') || '|' || coalesce({row}.trigger_event, '') || '|' "
        f"|| coalesce({row}.ack_code, '') || '|' || {row}.state"
    )


def _bucket(seconds: str) -> str:
    cases = " ".join(f"WHEN {seconds} <= {b} THEN '{b}'" for b in _BOUNDS)
    return f"CASE {cases} ELSE '+Inf' END"


def _sqlite_seconds(row: str) -> str:
    return f"max(0.0, (julianday({row}.updated_at) - julianday({row}.received_at)) * 86400.0)"


def _pg_seconds(row: str) -> str:
    return f"greatest(0.0, extract(epoch FROM {row}.updated_at - {row}.received_at))::float8"


_DELTA = "INSERT INTO metric_delta (metric, labels, delta, total)"
_CHANGED = (
    "o.state IS DISTINCT FROM n.state OR o.message_type IS DISTINCT FROM n.message_type "
    "OR o.trigger_event IS DISTINCT FROM n.trigger_event OR o.ack_code IS DISTINCT FROM n.ack_code"
)

_SQLITE_TRIGGERS = (
    f"""CREATE TRIGGER tr_inbox_metrics_insert AFTER INSERT ON inbox_message BEGIN
        {_DELTA} VALUES ('inbox', {_key("NEW")}, 1, 0);
        {_DELTA} SELECT 'latency', {_bucket("s")}, 1, s FROM (SELECT {_sqlite_seconds("NEW")} AS s)
        WHERE NEW.state IN {_SETTLED}; END""",
    f"""CREATE TRIGGER tr_inbox_metrics_delete AFTER DELETE ON inbox_message BEGIN
        {_DELTA} VALUES ('inbox', {_key("OLD")}, -1, 0); END""",
    f"""CREATE TRIGGER tr_inbox_metrics_update
        AFTER UPDATE OF state, message_type, trigger_event, ack_code ON inbox_message
        WHEN {
        _CHANGED.replace("o.", "OLD.").replace("n.", "NEW.").replace("IS DISTINCT FROM", "IS NOT")
    }
        BEGIN
        {_DELTA} VALUES ('inbox', {_key("OLD")}, -1, 0), ('inbox', {_key("NEW")}, 1, 0);
        {_DELTA} SELECT 'latency', {_bucket("s")}, 1, s FROM (SELECT {_sqlite_seconds("NEW")} AS s)
        WHERE OLD.state = 'received' AND NEW.state IN {_SETTLED}; END""",
    f"""CREATE TRIGGER tr_trace_metrics_insert AFTER INSERT ON trace
        WHEN NEW.flags IS NOT NULL BEGIN {_DELTA} VALUES ('flags', NEW.flags, 1, 0); END""",
    f"""CREATE TRIGGER tr_outbox_metrics_insert AFTER INSERT ON outbox BEGIN
        {_DELTA} VALUES ('outbox', NEW.state, 1, 0); END""",
    f"""CREATE TRIGGER tr_outbox_metrics_delete AFTER DELETE ON outbox BEGIN
        {_DELTA} VALUES ('outbox', OLD.state, -1, 0); END""",
    f"""CREATE TRIGGER tr_outbox_metrics_update AFTER UPDATE OF state ON outbox
        WHEN OLD.state IS NOT NEW.state BEGIN
        {_DELTA} VALUES ('outbox', OLD.state, -1, 0), ('outbox', NEW.state, 1, 0); END""",
)
_SQLITE_DROP = (
    "tr_inbox_metrics_insert",
    "tr_inbox_metrics_delete",
    "tr_inbox_metrics_update",
    "tr_trace_metrics_insert",
    "tr_outbox_metrics_insert",
    "tr_outbox_metrics_delete",
    "tr_outbox_metrics_update",
)


def restore_sqlite_triggers(table: str) -> None:
    """Create this revision's SQLite metric triggers on ``table`` again. SQLite rebuilds a table
    that a later revision alters in a batch (a check constraint, a dropped column), and the
    rebuild drops the table's triggers silently; PostgreSQL alters in place and keeps them."""
    if op.get_bind().dialect.name != "sqlite":
        return
    for statement in _SQLITE_TRIGGERS:
        if f" ON {table} " in statement or f" ON {table}\n" in statement:
            op.execute(statement)


def _pg_function(name: str, body: str) -> str:
    return (
        f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql "
        f"SET search_path FROM CURRENT AS $$ BEGIN {body} RETURN NULL; END $$"
    )


_PG_FUNCTIONS = {
    "cm_fhir_inbox_inserted": f"""{_DELTA}
        SELECT 'inbox', k, count(*), 0 FROM (SELECT {_key("n")} AS k FROM new_rows n) s
        GROUP BY k;
        {_DELTA}
        SELECT 'latency', b, count(*), sum(s) FROM (
            SELECT {_bucket("x.s")} AS b, x.s FROM (
                SELECT {_pg_seconds("n")} AS s FROM new_rows n WHERE n.state IN {_SETTLED}
            ) x
        ) y GROUP BY b;""",
    "cm_fhir_inbox_deleted": f"""{_DELTA}
        SELECT 'inbox', k, -count(*), 0 FROM (SELECT {_key("o")} AS k FROM old_rows o) s
        GROUP BY k;""",
    "cm_fhir_inbox_updated": f"""{_DELTA}
        SELECT 'inbox', k, sum(d), 0 FROM (
            SELECT {_key("o")} AS k, -1 AS d FROM old_rows o JOIN new_rows n USING (id)
            WHERE {_CHANGED}
            UNION ALL
            SELECT {_key("n")}, 1 FROM old_rows o JOIN new_rows n USING (id) WHERE {_CHANGED}
        ) s GROUP BY k HAVING sum(d) <> 0;
        {_DELTA}
        SELECT 'latency', b, count(*), sum(s) FROM (
            SELECT {_bucket("x.s")} AS b, x.s FROM (
                SELECT {_pg_seconds("n")} AS s FROM old_rows o JOIN new_rows n USING (id)
                WHERE o.state = 'received' AND n.state IN {_SETTLED}
            ) x
        ) y GROUP BY b;""",
    "cm_fhir_trace_inserted": f"""{_DELTA}
        SELECT 'flags', flags, count(*), 0 FROM new_rows WHERE flags IS NOT NULL GROUP BY flags;""",
    "cm_fhir_outbox_inserted": f"""{_DELTA}
        SELECT 'outbox', state, count(*), 0 FROM new_rows GROUP BY state;""",
    "cm_fhir_outbox_deleted": f"""{_DELTA}
        SELECT 'outbox', state, -count(*), 0 FROM old_rows GROUP BY state;""",
    "cm_fhir_outbox_updated": f"""{_DELTA}
        SELECT 'outbox', k, sum(d), 0 FROM (
            SELECT o.state AS k, -1 AS d FROM old_rows o JOIN new_rows n USING (id)
            WHERE o.state <> n.state
            UNION ALL
            SELECT n.state, 1 FROM old_rows o JOIN new_rows n USING (id) WHERE o.state <> n.state
        ) s GROUP BY k HAVING sum(d) <> 0;""",
    "cm_fhir_inbox_truncated": """DELETE FROM metric_delta WHERE metric IN ('inbox', 'latency');
        DELETE FROM metric_total WHERE metric IN ('inbox', 'latency');""",
    "cm_fhir_trace_truncated": """DELETE FROM metric_delta WHERE metric = 'flags';
        DELETE FROM metric_total WHERE metric = 'flags';""",
    "cm_fhir_outbox_truncated": """DELETE FROM metric_delta WHERE metric = 'outbox';
        DELETE FROM metric_total WHERE metric = 'outbox';""",
}
# trigger name, table, event, transition tables, function
_PG_TRIGGERS = (
    (
        "tr_inbox_metrics_insert",
        "inbox_message",
        "INSERT",
        "NEW TABLE AS new_rows",
        "cm_fhir_inbox_inserted",
    ),
    (
        "tr_inbox_metrics_delete",
        "inbox_message",
        "DELETE",
        "OLD TABLE AS old_rows",
        "cm_fhir_inbox_deleted",
    ),
    (
        "tr_inbox_metrics_update",
        "inbox_message",
        "UPDATE",
        "OLD TABLE AS old_rows NEW TABLE AS new_rows",
        "cm_fhir_inbox_updated",
    ),
    ("tr_inbox_metrics_truncate", "inbox_message", "TRUNCATE", "", "cm_fhir_inbox_truncated"),
    (
        "tr_trace_metrics_insert",
        "trace",
        "INSERT",
        "NEW TABLE AS new_rows",
        "cm_fhir_trace_inserted",
    ),
    ("tr_trace_metrics_truncate", "trace", "TRUNCATE", "", "cm_fhir_trace_truncated"),
    (
        "tr_outbox_metrics_insert",
        "outbox",
        "INSERT",
        "NEW TABLE AS new_rows",
        "cm_fhir_outbox_inserted",
    ),
    (
        "tr_outbox_metrics_delete",
        "outbox",
        "DELETE",
        "OLD TABLE AS old_rows",
        "cm_fhir_outbox_deleted",
    ),
    (
        "tr_outbox_metrics_update",
        "outbox",
        "UPDATE",
        "OLD TABLE AS old_rows NEW TABLE AS new_rows",
        "cm_fhir_outbox_updated",
    ),
    ("tr_outbox_metrics_truncate", "outbox", "TRUNCATE", "", "cm_fhir_outbox_truncated"),
)


def _seed(seconds: str) -> tuple[str, ...]:
    return (
        f"""INSERT INTO metric_total (metric, labels, value, total)
        SELECT 'inbox', k, count(*), 0 FROM (SELECT {_key("i")} AS k FROM inbox_message i) s
        GROUP BY k""",
        f"""INSERT INTO metric_total (metric, labels, value, total)
        SELECT 'latency', b, count(*), sum(s) FROM (
            SELECT {_bucket("x.s")} AS b, x.s FROM (
                SELECT {seconds} AS s FROM inbox_message i WHERE i.state IN {_SETTLED}
            ) x
        ) y GROUP BY b""",
        """INSERT INTO metric_total (metric, labels, value, total)
        SELECT 'flags', flags, count(*), 0 FROM trace WHERE flags IS NOT NULL GROUP BY flags""",
        """INSERT INTO metric_total (metric, labels, value, total)
        SELECT 'outbox', state, count(*), 0 FROM outbox GROUP BY state""",
    )


def upgrade() -> None:
    with op.batch_alter_table("inbox_message") as batch:
        batch.add_column(sa.Column("raw_purged_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_inbox_message_raw_purged_at", "inbox_message", ["raw_purged_at", "id"])
    op.create_index("ix_trace_created_at", "trace", ["created_at"])
    op.create_table(
        "metric_delta",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("metric", sa.String(16), nullable=False),
        sa.Column("labels", sa.String(400), nullable=False),
        sa.Column("delta", sa.BigInteger, nullable=False),
        sa.Column("total", sa.Float, nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("id", name="pk_metric_delta"),
    )
    op.create_table(
        "metric_total",
        sa.Column("metric", sa.String(16), nullable=False),
        sa.Column("labels", sa.String(400), nullable=False),
        sa.Column("value", sa.BigInteger, nullable=False),
        sa.Column("total", sa.Float, nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("metric", "labels", name="pk_metric_total"),
    )
    if op.get_bind().dialect.name == "postgresql":
        for statement in _seed(_pg_seconds("i")):
            op.execute(statement)
        for name, body in _PG_FUNCTIONS.items():
            op.execute(_pg_function(name, body))
        for trigger, table, event, referencing, function in _PG_TRIGGERS:
            refs = f"REFERENCING {referencing} " if referencing else ""
            op.execute(
                f"CREATE TRIGGER {trigger} AFTER {event} ON {table} {refs}"
                f"FOR EACH STATEMENT EXECUTE FUNCTION {function}()"
            )
    else:
        for statement in _seed(_sqlite_seconds("i")):
            op.execute(statement)
        for statement in _SQLITE_TRIGGERS:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for trigger, table, *_ in _PG_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {trigger} ON {table}")
        for name in _PG_FUNCTIONS:
            op.execute(f"DROP FUNCTION IF EXISTS {name}()")
    else:
        for trigger in _SQLITE_DROP:
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    op.drop_table("metric_total")
    op.drop_table("metric_delta")
    op.drop_index("ix_trace_created_at", table_name="trace")
    op.drop_index("ix_inbox_message_raw_purged_at", table_name="inbox_message")
    with op.batch_alter_table("inbox_message") as batch:
        batch.drop_column("raw_purged_at")
