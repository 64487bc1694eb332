"""What to send to one endpoint for one outbox Bundle. No I/O.

The outbox holds each case's whole transaction Bundle: conditional writes by business identifier
(``PUT Type?identifier=system|value``), ``urn:uuid`` references between its entries, and the
patient as a logical reference (``{"type": "Patient", "identifier": ...}``).
:func:`prepare_bundle` adapts it to one endpoint:

- entries of resource types the endpoint does not receive are left out, and references to them
  become logical identifier references (the EHR may know them another way);
- the patient reference becomes literal (``Patient/<id>``, the identifier kept) where the EHR's
  Patient was resolved;
- an entry whose resource the endpoint already holds (``sync_state``: server id and version) is
  written by id with ``ifMatch``, so a change made in the EHR since our last write is never
  overwritten blindly: the server answers 412 and the sync worker re-reads and re-applies only the
  elements we own (:data:`EHR_OWNED` are the EHR's);
- an entry the endpoint acknowledged with the same content (the hash of what was last sent) is
  left out, and references to it become literal (``Type/<id>``): only what changed is written.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from cm_fhir.fhir.split import rewrite_references

__all__ = [
    "EHR_OWNED",
    "KnownResource",
    "PreparedBundle",
    "identifier_key",
    "owned_elements",
    "prepare_bundle",
    "server_id_of",
]

Json = dict[str, Any]

#: Elements the EHR's users change and we never overwrite after a 412 (Task status comes back).
EHR_OWNED: dict[str, frozenset[str]] = {
    "Task": frozenset(
        {"status", "statusReason", "businessStatus", "owner", "output", "note", "lastModified"}
    ),
}


@dataclass(frozen=True, slots=True)
class KnownResource:
    """What the endpoint holds of one of our resources."""

    server_id: str
    version_id: str | None
    sent_sha256: str | None = None  # of what the endpoint last acknowledged


@dataclass(frozen=True, slots=True)
class PreparedBundle:
    """The Bundle to send and, per fullUrl, each entry's ``Type|system|value``."""

    bundle: Json
    identifiers: dict[str, str]  # fullUrl -> Type|system|value
    if_matched: dict[str, KnownResource]  # fullUrl -> what ifMatch named
    digests: dict[str, str] = field(default_factory=dict)  # fullUrl -> hash of its resource
    unchanged: int = 0  # entries left out: the endpoint holds them as they are


def identifier_key(resource: Json) -> str:
    """``system|value`` of the resource's first business identifier."""
    first = (resource.get("identifier") or [{}])[0]
    return f"{first.get('system', '')}|{first.get('value', '')}"


def owned_elements(resource: Json) -> set[str]:
    """The top-level elements of our resource that we own (the rest is the EHR's)."""
    theirs = EHR_OWNED.get(str(resource.get("resourceType")), frozenset())
    return {k for k in resource if k not in theirs and k not in ("resourceType", "id", "meta")}


def server_id_of(location: str | None) -> tuple[str | None, str | None]:
    """(id, version) from ``Type/id/_history/v`` or a full URL ending so."""
    if not location:
        return None, None
    parts = location.rstrip("/").split("/")
    if "_history" in parts:
        at = parts.index("_history")
        version = parts[at + 1] if at + 1 < len(parts) else None
        return (parts[at - 1] if at >= 1 else None), version
    return parts[-1] or None, None


def _rewrite_refs(value: Any, logical: Mapping[str, Json], patient: Json | None) -> None:
    if isinstance(value, dict):
        ref = value.get("reference")
        if isinstance(ref, str) and ref in logical:
            value.pop("reference")
            value.update(copy.deepcopy(logical[ref]))
        elif (
            patient is not None
            and value.get("type") == "Patient"
            and "reference" not in value
            and value.get("identifier") == patient["identifier"]
        ):
            value["reference"] = patient["reference"]
        for item in value.values():
            if isinstance(item, dict | list):
                _rewrite_refs(item, logical, patient)
    elif isinstance(value, list):
        for item in value:
            _rewrite_refs(item, logical, patient)


def prepare_bundle(
    bundle: Json,
    *,
    resource_types: Collection[str] = (),
    patient_identifier: Json | None = None,
    patient_id: str | None = None,
    known: Mapping[str, KnownResource] | None = None,
) -> PreparedBundle:
    """``bundle`` adapted to an endpoint (see the module docstring); ``known`` is by
    ``Type|system|value``; ``bundle`` is not changed."""
    entries: list[Json] = bundle.get("entry") or []
    keep = [
        e for e in entries if not resource_types or e["resource"]["resourceType"] in resource_types
    ]
    dropped = [e for e in entries if e not in keep]
    logical = {
        str(e["fullUrl"]): {
            "type": e["resource"]["resourceType"],
            "identifier": copy.deepcopy((e["resource"].get("identifier") or [{}])[0]),
        }
        for e in dropped
    }
    patient = None
    if patient_id is not None and patient_identifier is not None:
        patient = {"reference": f"Patient/{patient_id}", "identifier": patient_identifier}
    out: list[Json] = []
    identifiers: dict[str, str] = {}
    if_matched: dict[str, KnownResource] = {}
    digests: dict[str, str] = {}
    held_ids: dict[str, str] = {}  # fullUrl -> Type/id of entries left out unchanged
    for entry in keep:
        resource = copy.deepcopy(entry["resource"])
        _rewrite_refs(resource, logical, patient)
        rtype = str(resource["resourceType"])
        key = f"{rtype}|{identifier_key(resource)}"
        full_url = str(entry["fullUrl"])
        identifiers[full_url] = key
        request = dict(entry["request"])
        held = (known or {}).get(key)
        digest = hashlib.sha256(orjson.dumps(resource)).hexdigest()
        if held is not None and held.version_id is not None and request.get("method") == "PUT":
            if digest == held.sent_sha256:
                held_ids[full_url] = f"{rtype}/{held.server_id}"
                continue
            resource["id"] = held.server_id
            request = {
                "method": "PUT",
                "url": f"{rtype}/{held.server_id}",
                "ifMatch": f'W/"{held.version_id}"',
            }
            if_matched[full_url] = held
        digests[full_url] = digest
        out.append({"fullUrl": full_url, "resource": resource, "request": request})
    if held_ids:
        for entry in out:
            rewrite_references(entry["resource"], held_ids)
    sent = {"resourceType": "Bundle", "type": "transaction", "entry": out}
    return PreparedBundle(sent, identifiers, if_matched, digests, len(held_ids))
