"""Persistence: SQLAlchemy 2 (async) tables, the inbox repository and Alembic migrations. I/O.

SQLite (WAL, ``synchronous=FULL``) is the embedded default; PostgreSQL is the production store.
"""
