"""Transaction Bundles and canonical JSON. Pure.

Every entry is an idempotent write, so sending the same Bundle twice creates nothing new:
- ``conditional-update`` (default): ``PUT Type?identifier=system|value``;
- ``conditional-create``: ``POST Type`` with ``ifNoneExist: identifier=system|value``;
- ``update``: ``PUT Type/<id>`` with our deterministic id, for servers that accept client ids.

Every fullUrl is ``urn:uuid:<deterministic id>`` and internal references use it; the server resolves
them. In the two conditional modes the resource body carries no ``id``: R4 lets a server reject a
conditional update whose body has an id that matches nothing, and ignores ids on create. The reverse
mapping reads the id back from the fullUrl.
"""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from typing import Any
from urllib.parse import quote

import orjson

from cm_fhir.errors import MappingError

Json = dict[str, Any]


class WriteMode(StrEnum):
    """How a transaction Bundle writes each resource: conditional update by business
    identifier (the default: a retry never duplicates), conditional create, or plain update by id.
    """

    CONDITIONAL_UPDATE = "conditional-update"
    CONDITIONAL_CREATE = "conditional-create"
    UPDATE = "update"


def identifier_query(resource: Json) -> str:
    """``identifier=<system>|<value>`` for the resource's first business identifier."""
    identifiers = resource.get("identifier") or []
    if not identifiers:
        raise MappingError("a resource without a business identifier cannot be written safely")
    first = identifiers[0]
    return _query(first["system"], first["value"])


@lru_cache(maxsize=1 << 16)  # the worker writes the same resources again and again
def _query(system: str, value: str) -> str:
    return f"identifier={quote(system, safe=':/')}|{quote(value, safe='')}"


def transaction_bundle(
    resources: list[Json], mode: WriteMode = WriteMode.CONDITIONAL_UPDATE
) -> Json:
    """A transaction Bundle that writes ``resources`` idempotently."""
    entries = []
    for resource in resources:
        rtype, rid = resource["resourceType"], resource["id"]
        query = identifier_query(resource)
        body = resource
        if mode is WriteMode.UPDATE:
            request = {"method": "PUT", "url": f"{rtype}/{rid}"}
        else:
            body = {k: v for k, v in resource.items() if k != "id"}
            if mode is WriteMode.CONDITIONAL_UPDATE:
                request = {"method": "PUT", "url": f"{rtype}?{query}"}
            else:
                request = {"method": "POST", "url": rtype, "ifNoneExist": query}
        entries.append({"fullUrl": f"urn:uuid:{rid}", "resource": body, "request": request})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def dumps(document: Json) -> bytes:
    """Canonical JSON: compact, UTF-8, keys in the order the mapper built them."""
    return orjson.dumps(document)


def bundle_resources(bundle: Json) -> list[Json]:
    """The resources of a Bundle's entries (or a single resource as a one-element list)."""
    if bundle.get("resourceType") != "Bundle":
        return [bundle]
    out = []
    for entry in bundle.get("entry", []):
        resource = entry.get("resource")
        if resource is None:
            continue
        full_url = str(entry.get("fullUrl", ""))
        if "id" not in resource and full_url.startswith("urn:uuid:"):
            resource = {"id": full_url[len("urn:uuid:") :], **resource}
        out.append(resource)
    return out
