"""Persistence: SQLAlchemy 2 (async) tables, the inbox repository and Alembic migrations. I/O.

SQLite (WAL, ``synchronous=FULL``) is the embedded default; PostgreSQL is the production store.
"""

# Register every table on the shared metadata, whichever store module is imported first.
from cm_fhir.store import case_tables as _case_tables  # noqa: F401
from cm_fhir.store import counters as _counters  # noqa: F401
from cm_fhir.store import ehr_status as _ehr_status  # noqa: F401
from cm_fhir.store import payer_reviews as _payer_reviews  # noqa: F401
from cm_fhir.store import payer_subscribed as _payer_subscribed  # noqa: F401
from cm_fhir.store import subscriptions as _subscriptions  # noqa: F401
