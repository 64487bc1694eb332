"""The EHR's Patient, found by our patient identifier and cached in ``sync_state``. I/O.

Our resources name the patient by identifier (a logical reference). An endpoint set to
``patient_references = "resolve"`` searches ``Patient?identifier=system|value`` once per patient
and caches the answer (resource type ``Patient`` in ``sync_state``): one match gives a literal
reference ``Patient/<id>`` with the identifier kept; none, or more than one, keeps the logical
reference. A miss is looked up again after :data:`MISS_TTL`, so a patient the EHR registers
later is linked then. The resolver does no database I/O itself: the delivery reads the stored
answers for a whole batch and stores the new ones when it settles the batch.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from cm_fhir.fhir_client import FhirClient
from cm_fhir.store.sync_state import SyncKey, SyncRecord

__all__ = ["MISS_TTL", "PatientResolver"]

Json = dict[str, Any]
MISS_TTL = timedelta(minutes=10)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class PatientResolver:
    """Resolves patients at one endpoint, remembering answers in this process; the caller reads
    the stored answers (:meth:`keys`) and stores the new ones in its own transaction."""

    def __init__(self, endpoint: str, client: FhirClient) -> None:
        self.endpoint = endpoint
        self.client = client
        self._known: dict[str, tuple[str | None, datetime]] = {}

    def key(self, identifier: Json) -> SyncKey:
        text = f"{identifier.get('system', '')}|{identifier.get('value', '')}"
        return SyncKey(self.endpoint, "Patient", text)

    def cached(self, identifier: Json, now: datetime) -> tuple[bool, str | None]:
        """(known, id) from this process's memory."""
        found = self._known.get(self.key(identifier).identifier)
        if found is not None and (found[0] is not None or now - found[1] < MISS_TTL):
            return True, found[0]
        return False, None

    async def resolve(
        self, identifier: Json, stored: SyncRecord | None
    ) -> tuple[str | None, SyncRecord | None]:
        """The EHR's id of the patient (or None) and, when it was looked up now, the record to
        store."""
        now = datetime.now(UTC)
        known, server_id = self.cached(identifier, now)
        if known:
            return server_id, None
        key = self.key(identifier)
        if stored is not None and stored.updated_at is not None:
            at = _aware(stored.updated_at)
            if stored.server_id is not None or now - at < MISS_TTL:
                self._known[key.identifier] = (stored.server_id, at)
                return stored.server_id, None
        found = [r async for r in self.client.search("Patient", {"identifier": key.identifier})]
        server_id = str(found[0]["id"]) if len(found) == 1 and found[0].get("id") else None
        self._known[key.identifier] = (server_id, now)
        return server_id, SyncRecord(key, server_id)
