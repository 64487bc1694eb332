"""Split a transaction Bundle into parts that fit a server's transaction size cap. Pure.

Servers cap transactions (Medplum refuses conditional writes in a transaction of more than 8
entries; others cap size outright). :func:`split_transaction` cuts one of our transaction Bundles
(:func:`~cm_fhir.fhir.bundle.transaction_bundle`) into parts of at most ``max_entries`` entries,
to be sent one after the other, so that every reference still resolves:

- A reference to an entry of the same part stays ``urn:uuid:``; the server resolves it.
- A reference to an entry of an earlier part (already written) is rewritten to what finds that
  resource on the server: ``Type/<id>`` for PUT-by-id entries, else the conditional reference
  ``Type?identifier=<system>|<value>`` (R4 conditional references, resolved by the server).
- A reference to an entry of a later part cannot be written yet. The mapper orders resources so
  that only back links point forward (``EpisodeOfCare.team`` and ``referralRequest``,
  ``CarePlan.activity``); the resource is first written without those elements (all optional)
  and written again in full, as an update (``PUT``, by id or conditional), in a part after its
  targets. So a split write converges to exactly what the unsplit transaction writes.

Each part is all-or-nothing on the server; the sequence is not. Resending the whole sequence is
safe because every entry is an idempotent write.
"""

from __future__ import annotations

import copy
from collections.abc import Container
from typing import Any

__all__ = ["rewrite_references", "server_reference", "split_transaction"]

Json = dict[str, Any]


def split_transaction(bundle: Json, max_entries: int) -> list[Json]:
    """The parts of ``bundle``, in sending order, each with at most ``max_entries`` entries."""
    if max_entries < 1:
        raise ValueError("max_entries must be at least 1")
    entries: list[Json] = bundle.get("entry", [])
    if len(entries) <= max_entries:
        return [bundle]
    known = {str(e["fullUrl"]): e for e in entries if e.get("fullUrl")}
    chunks = [entries[i : i + max_entries] for i in range(0, len(entries), max_entries)]
    chunk_of = {str(e["fullUrl"]): n for n, chunk in enumerate(chunks) for e in chunk}
    parts: list[list[Json]] = []
    written: dict[str, str] = {}  # fullUrl -> how a later part refers to it
    deferred: list[Json] = []
    for n, chunk in enumerate(chunks):
        part = []
        for entry in chunk:
            targets = _targets(entry.get("resource"), known)
            later = {t for t in targets if chunk_of[t] > n}
            if later:
                deferred.append(entry)
            part.append(_entry(entry, written, drop=later))
        parts.append(part)
        written.update({str(e["fullUrl"]): server_reference(e) for e in chunk if e.get("fullUrl")})
    # Every target is written by now: the deferred resources again in full, as updates.
    full = [_as_update(_entry(entry, written)) for entry in deferred]
    parts += [full[i : i + max_entries] for i in range(0, len(full), max_entries)]
    return [{"resourceType": "Bundle", "type": "transaction", "entry": p} for p in parts]


def server_reference(entry: Json) -> str:
    """What finds an entry's resource on the server once written: ``Type/id`` for a PUT by id,
    else the conditional reference ``Type?identifier=<system>|<value>``."""
    request = entry["request"]
    url = str(request["url"])
    if request["method"] == "POST" and request.get("ifNoneExist"):
        return f"{url}?{request['ifNoneExist']}"
    return url


def _as_update(entry: Json) -> Json:
    request = entry["request"]
    if request["method"] == "PUT":
        return entry
    url = server_reference(entry)
    return {**entry, "request": {"method": "PUT", "url": url}}


def _targets(value: Any, known: Container[str]) -> set[str]:
    found: set[str] = set()
    _collect(value, known, found)
    return found


def _collect(value: Any, known: Container[str], found: set[str]) -> None:
    if isinstance(value, dict):
        ref = value.get("reference")
        if isinstance(ref, str) and ref in known:
            found.add(ref)
        for item in value.values():
            if isinstance(item, dict | list):
                _collect(item, known, found)
    elif isinstance(value, list):
        for item in value:
            _collect(item, known, found)


def _entry(entry: Json, written: dict[str, str], drop: set[str] | None = None) -> Json:
    """The entry with references to earlier parts rewritten and elements naming ``drop`` removed."""
    resource = copy.deepcopy(entry.get("resource"))
    if isinstance(resource, dict):
        if drop:
            for key in list(resource):
                value = resource[key]
                if isinstance(value, list):
                    kept = [item for item in value if not _targets(item, drop)]
                    if kept:
                        resource[key] = kept
                    else:
                        del resource[key]
                elif _targets(value, drop):
                    del resource[key]
        rewrite_references(resource, written)
    return {**entry, "resource": resource}


def rewrite_references(value: Any, written: dict[str, str]) -> None:
    """Rewrite, in place, every ``reference`` in ``value`` that ``written`` names (a bundle's
    ``urn:uuid`` full URLs) to what it maps it to (``Type/id`` on the server)."""
    if isinstance(value, dict):
        ref = value.get("reference")
        if isinstance(ref, str) and ref in written:
            value["reference"] = written[ref]
        for item in value.values():
            if isinstance(item, dict | list):
                rewrite_references(item, written)
    elif isinstance(value, list):
        for item in value:
            rewrite_references(item, written)
