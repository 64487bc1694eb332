"""The EHR's Patient, found by our patient identifier and cached in ``sync_state``. I/O.

Our resources name the patient by identifier (a logical reference). An endpoint set to
``patient_references = "resolve"`` searches ``Patient?identifier=system|value`` once per patient
and caches the answer (resource type ``Patient`` in ``sync_state``): one match gives a literal
reference ``Patient/<id>`` with the identifier kept; none, or more than one, keeps the logical
reference. A miss is looked up again after :data:`MISS_TTL`, so a patient the EHR registers
later is linked then.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from cm_fhir.fhir_client import FhirClient
from cm_fhir.store.sync_state import SyncKey, SyncRecord, read_sync, record_sync

__all__ = ["MISS_TTL", "PatientResolver"]

Json = dict[str, Any]
MISS_TTL = timedelta(minutes=10)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class PatientResolver:
    """Resolves patients at one endpoint, with a cache in this process and in the database."""

    def __init__(self, engine: AsyncEngine, endpoint: str, client: FhirClient) -> None:
        self.engine = engine
        self.endpoint = endpoint
        self.client = client
        self._known: dict[str, tuple[str | None, datetime]] = {}

    async def resolve(self, identifier: Json) -> str | None:
        """The EHR's id of the patient with ``identifier`` ({system, value}), or None."""
        key_text = f"{identifier.get('system', '')}|{identifier.get('value', '')}"
        now = datetime.now(UTC)
        cached = self._known.get(key_text)
        if cached is not None and (cached[0] is not None or now - cached[1] < MISS_TTL):
            return cached[0]
        key = SyncKey(self.endpoint, "Patient", key_text)
        async with self.engine.connect() as connection:
            stored = (await connection.run_sync(read_sync, [key])).get(key)
        if stored is not None and stored.updated_at is not None:
            at = _aware(stored.updated_at)
            if stored.server_id is not None or now - at < MISS_TTL:
                self._known[key_text] = (stored.server_id, at)
                return stored.server_id
        found = [r async for r in self.client.search("Patient", {"identifier": key_text})]
        server_id = str(found[0]["id"]) if len(found) == 1 and found[0].get("id") else None
        async with self.engine.begin() as connection:
            await connection.run_sync(record_sync, [SyncRecord(key, server_id)], now)
        self._known[key_text] = (server_id, now)
        return server_id
