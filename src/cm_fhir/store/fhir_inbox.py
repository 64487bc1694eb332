"""FHIR messages in the inbox: the same rows, dedup and trace as HL7v2 messages. I/O.

A FHIR message Bundle (a notification at ``$process-message``, a PAS request at
``Claim/$submit``) is stored as an inbox row of ``format`` ``fhir`` before it is answered:

- ``control_id`` is its Bundle identifier (else the MessageHeader id, for a PAS request the
  Claim identifier as ``system|value``), ``sending_application`` the MessageHeader source
  endpoint (for a PAS request, the Claim's provider), ``sending_facility`` the authenticated
  client. So the same message resent by the same client is recognised (the dedup index of the
  inbox), and one client can never collide with another's identifiers.
- ``content_sha256`` is the SHA-256 of the Bundle's canonical JSON (keys sorted, no spaces), so
  a resend that only re-indents or reorders keys is the same message; other content under a
  known identifier is stored and flagged ``control_id_reused``.
- ``message_type`` is ``NOTIFICATION`` or ``CLAIM``, ``trigger_event`` the event (``ADMIT``,
  ``TRANSFER``, ``DISCHARGE``, ``SUBMIT``), upper case like HL7v2 codes, so the messages API's
  filters find them alike; ``ack_bytes`` the answer given, which a resend gets
  again. ``raw`` is the body as received.

A notification is stored ``received``: the worker applies it. A PAS request is decided in the
request itself, so its row is stored ``processed`` in the same transaction as the review.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, update

from cm_fhir.store.inbox import NewMessage, StoredMessage, store_messages_sync
from cm_fhir.store.queue import message_key
from cm_fhir.store.tables import InboxFormat, InboxState, inbox_messages

__all__ = [
    "CLAIM_RESPONSE",
    "canonical_sha256",
    "fhir_message",
    "record_answer",
    "store_fhir_message",
    "stored_message_key",
]

#: The message type of a payer's ClaimResponse to one of the hospital's reviews, stored by the
#: sync worker (:mod:`cm_fhir.sync.payer`) for the worker to apply as a ``ReviewDecided`` event.
CLAIM_RESPONSE = "CLAIMRESPONSE"


def canonical_sha256(body: Any) -> str:
    """SHA-256 of the JSON document in canonical form (sorted keys, compact separators)."""
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def fhir_message(
    raw: bytes,
    body: Any,
    *,
    message_id: str,
    source: str | None,
    client: str | None,
    message_type: str,
    event: str,
    state: InboxState,
    answer: bytes | None,
    patient_key: str | None,
    received_at: datetime,
    peer: str | None = None,
    reason: str | None = None,
) -> NewMessage:
    """The inbox row of one FHIR message (see the module docstring)."""
    return NewMessage(
        raw=raw,
        content_sha256=canonical_sha256(body),
        state=state.value,
        reason=reason,
        ack_code="AA",
        ack_bytes=answer,
        sending_application=source,
        sending_facility=client,
        control_id=message_id,
        message_type=message_type.upper(),
        trigger_event=event.upper(),
        version_id="4.0.1",
        patient_key=patient_key,
        peer=peer,
        received_at=received_at,
        format=InboxFormat.FHIR.value,
    )


def store_fhir_message(connection: Connection, message: NewMessage) -> StoredMessage:
    """Store ``message`` in the caller's transaction; a resend gets its original row back."""
    return store_messages_sync(connection, [message])[0]


def record_answer(connection: Connection, row_id: int, answer: bytes) -> None:
    """Keep the first answer given for a row stored before it was known (a PAS request); a
    resend's answer does not replace it."""
    t = inbox_messages
    connection.execute(
        update(t).where(t.c.id == row_id, t.c.ack_bytes.is_(None)).values(ack_bytes=answer)
    )


def stored_message_key(message: NewMessage) -> str:
    """The row's :func:`~cm_fhir.store.queue.message_key` (what its trace rows name)."""
    return message_key(
        message.sending_application,
        message.sending_facility,
        message.control_id,
        message.received_at,
    )
