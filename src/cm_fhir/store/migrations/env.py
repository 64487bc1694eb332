"""Alembic environment for cm-fhir. I/O: runs migrations on the connection it is handed.

Migrations run only through :func:`cm_fhir.store.engine.upgrade_database`, which passes an open
connection in ``config.attributes["connection"]``; there is no alembic.ini and no autogenerate
at runtime. Revisions are written by hand in ``versions/``.
"""

from __future__ import annotations

from alembic import context

from cm_fhir.errors import ConfigError

connection = context.config.attributes.get("connection")
if connection is None:
    raise ConfigError("migrations run through `cm-fhir db upgrade`, not the alembic command")

context.configure(
    connection=connection,
    render_as_batch=connection.dialect.name == "sqlite",
    transaction_per_migration=True,
)
with context.begin_transaction():
    context.run_migrations()
