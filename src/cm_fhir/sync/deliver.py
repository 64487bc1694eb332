"""Delivery of the outbox to one FHIR endpoint: claim, write, settle. I/O.

:meth:`EndpointDelivery.run_once` leases the pending rows of up to ``batch_patients`` patients
(:func:`~cm_fhir.store.outbox.claim_patients`) and writes each patient's cases in order, patients
concurrently. One case write is the case's newest Bundle, adapted to the endpoint
(:func:`~cm_fhir.sync.prepare.prepare_bundle`: resource types, the resolved Patient, ``ifMatch``
for resources the endpoint already holds) and sent by
:meth:`~cm_fhir.fhir_client.FhirClient.write_bundle`. Then, per patient, one transaction settles
the rows and records what the server holds (``sync_state``: server id, version, hash sent):

- written: ``sent`` (older rows of the case ``superseded``);
- 412 (someone changed a resource in the EHR since our last write): the rest of the Bundle is
  written, then each resource sent with ``ifMatch`` is re-read and only the elements we own are
  applied onto the server's version (:func:`~cm_fhir.fhir_client.update_owned`);
- refused for good (400/404/409/422, an OperationOutcome): ``failed`` with that OperationOutcome,
  and the patient's next case goes on;
- retryable (transport, 5xx, 429, an open circuit, 401/403 while credentials are fixed): the
  patient's remaining rows wait, backing off exponentially (or as long as the server asked), and
  other patients go on.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from cm_fhir.errors import (
    RemoteAuthError,
    RemoteFhirError,
    RemotePreconditionFailed,
    RemoteRateLimited,
    RemoteUnavailable,
)
from cm_fhir.fhir_client import EntryResult, FhirClient, update_owned
from cm_fhir.fhir_client.responses import version_of_etag
from cm_fhir.store.outbox import (
    CaseWrite,
    PatientWork,
    claim_patients,
    settle_failed,
    settle_retry,
    settle_sent,
)
from cm_fhir.store.sync_state import SyncKey, SyncRecord, read_sync, record_sync
from cm_fhir.sync.config import EhrSettings, EndpointSettings
from cm_fhir.sync.patients import PatientResolver
from cm_fhir.sync.prepare import (
    KnownResource,
    PreparedBundle,
    owned_elements,
    prepare_bundle,
    server_id_of,
)

__all__ = ["DeliveryStats", "EndpointDelivery"]

log = logging.getLogger(__name__)
Json = dict[str, Any]


@dataclass(slots=True)
class DeliveryStats:
    """Counts of one endpoint's delivery in this process (for /metrics and the API)."""

    sent: int = 0
    failed: int = 0
    retried: int = 0
    superseded: int = 0
    conflicts: int = 0  # 412s re-applied
    lag_seconds_sum: float = 0.0  # enqueue to written, summed over ``sent``
    last_lag_seconds: float = 0.0


@dataclass(slots=True)
class _Settled:
    sent: list[CaseWrite] = field(default_factory=list)
    failed: list[tuple[CaseWrite, str, bytes | None]] = field(default_factory=list)
    retry: list[CaseWrite] = field(default_factory=list)
    retry_error: tuple[str, bytes | None, float] | None = None  # error, outcome, delay
    sync: list[SyncRecord] = field(default_factory=list)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _error_text(exc: BaseException) -> str:
    """Status and class only: an OperationOutcome may quote what was sent (PHI)."""
    if isinstance(exc, RemoteFhirError):
        status = f"HTTP {exc.status} " if exc.status is not None else ""
        return f"{status}{type(exc).__name__}"
    return type(exc).__name__


def _outcome(exc: BaseException) -> bytes | None:
    outcome = getattr(exc, "outcome", None)
    return orjson.dumps(outcome) if isinstance(outcome, dict) else None


def _literal(value: Any, ids: dict[str, str]) -> None:
    """Rewrite ``urn:uuid`` references named in ``ids`` to ``Type/id``, in place."""
    if isinstance(value, dict):
        ref = value.get("reference")
        if isinstance(ref, str) and ref in ids:
            value["reference"] = ids[ref]
        for item in value.values():
            if isinstance(item, dict | list):
                _literal(item, ids)
    elif isinstance(value, list):
        for item in value:
            _literal(item, ids)


