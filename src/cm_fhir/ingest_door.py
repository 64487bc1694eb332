"""What the MLLP door accepts and counts: sender and content rules, key room, ACK control ids.

:class:`IntakeRules` holds what :class:`~cm_fhir.ingest.FrameIntake` admits besides readable ADT
(the MSH-3/MSH-4 allowlist, how much of an unreadable message is kept, the key lengths the store
can hold); :func:`check_key_room` refuses, at startup, patient identifier systems that leave no room
in the patient key. :class:`IntakeStats` are the door's counters (never message content), exported
as metrics under the names and help texts of :data:`LISTENER_COUNTERS`. :func:`new_control_id`
makes the MSH-10 of each ACK.
"""

from __future__ import annotations

import itertools
import secrets
from dataclasses import dataclass

from cm_fhir.errors import ConfigError
from cm_fhir.hl7v2.admissible import KeyLimits, key_room_error
from cm_fhir.mapping.rules import DISCHARGE_RULES_FILE, IdentityRules
from cm_fhir.store.case_tables import patient_states
from cm_fhir.store.tables import inbox_messages

__all__ = [
    "LISTENER_COUNTERS",
    "IntakeRules",
    "IntakeStats",
    "check_key_room",
    "new_control_id",
]

_CONTROL_ID_PREFIX = secrets.token_hex(4)
_control_ids = itertools.count(1)


def new_control_id() -> str:
    """A fresh MSH-10 for an ACK: 8 random hex digits per process + a counter (20 characters)."""
    return f"{_CONTROL_ID_PREFIX}{next(_control_ids):012d}"


@dataclass(slots=True)
class IntakeStats:
    """Counters for health checks, metrics and tests (no message content)."""

    connections: int = 0
    refused_connections: int = 0  # every refusal at accept, whatever the reason below
    refused_not_allowed: int = 0  # address outside the allowlist
    refused_peer_limit: int = 0  # per-address or per-TLS-identity limit reached
    refused_cooling_down: int = 0  # peer cooling down after unreadable frames
    cooldowns: int = 0  # cool-downs started
    frames: int = 0
    oversize_frames: int = 0
    unreadable_messages: int = 0  # MSH unreadable: answered AE, stored capped
    refused_senders: int = 0  # MSH-3/MSH-4 outside the allowlist: answered AR, body not stored
    refused_content: int = 0  # NUL, over-long key, bad encoding: answered AR with ERR 102
    refused_unreadable_adt: int = 0  # an ADT event the worker could not read: answered AE
    incomplete_frames: int = 0  # a frame begun but not ended when the connection closed
    frame_timeouts: int = 0  # a frame not finished within the frame deadline
    idle_closes: int = 0  # connections closed for sending no whole frame in time
    unacknowledged: int = 0  # frames stored after the peer had gone (no ACK could be sent)
    discarded_bytes: int = 0
    store_failures: int = 0


LISTENER_COUNTERS = {
    "connections": "MLLP connections accepted",
    "refused_connections": "MLLP connections refused at accept (any reason)",
    "refused_not_allowed": "MLLP connections refused: address outside the allowlist",
    "refused_peer_limit": "MLLP connections refused: per-address or per-identity limit",
    "refused_cooling_down": "MLLP connections refused: peer cooling down",
    "cooldowns": "MLLP peer cool-downs started after unreadable frames",
    "frames": "MLLP frames received",
    "oversize_frames": "MLLP frames over the size limit",
    "unreadable_messages": "MLLP messages with an unreadable MSH (answered AE, stored capped)",
    "refused_senders": "MLLP messages refused: MSH-3/MSH-4 outside the allowlist",
    "refused_content": "MLLP messages refused: content the store cannot hold (ERR 102)",
    "refused_unreadable_adt": "MLLP messages refused: an ADT event the worker cannot read (AE)",
    "incomplete_frames": "MLLP frames cut off by a closed or timed-out connection",
    "frame_timeouts": "MLLP connections closed: a frame not finished in time",
    "idle_closes": "MLLP connections closed: no whole frame within the idle timeout",
    "unacknowledged": "MLLP frames stored after their sender had gone (no ACK sent)",
    "store_failures": "MLLP frames answered AR/CE: the inbox could not commit",
}
"""The :class:`IntakeStats` counters exported as ``cm_fhir_listener_<name>`` metrics."""

_LENGTH = {c.name: getattr(c.type, "length", None) for c in inbox_messages.columns}
_COLUMN_LIMITS = KeyLimits(
    control_id=_LENGTH["control_id"] or 199,
    sender=_LENGTH["sending_application"] or 255,
    patient_key=getattr(patient_states.c.patient_key.type, "length", None) or 255,
)


def check_key_room(identity: IdentityRules) -> None:
    """Refuse, at startup, patient identifier systems too long for the patient key.

    Raises:
        ConfigError: one line naming the setting (``identity.default_patient_system`` or an
            entry of ``identity.patient_systems`` in ``discharge-rules.yaml``).
    """
    if error := key_room_error(identity, _COLUMN_LIMITS):
        raise ConfigError(f"{DISCHARGE_RULES_FILE}: {error}")


@dataclass(frozen=True, slots=True)
class IntakeRules:
    """What the door accepts besides readable ADT: senders, stored bytes of garbage, key sizes."""

    allowed_senders: tuple[str, ...] = ()  # "APP|FACILITY", "APP", "*|FACILITY"; empty: all
    unreadable_keep_bytes: int = 4096
    key_limits: KeyLimits = _COLUMN_LIMITS
