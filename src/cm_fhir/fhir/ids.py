"""Deterministic resource ids and business identifiers. Pure.

A resource's id is a UUIDv5 over its type and business identifier, in a namespace derived from the
canonical base: the same case always yields the same ids, so writing it twice never creates twice.
Case-local ids (a task ``t1`` of case ``C-1``) become identifier values ``C-1.t1``; the dot cannot
occur in a local id, so the split back is unambiguous.
"""

from __future__ import annotations

import hashlib
import uuid
from functools import lru_cache

from cm_fhir.errors import MappingError

SEPARATOR = "."


@lru_cache(maxsize=16)
def _namespace(canonical_base: str) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, canonical_base)


@lru_cache(maxsize=1 << 16)  # the worker maps the same cases again and again
def resource_id(canonical_base: str, resource_type: str, system: str, value: str) -> str:
    """The deterministic id of a resource with this business identifier.

    Equal to ``str(uuid.uuid5(namespace, f"{resource_type}|{system}|{value}"))`` where the namespace
    is ``uuid5(NAMESPACE_URL, canonical_base)``; computed directly from SHA-1 because the mapper
    makes dozens per case and ``uuid.UUID`` objects cost more than the hash.
    """
    digest = bytearray(
        hashlib.sha1(
            _namespace(canonical_base).bytes + f"{resource_type}|{system}|{value}".encode(),
            usedforsecurity=False,
        ).digest()[:16]
    )
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def local_value(case_id: str, *local_ids: str) -> str:
    """The identifier value of something inside a case."""
    return SEPARATOR.join((case_id, *local_ids))


def split_local_value(value: str, case_id: str, path: str) -> list[str]:
    """The local id parts of an identifier value made by :func:`local_value`."""
    prefix = case_id + SEPARATOR
    if not value.startswith(prefix):
        raise MappingError(f"identifier value does not belong to case '{case_id}'", path=path)
    return value[len(prefix) :].split(SEPARATOR)