class EndpointDelivery:
    """Delivers the outbox rows of one endpoint; see the module docstring."""

    def __init__(
        self,
        engine: AsyncEngine,
        endpoint: EndpointSettings,
        client: FhirClient,
        config: EhrSettings,
        worker_id: str,
    ) -> None:
        self.engine = engine
        self.endpoint = endpoint
        self.client = client
        self.config = config
        self.worker_id = worker_id
        self.stats = DeliveryStats()
        self.patients = PatientResolver(engine, endpoint.name, client)

    async def run_once(self) -> int:
        """Claim and deliver one batch of patients; the number of case writes settled."""
        now = datetime.now(UTC)
        lease = timedelta(seconds=self.config.lease_seconds)
        async with self.engine.begin() as connection:
            work: list[PatientWork] = await connection.run_sync(
                lambda c: claim_patients(
                    c,
                    self.endpoint.name,
                    self.worker_id,
                    now,
                    lease=lease,
                    limit=self.config.batch_patients,
                )
            )
        if not work:
            return 0
        done = await asyncio.gather(*(self._patient(w) for w in work))
        return sum(done)

    async def _patient(self, work: PatientWork) -> int:
        settled = _Settled()
        for n, write in enumerate(work.writes):
            try:
                settled.sync += await self._write(write)
            except Exception as exc:
                if self._retryable(exc):
                    settled.retry = list(work.writes[n:])
                    settled.retry_error = (_error_text(exc), _outcome(exc), self._delay(exc, write))
                    break
                settled.failed.append((write, _error_text(exc), _outcome(exc)))
                log.warning(
                    "outbox row %d refused by endpoint %s (%s)",
                    write.id,
                    self.endpoint.name,
                    _error_text(exc),
                )
                continue
            settled.sent.append(write)
        try:
            async with self.engine.begin() as connection:
                await connection.run_sync(self._settle, settled)
        except SQLAlchemyError as exc:  # the lease runs out and the rows are sent again
            log.warning("could not settle outbox rows (%s)", type(exc).__name__)
            return 0
        self._count(settled)
        return len(settled.sent) + len(settled.failed) + len(settled.retry)

    def _retryable(self, exc: Exception) -> bool:
        if isinstance(exc, RemoteFhirError):
            return exc.retryable or isinstance(
                exc, RemoteAuthError | RemotePreconditionFailed | RemoteUnavailable
            )
        return isinstance(exc, SQLAlchemyError | OSError)

    def _delay(self, exc: Exception, write: CaseWrite) -> float:
        base = min(self.config.retry_max, self.config.retry_base * 2 ** min(write.attempts, 16))
        delay = base * (0.5 + random.random() / 2)  # jitter: patients do not return in step
        asked = getattr(exc, "retry_after", None)
        if isinstance(exc, RemoteRateLimited | RemoteUnavailable) and asked:
            delay = max(delay, float(asked))
        return float(min(delay, self.config.retry_max))

    def _settle(self, connection: Connection, settled: _Settled) -> None:
        now = datetime.now(UTC)
        for write in settled.sent:
            settle_sent(connection, write, now)
        for write, error, outcome in settled.failed:
            settle_failed(connection, write, error, outcome, now)
        if settled.retry and settled.retry_error is not None:
            error, outcome, delay = settled.retry_error
            next_at = now + timedelta(seconds=delay)
            settle_retry(connection, settled.retry, error, outcome, now, next_at)
        record_sync(connection, settled.sync, now)

    def _count(self, settled: _Settled) -> None:
        now = datetime.now(UTC)
        stats = self.stats
        stats.sent += len(settled.sent)
        stats.failed += len(settled.failed)
        stats.retried += len(settled.retry)
        stats.superseded += sum(
            len(w.older) for w in (*settled.sent, *(f[0] for f in settled.failed))
        )
        for write in settled.sent:
            if write.created_at is not None:
                lag = max(0.0, (now - _aware(write.created_at)).total_seconds())
                stats.lag_seconds_sum += lag
                stats.last_lag_seconds = lag

    # -- one case ---------------------------------------------------------------------------

    async def _write(self, write: CaseWrite) -> list[SyncRecord]:
        bundle: Json = orjson.loads(write.bundle)
        entries: list[Json] = bundle.get("entry") or []
        patient_identifier = None
        if entries:
            patient_identifier = (entries[0]["resource"].get("patient") or {}).get("identifier")
        patient_id = None
        if self.endpoint.patient_references == "resolve" and isinstance(patient_identifier, dict):
            patient_id = await self.patients.resolve(patient_identifier)
        known = await self._known(write.identifiers)
        prepared = prepare_bundle(
            bundle,
            resource_types=self.endpoint.resource_types,
            patient_identifier=patient_identifier,
            patient_id=patient_id,
            known=known,
        )
        try:
            results = await self.client.write_bundle(prepared.bundle)
        except RemotePreconditionFailed:
            if not prepared.if_matched:
                raise
            self.stats.conflicts += 1
            results = await self._reapply(prepared)
        return self._records(prepared, results)

    async def _known(self, identifiers: Sequence[str]) -> dict[str, KnownResource]:
        keys = []
        for text in identifiers:
            rtype, _, ident = text.partition("|")
            keys.append(SyncKey(self.endpoint.name, rtype, ident))
        async with self.engine.connect() as connection:
            found = await connection.run_sync(read_sync, keys)
        return {
            f"{k.resource_type}|{k.identifier}": KnownResource(r.server_id, r.version_id)
            for k, r in found.items()
            if r.server_id is not None
        }

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
            _literal(entry["resource"], ids)
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
            _literal(ours, ids)
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

    def _records(self, prepared: PreparedBundle, results: list[EntryResult]) -> list[SyncRecord]:
        sent = {str(e["fullUrl"]): e["resource"] for e in prepared.bundle["entry"]}
        records = []
        for result in results:
            if result.full_url is None or result.full_url not in prepared.identifiers:
                continue
            server_id, version = server_id_of(result.location)
            version = version or version_of_etag(result.etag)
            rtype, _, ident = prepared.identifiers[result.full_url].partition("|")
            resource = sent.get(result.full_url)
            digest = hashlib.sha256(orjson.dumps(resource)).hexdigest() if resource else None
            key = SyncKey(self.endpoint.name, rtype, ident)
            records.append(SyncRecord(key, server_id, version, digest))
        return records
