"""Tables the worker writes: patient states, cases, outbox, trace, FHIR resources. No I/O.

Declared on the inbox's :data:`~cm_fhir.store.tables.metadata` so one comparison test covers every
table against the hand-written migrations (``0002_cases_outbox``, ``0004_worker_fidelity``,
``0007_outbox_delivery``, ``0010_payer_exchange``).
``patient_states`` holds the workflow's :class:`~cm_fhir.workflow.PatientState` document per
patient key (a merged-away key is a row with ``alias_of`` set and no document) and when the worker
next checks its cases for closing (``close_check_at``); ``cases`` is the queryable projection of
each case; ``outbox`` the transaction Bundles still to send; ``trace`` the workflow's
:class:`~cm_fhir.workflow.TraceEntry` rows linked to their inbox row by id and by ``message_key``
(sender, control id and receipt time, which outlive a pruned inbox); ``fhir_resources`` the
current resources of every case, as the read-only FHIR facade serves them; ``sync_state`` what
each FHIR endpoint holds of ours (server id, version, the hash last sent) by business identifier
(``0007_outbox_delivery``). Rows point at inbox
rows by id without a foreign key, so the inbox can be pruned or truncated on its own.
"""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)

from cm_fhir.store.tables import metadata

__all__ = [
    "OutboxState",
    "cases",
    "fhir_resources",
    "outbox",
    "patient_states",
    "sync_state",
    "trace",
]

_ID = BigInteger().with_variant(Integer, "sqlite")


class OutboxState(StrEnum):
    """Life cycle of an outbox row: pending until the sync worker has written it to its endpoint.

    ``superseded`` rows were never sent because a later Bundle of the same case (a whole snapshot)
    went in their place; ``failed`` rows were refused by the endpoint (non-retryable).
    """

    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    SUPERSEDED = "superseded"


patient_states = Table(
    "patient_states",
    metadata,
    Column("patient_key", String(255), primary_key=True),
    Column("alias_of", String(255), nullable=True),
    Column("document", Text, nullable=True),
    Column("version", Integer, nullable=False, server_default="0"),
    Column("updated_at", DateTime(timezone=True), nullable=True),
    Column("close_check_at", DateTime(timezone=True), nullable=True),
)
Index("ix_patient_states_close_check_at", patient_states.c.close_check_at)

cases = Table(
    "cases",
    metadata,
    Column("case_id", String(64), primary_key=True),
    Column("patient_key", String(255), nullable=False),
    Column("status", String(32), nullable=False),
    Column("programme", String(64), nullable=False),
    Column("team", String(64), nullable=True),
    Column("owner", String(255), nullable=True),
    Column("opened_at", DateTime(timezone=True), nullable=False),
    Column("closed_at", DateTime(timezone=True), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("version", Integer, nullable=False, server_default="1"),
    Column("last_bundle_sha256", String(64), nullable=True),
    Column("case_json", Text, nullable=False),
)
Index("ix_cases_patient_key", cases.c.patient_key)
Index("ix_cases_status", cases.c.status, cases.c.team)
Index("ix_cases_programme", cases.c.programme, cases.c.status)

outbox = Table(
    "outbox",
    metadata,
    Column("id", _ID, primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("reason", String(500), nullable=True),
    Column("case_id", String(64), nullable=False),
    Column("patient_key", String(255), nullable=False),
    Column("inbox_message_id", BigInteger, nullable=True),
    Column("case_identifier", String(500), nullable=False),
    Column("identifiers", Text, nullable=False),
    Column("bundle_sha256", String(64), nullable=False),
    Column("bundle", LargeBinary, nullable=False),
    Column("endpoint", String(64), nullable=False, server_default="default"),
    Column("next_attempt_at", DateTime(timezone=True), nullable=True),
    Column("lease_until", DateTime(timezone=True), nullable=True),
    Column("leased_by", String(64), nullable=True),
    Column("sent_at", DateTime(timezone=True), nullable=True),
    Column("last_error", String(500), nullable=True),
    Column("last_outcome", Text, nullable=True),
    Column("operation", String(64), nullable=True),
    CheckConstraint("state IN ('pending', 'sent', 'failed', 'superseded')", name="state"),
)
Index("ix_outbox_state", outbox.c.state, outbox.c.id)
Index("ix_outbox_case_id", outbox.c.case_id, outbox.c.id)
Index("ix_outbox_endpoint_patient", outbox.c.endpoint, outbox.c.patient_key, outbox.c.state)
Index("ix_outbox_endpoint_state", outbox.c.endpoint, outbox.c.state, outbox.c.id)

sync_state = Table(
    "sync_state",
    metadata,
    Column("endpoint", String(64), nullable=False),
    Column("resource_type", String(64), nullable=False),
    Column("identifier", String(500), nullable=False),
    Column("server_id", String(128), nullable=True),
    Column("version_id", String(64), nullable=True),
    Column("last_sent_sha256", String(64), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("endpoint", "resource_type", "identifier"),
)

trace = Table(
    "trace",
    metadata,
    Column("id", _ID, primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("inbox_message_id", BigInteger, nullable=True),
    Column("patient_key", String(255), nullable=True),
    Column("message_control_id", String(199), nullable=True),
    Column("event", String(16), nullable=True),
    Column("rule", String(200), nullable=False),
    Column("action", String(64), nullable=False),
    Column("case_id", String(64), nullable=True),
    Column("target", String(200), nullable=True),
    Column("flags", String(300), nullable=True),
    Column("message_key", String(800), nullable=True),
)
Index("ix_trace_inbox_message_id", trace.c.inbox_message_id)
Index("ix_trace_patient_key", trace.c.patient_key, trace.c.id)
Index("ix_trace_case_id", trace.c.case_id, trace.c.id)
Index("ix_trace_flags", trace.c.flags)
Index("ix_trace_created_at", trace.c.created_at)

fhir_resources = Table(
    "fhir_resources",
    metadata,
    Column("resource_type", String(64), nullable=False),
    Column("id", String(64), nullable=False),
    Column("case_id", String(64), nullable=False),
    Column("identifier", String(500), nullable=False),
    Column("patient_identifier", String(500), nullable=True),
    Column("status", String(32), nullable=True),
    Column("version_id", Integer, nullable=False, server_default="1"),
    Column("last_updated", DateTime(timezone=True), nullable=False),
    Column("content_sha256", String(64), nullable=False),
    Column("resource", Text, nullable=False),
    PrimaryKeyConstraint("resource_type", "id"),
)
Index("ix_fhir_resources_case_id", fhir_resources.c.case_id)
Index("ix_fhir_resources_identifier", fhir_resources.c.resource_type, fhir_resources.c.identifier)
Index("ix_fhir_resources_patient_identifier", fhir_resources.c.patient_identifier)
