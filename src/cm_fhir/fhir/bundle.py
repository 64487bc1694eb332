"""Transaction Bundles and canonical JSON. Pure.

Every entry is a conditional write keyed on the resource's business identifier, so sending the same
Bundle twice creates nothing new: a conditional update (``PUT Type?identifier=system|value``, the
default) or a conditional create (``POST`` with ``ifNoneExist``). Internal references are
``urn:uuid:<id>`` and every fullUrl is the matching ``urn:uuid``; the server resolves them.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any
from urllib.parse import quote

import orjson

from cm_fhir.errors import MappingError

Json = dict[str, Any]


class WriteMode(StrEnum):
    CONDITIONAL_UPDATE = "conditional-update"
    CONDITIONAL_CREATE = "conditional-create"


def identifier_query(resource: Json) -> str:
    """``identifier=<system>|<value>`` for the resource's first business identifier."""
    identifiers = resource.get("identifier") or []
    if not identifiers:
        raise MappingError("a resource without a business identifier cannot be written safely")
    first = identifiers[0]
    return f"identifier={quote(first['system'], safe=':/')}|{quote(first['value'], safe='')}"


def transaction_bundle(
    resources: list[Json], mode: WriteMode = WriteMode.CONDITIONAL_UPDATE
) -> Json:
    """A transaction Bundle that writes ``resources`` idempotently."""
    entries = []
    for resource in resources:
        rtype = resource["resourceType"]
        query = identifier_query(resource)
        if mode is WriteMode.CONDITIONAL_UPDATE:
            request = {"method": "PUT", "url": f"{rtype}?{query}"}
        else:
            request = {"method": "POST", "url": rtype, "ifNoneExist": query}
        entries.append(
            {"fullUrl": f"urn:uuid:{resource['id']}", "resource": resource, "request": request}
        )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def dumps(document: Json) -> bytes:
    """Canonical JSON: compact, UTF-8, keys in the order the mapper built them."""
    return orjson.dumps(document)


def bundle_resources(bundle: Json) -> list[Json]:
    """The resources of a Bundle's entries (or a single resource as a one-element list)."""
    if bundle.get("resourceType") != "Bundle":
        return [bundle]
    return [e["resource"] for e in bundle.get("entry", []) if "resource" in e]
