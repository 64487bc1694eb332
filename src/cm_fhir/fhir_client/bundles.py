"""Writing one of our transaction Bundles the way a server can take it.

Our outbox holds transaction Bundles (:func:`cm_fhir.fhir.bundle.transaction_bundle`) whose entries
are all idempotent writes and whose references are ``urn:uuid:`` full URLs. The client picks, from
the CapabilityStatement or the endpoint's configured mode:

- **transaction**: one request; when the server caps a transaction's size (configured, or learnt
  when the server refuses one as ``too-costly``: the size it states, else half, kept for later
  calls) the Bundle is cut by :func:`cm_fhir.fhir.split.split_transaction`, whose parts
  keep every reference resolvable;
- **batch**: a batch does not resolve references between its entries and may process them in any
  order, so entries are written in waves: each wave is one batch whose entries reference only
  resources of earlier waves, through conditional references (``Type?identifier=sys|val``) or
  ``Type/id``. Back links are written first without, then again in full, as ``split_transaction``
  does with a cap of one;
- **individual**: the same single entries as ordered requests, one after another.

Every write is conditional or by id, so a retry or a resend never duplicates a resource.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from cm_fhir.errors import RemoteTooCostly
from cm_fhir.fhir.split import server_reference, split_transaction
from cm_fhir.fhir_client.responses import EntryResult, FhirResponse, entry_results
from cm_fhir.fhir_client.status import error_for, stated_cap

if TYPE_CHECKING:
    from cm_fhir.fhir_client.client import FhirClient

__all__ = ["BundleWriter", "batch_waves", "single_writes"]

Json = dict[str, Any]
Strategy = Literal["transaction", "batch", "individual"]


def single_writes(bundle: Json) -> list[Json]:
    """The entries of ``bundle`` as writes of one resource each, in a safe order, with every
    reference to another entry rewritten to how the server finds it."""
    return [part["entry"][0] for part in split_transaction(bundle, 1)]


def _references(value: Any, found: set[str]) -> None:
    if isinstance(value, dict):
        ref = value.get("reference")
        if isinstance(ref, str):
            found.add(ref)
        for item in value.values():
            if isinstance(item, dict | list):
                _references(item, found)
    elif isinstance(value, list):
        for item in value:
            _references(item, found)


def batch_waves(entries: list[Json]) -> list[list[Json]]:
    """Group ordered single writes into waves: an entry goes in the wave after every entry it
    references, and after an earlier write of the same resource."""
    level_of_reference: dict[str, int] = {}
    waves: list[list[Json]] = []
    for entry in entries:
        refs: set[str] = set()
        _references(entry.get("resource"), refs)
        own = server_reference(entry)
        after = [level_of_reference[r] for r in refs | {own} if r in level_of_reference]
        level = max(after, default=-1) + 1
        if level == len(waves):
            waves.append([])
        waves[level].append(entry)
        level_of_reference[own] = level
    return waves


def _collate(bundle: Json, results: list[EntryResult]) -> list[EntryResult]:
    """One result per entry of ``bundle``, in its order: the last write of each full URL."""
    entries: list[Json] = bundle.get("entry") or []
    if not all(e.get("fullUrl") for e in entries):
        return results
    last = {r.full_url: r for r in results}
    missing = EntryResult(None, 500, None, None, None)
    return [last.get(str(e["fullUrl"]), missing) for e in entries]


def _raise_first_failure(sent: list[Json], results: list[EntryResult]) -> None:
    for entry, result in zip(sent, results, strict=True):
        if not result.ok:
            request = entry.get("request") or {}
            raise error_for(
                result.status,
                result.outcome,
                method=str(request.get("method", "POST")),
                url=str(request.get("url", "")),
            )


class BundleWriter:
    """Sends transaction Bundles through a :class:`FhirClient` (see the module docstring)."""

    def __init__(self, client: FhirClient) -> None:
        self._client = client

    async def strategy(self) -> Strategy:
        if self._client.mode != "auto":
            return self._client.mode
        capabilities = await self._client.capabilities()
        if capabilities.transaction:
            return "transaction"
        return "batch" if capabilities.batch else "individual"

    async def write(self, bundle: Json, *, split: bool = True) -> list[EntryResult]:
        if bundle.get("resourceType") != "Bundle" or bundle.get("type") != "transaction":
            raise ValueError("write_bundle takes a transaction Bundle")
        if not bundle.get("entry"):
            return []
        strategy = await self.strategy()
        if strategy == "transaction":
            results = await self._transaction(bundle, split)
        elif strategy == "batch":
            results = await self._batch(bundle)
        else:
            results = await self._individual(bundle)
        return _collate(bundle, results)

    async def _transaction(self, bundle: Json, split: bool) -> list[EntryResult]:
        cap = self._client.max_transaction_entries
        parts = split_transaction(bundle, cap) if cap and split else [bundle]
        results: list[EntryResult] = []
        for part in parts:
            results += await self._transaction_part(part, split)
        return results

    async def _transaction_part(self, part: Json, split: bool = True) -> list[EntryResult]:
        try:
            answer = await self._client.transaction(part)
        except RemoteTooCostly as exc:
            size = len(part["entry"])
            if size <= 1 or not split:
                raise
            stated = stated_cap(exc.outcome)
            self._client.learn_transaction_cap(min(stated or size // 2, size - 1))
            cap = self._client.max_transaction_entries or size // 2
            results: list[EntryResult] = []
            for smaller in split_transaction(part, cap):
                results += await self._transaction_part(smaller)
            return results
        results = entry_results(part, answer)
        _raise_first_failure(part["entry"], results)
        return results

    async def _batch(self, bundle: Json) -> list[EntryResult]:
        results: list[EntryResult] = []
        for wave in batch_waves(single_writes(bundle)):
            sent = {"resourceType": "Bundle", "type": "batch", "entry": wave}
            answer = await self._client.batch(sent)
            wave_results = entry_results(sent, answer)
            _raise_first_failure(wave, wave_results)
            results += wave_results
        return results

    async def _individual(self, bundle: Json) -> list[EntryResult]:
        results = []
        for entry in single_writes(bundle):
            response = await self._send_entry(entry)
            results.append(
                EntryResult(
                    full_url=entry.get("fullUrl"),
                    status=response.status,
                    location=response.location,
                    etag=response.etag,
                    outcome=None,
                )
            )
        return results

    async def _send_entry(self, entry: Json) -> FhirResponse:
        request = entry["request"]
        method = str(request["method"]).upper()
        headers = {}
        if request.get("ifNoneExist"):
            headers["If-None-Exist"] = str(request["ifNoneExist"])
        if request.get("ifMatch"):
            headers["If-Match"] = str(request["ifMatch"])
        body = entry.get("resource") if method in ("POST", "PUT") else None
        url = str(request["url"])
        return FhirResponse.of(await self._client.request(method, url, body=body, headers=headers))
