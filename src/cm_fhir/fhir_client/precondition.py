"""Stale writes: update with If-Match and, on 412, re-read, re-apply the fields we own, retry.

An EHR user may change a resource we wrote (a Task's owner, its status) between our writes. An
update with ``If-Match`` of the version we last saw fails with 412 then
(:class:`~cm_fhir.errors.RemotePreconditionFailed`) instead of overwriting their change.
:func:`update_owned` then reads the current version, takes from our resource only the elements we
own (:func:`merge_owned`), keeps everything else as the server has it, and updates with the new
ETag; a 412 again (another write in between) repeats that, a few times at most.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

from cm_fhir.errors import RemotePreconditionFailed

if TYPE_CHECKING:
    from cm_fhir.fhir_client.client import FhirClient
    from cm_fhir.fhir_client.responses import FhirResponse

__all__ = ["merge_owned", "reapply", "update_owned"]

Json = dict[str, Any]


def merge_owned(current: Json, ours: Json, owned: Collection[str]) -> Json:
    """``current`` with the top-level elements named in ``owned`` taken from ``ours`` (removed
    where ``ours`` lacks them). ``resourceType``, ``id`` and ``meta`` stay the server's."""
    merged = copy.deepcopy(current)
    for name in owned:
        if name in ("resourceType", "id", "meta"):
            continue
        if name in ours:
            merged[name] = copy.deepcopy(ours[name])
        else:
            merged.pop(name, None)
    return merged


async def reapply(
    client: FhirClient,
    resource_type: str,
    id: str,
    merge: Callable[[Json], Json],
    *,
    attempts: int = 3,
) -> FhirResponse:
    """Read ``resource_type/id``, apply ``merge`` to it, update it with If-Match of what was read;
    on 412 start again, ``attempts`` times at most (then the 412 is raised)."""
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    for attempt in range(attempts):
        current = await client.read(resource_type, id)
        if current.resource is None:
            raise RemotePreconditionFailed(current.status, f"GET {resource_type}: empty body")
        merged = merge(copy.deepcopy(current.resource))
        version = current.etag or current.version_id
        try:
            return await client.update(merged, if_match=version)
        except RemotePreconditionFailed:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


async def update_owned(
    client: FhirClient,
    resource: Json,
    owned: Collection[str],
    *,
    if_match: str | None,
    attempts: int = 3,
) -> FhirResponse:
    """Update ``resource`` (with ``id``) if the server still holds version ``if_match``; else
    re-apply only the ``owned`` elements onto the server's current version."""
    try:
        return await client.update(resource, if_match=if_match)
    except RemotePreconditionFailed:
        pass
    return await reapply(
        client,
        str(resource["resourceType"]),
        str(resource["id"]),
        lambda current: merge_owned(current, resource, owned),
        attempts=attempts,
    )
