"""One case's Bundle to one endpoint: adapt it, write it, and after a 412 re-apply. I/O.

:class:`CaseSender` is the per-case half of the delivery (:mod:`cm_fhir.sync.deliver` claims,
groups and settles): :meth:`~CaseSender.prepare` adapts an outbox Bundle to the endpoint
(:func:`~cm_fhir.sync.prepare.prepare_bundle`: resource types, the resolved Patient, ``ifMatch``
for resources the endpoint holds), :meth:`~CaseSender.send` writes it and, when the server
answers 412 (someone changed a resource in the EHR since our last write), writes the rest of the
Bundle, then re-reads each resource sent with ``ifMatch`` and applies only the elements we own
onto the server's version (:func:`~cm_fhir.fhir_client.update_owned`); :meth:`~CaseSender.records`
turns the server's answers into ``sync_state`` records (server id, version, hash of what was
sent).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import orjson

from cm_fhir.errors import RemotePreconditionFailed
from cm_fhir.fhir.split import rewrite_references
from cm_fhir.fhir_client import EntryResult, FhirClient, update_owned
from cm_fhir.fhir_client.responses import version_of_etag
from cm_fhir.store.outbox import CaseWrite
from cm_fhir.store.sync_state import SyncKey, SyncRecord
from cm_fhir.sync.config import EndpointSettings
from cm_fhir.sync.prepare import (
    KnownResource,
    PreparedBundle,
    owned_elements,
    prepare_bundle,
    server_id_of,
)

__all__ = ["CaseSender", "patient_identifier"]

Json = dict[str, Any]


def patient_identifier(write: CaseWrite, bundle: Json | None = None) -> Json | None:
    """The patient's identifier the case's resources name (on its first entry)."""
    data = bundle if bundle is not None else orjson.loads(write.bundle)
    entries: list[Json] = data.get("entry") or []
    if not entries:
        return None
    found = (entries[0]["resource"].get("patient") or {}).get("identifier")
    return found if isinstance(found, dict) else None


class CaseSender:
    """Prepares, writes and records one case's Bundle at one endpoint."""

    def __init__(
        self,
        endpoint: EndpointSettings,
        client: FhirClient,
        patient_key: Callable[[Json], SyncKey],
        on_conflict: Callable[[], None],
    ) -> None:
        self.endpoint = endpoint
        self.client = client
        self.patient_key = patient_key
        self.on_conflict = on_conflict  # counts a 412 re-applied

    def prepare(
        self,
        write: CaseWrite,
        held: dict[SyncKey, SyncRecord],
        patient_ids: dict[str, str | None],
    ) -> PreparedBundle:
        bundle: Json = orjson.loads(write.bundle)
        identifier = patient_identifier(write, bundle)
        patient_id = None
        if identifier is not None:
            patient_id = patient_ids.get(self.patient_key(identifier).identifier)
        return prepare_bundle(
            bundle,
            resource_types=self.endpoint.resource_types,
            patient_identifier=identifier,
            patient_id=patient_id,
            known=self._known(write.identifiers, held),
        )

    async def send(self, prepared: PreparedBundle) -> list[SyncRecord]:
        """One case's Bundle; on a 412, re-read and re-apply the elements we own."""
        try:
            results = await self.client.write_bundle(prepared.bundle)
        except RemotePreconditionFailed:
            if not prepared.if_matched:
                raise
            self.on_conflict()
            results = await self._reapply(prepared)
        return self.records(prepared, results)

    def _known(
        self, identifiers: Sequence[str], held: dict[SyncKey, SyncRecord]
    ) -> dict[str, KnownResource]:
        known = {}
        for text in identifiers:
            rtype, _, ident = text.partition("|")
            record = held.get(SyncKey(self.endpoint.name, rtype, ident))
            if record is not None and record.server_id is not None:
                known[text] = KnownResource(
                    record.server_id, record.version_id, record.last_sent_sha256
                )
        return known

    async def _reapply(self, prepared: PreparedBundle) -> list[EntryResult]:
        """After a 412: the entries without ``ifMatch`` as a Bundle, then each matched resource
        re-read and updated with only the elements we own."""
        entries: list[Json] = prepared.bundle["entry"]
        ids = {
            url: f"{e['resource']['resourceType']}/{held.server_id}"
            for e in entries
            if (url := str(e["fullUrl"])) in prepared.if_matched
            for held in [prepared.if_matched[url]]
        }
        rest = [e for e in entries if str(e["fullUrl"]) not in prepared.if_matched]
        for entry in rest:
            rewrite_references(entry["resource"], ids)
        results: list[EntryResult] = []
        if rest:
            part = {"resourceType": "Bundle", "type": "transaction", "entry": rest}
            results = await self.client.write_bundle(part)
        for result in results:
            server_id, _ = server_id_of(result.location)
            if result.full_url and server_id:
                rtype = next(
                    e["resource"]["resourceType"] for e in rest if e["fullUrl"] == result.full_url
                )
                ids[result.full_url] = f"{rtype}/{server_id}"
        for entry in entries:
            url = str(entry["fullUrl"])
            held = prepared.if_matched.get(url)
            if held is None:
                continue
            ours = entry["resource"]
            rewrite_references(ours, ids)
            response = await update_owned(
                self.client, ours, owned_elements(ours), if_match=held.version_id
            )
            location = response.location or (
                f"{ours['resourceType']}/{held.server_id}/_history/{response.version_id}"
                if response.version_id
                else None
            )
            results.append(EntryResult(url, response.status, location, response.etag, None))
        return results

    def records(self, prepared: PreparedBundle, results: list[EntryResult]) -> list[SyncRecord]:
        """What the endpoint now holds of the case's resources, from the server's answers."""
        records = []
        for result in results:
            if result.full_url is None or result.full_url not in prepared.identifiers:
                continue
            server_id, version = server_id_of(result.location)
            version = version or version_of_etag(result.etag)
            rtype, _, ident = prepared.identifiers[result.full_url].partition("|")
            digest = prepared.digests.get(result.full_url)
            key = SyncKey(self.endpoint.name, rtype, ident)
            records.append(SyncRecord(key, server_id, version, digest))
        return records
