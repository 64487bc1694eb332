"""What a server says it supports, read once from its CapabilityStatement (``GET /metadata``).

Servers differ: some have no transactions, some no batches, some cap a transaction's size. R4 has
no element for that cap, so :attr:`ServerCapabilities.max_transaction_entries` comes from the
endpoint's configuration, or from what the client learnt when the server refused a transaction as
``too-costly``. A statement that lists no resources says nothing about conditional writes; we then
assume them (every server we target supports them) and let the server's answer decide.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

__all__ = ["ServerCapabilities", "parse_capability_statement"]

Json = dict[str, Any]


@dataclass(frozen=True)
class ServerCapabilities:
    fhir_version: str
    transaction: bool
    batch: bool
    max_transaction_entries: int | None
    conditional_update: bool
    conditional_create: bool

    def with_cap(self, max_entries: int | None) -> ServerCapabilities:
        return replace(self, max_transaction_entries=max_entries)


def _server_rest(statement: Json) -> Json:
    rests = [r for r in statement.get("rest") or [] if isinstance(r, dict)]
    return next((r for r in rests if r.get("mode") == "server"), rests[0] if rests else {})


def parse_capability_statement(
    statement: Json, *, max_transaction_entries: int | None = None
) -> ServerCapabilities:
    """The capabilities a CapabilityStatement (a dict) declares."""
    if statement.get("resourceType") != "CapabilityStatement":
        raise ValueError("not a CapabilityStatement")
    rest = _server_rest(statement)
    interactions = {
        str(i.get("code")) for i in rest.get("interaction") or [] if isinstance(i, dict)
    }
    resources = [r for r in rest.get("resource") or [] if isinstance(r, dict)]
    if resources:
        conditional_update = any(r.get("conditionalUpdate") is True for r in resources)
        conditional_create = any(r.get("conditionalCreate") is True for r in resources)
    else:
        conditional_update = conditional_create = True
    return ServerCapabilities(
        fhir_version=str(statement.get("fhirVersion", "")),
        transaction="transaction" in interactions,
        batch="batch" in interactions,
        max_transaction_entries=max_transaction_entries,
        conditional_update=conditional_update,
        conditional_create=conditional_create,
    )
