"""The EHR's Patient, found by our patient identifier and cached in ``sync_state``. I/O.

Our resources name the patient by identifier (a logical reference). An endpoint set to
``patient_references = "resolve"`` searches ``Patient?identifier=system|value`` once per patient
(twenty patients per search, ``identifier=a,b,...``) and caches the answer (resource type
``Patient`` in ``sync_state``): one match gives a literal reference ``Patient/<id>`` with the
identifier kept; none, or more than one, keeps the logical reference. A miss is looked up again
after :data:`MISS_TTL`, so a patient the EHR registers later is linked then. The resolver does no
database I/O itself: the delivery reads the stored answers of a batch at once and stores the new
ones when it settles the batch.
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

    async def resolve_many(
        self, identifiers: list[Json], held: dict[SyncKey, SyncRecord]
    ) -> tuple[dict[str, str | None], list[SyncRecord]]:
        """The EHR's ids of these patients by ``system|value`` (None: not found, or more than
        one), and the records to store for those looked up now: one search per 20 patients
        (``identifier=a,b,...``, an OR), none for answers remembered or stored."""
        now = datetime.now(UTC)
        out: dict[str, str | None] = {}
        wanted: list[SyncKey] = []
        for identifier in identifiers:
            key = self.key(identifier)
            if key.identifier in out or key in wanted:
                continue
            known, server_id = self.cached(identifier, now)
            stored = held.get(key)
            if not known and stored is not None and stored.updated_at is not None:
                at = _aware(stored.updated_at)
                if stored.server_id is not None or now - at < MISS_TTL:
                    known, server_id = True, stored.server_id
                    self._known[key.identifier] = (server_id, at)
            if known:
                out[key.identifier] = server_id
            else:
                wanted.append(key)
        records = []
        for start in range(0, len(wanted), 20):
            chunk = wanted[start : start + 20]
            matches: dict[str, list[str]] = {k.identifier: [] for k in chunk}
            query = {"identifier": ",".join(k.identifier for k in chunk), "_count": "100"}
            async for patient in self.client.search("Patient", query):
                for ident in patient.get("identifier") or []:
                    text = f"{ident.get('system', '')}|{ident.get('value', '')}"
                    if text in matches and patient.get("id"):
                        matches[text].append(str(patient["id"]))
            for key in chunk:
                ids = sorted(set(matches[key.identifier]))
                server_id = ids[0] if len(ids) == 1 else None
                out[key.identifier] = server_id
                self._known[key.identifier] = (server_id, now)
                records.append(SyncRecord(key, server_id))
        return out, records
