"""One paging scheme for every list of the API: an opaque ``cursor``, and ``next``. No I/O.

Every list (messages, dead letters, outbox rows, cases, tasks, utilization reviews) answers
``{"items": [...], "next": <URL or null>, "next_cursor": <string or null>}`` and takes
``limit`` and ``cursor``. A client follows ``next`` (the same query with the cursor set), or
sends ``next_cursor`` back as ``cursor``. The cursor is the sort key of the last item returned
(keyset paging, never an offset), so rows inserted while a client pages are never returned twice
and never push an older row out of sight; each cursor names its list, so one list's cursor is
refused by another (422). The cursor is opaque: base64url over JSON, holding row ids, case ids,
dates and review ids, never patient data. The FHIR facade pages its Bundles as FHIR defines
(:mod:`cm_fhir.facade.paging`).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from typing import Annotated

from fastapi import Depends, HTTPException, Query, Request
from pydantic import BaseModel, Field

__all__ = [
    "CursorQuery",
    "Key",
    "PageLinks",
    "RetiredPaging",
    "decode_cursor",
    "encode_cursor",
    "links",
]

#: One part of a sort key: a row id, or text (an id, an ISO date).
Key = tuple[str | int, ...]

_MAX_CURSOR = 600

CursorQuery = Annotated[
    str | None,
    Query(
        max_length=_MAX_CURSOR,
        description="Where the page starts: the `next_cursor` of the page before (opaque).",
    ),
]


_RETIRED = ("before", "next_before", "after")  # the paging parameters of earlier versions


def refuse_retired_paging(request: Request) -> None:
    """400 for a paging parameter of earlier versions: ignored, it would give a client that
    pages with it the first page again and again."""
    given = next((name for name in _RETIRED if name in request.query_params), None)
    if given is not None:
        raise HTTPException(
            400,
            f"'{given}' is no longer a parameter of this list: page with 'cursor' (the "
            "'next_cursor' of the page before)",
        )


#: The dependency every list route declares (``dependencies=[RetiredPaging]``).
RetiredPaging = Depends(refuse_retired_paging)


class PageLinks(BaseModel):
    """What every page of every list carries besides its ``items``."""

    next: str | None = Field(None, description="The next page's URL, or null on the last page")
    next_cursor: str | None = Field(
        None, description="The next page's `cursor` (opaque), or null on the last page"
    )


def encode_cursor(kind: str, key: Key) -> str:
    """The opaque cursor of ``kind`` (the list) that starts a page after ``key``."""
    text = json.dumps([kind, *key], separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _refuse(kind: str) -> HTTPException:
    return HTTPException(422, f"'cursor' is not a cursor of the {kind} list")


def decode_cursor(kind: str, cursor: str | None, shape: Sequence[type]) -> Key | None:
    """The sort key in ``cursor`` (None without one); 422 unless this list gave it out.

    ``shape`` names the type of each part of the key (``int`` or ``str``).
    """
    if cursor is None:
        return None
    try:
        parts = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise _refuse(kind) from exc
    if not isinstance(parts, list) or len(parts) != len(shape) + 1 or parts[0] != kind:
        raise _refuse(kind)
    key = parts[1:]
    for part, wanted in zip(key, shape, strict=True):
        if type(part) is not wanted or (isinstance(part, int) and not 0 <= part < 2**63):
            raise _refuse(kind)
    return tuple(key)


def links(request: Request, kind: str, last: Key | None) -> PageLinks:
    """``next`` and ``next_cursor`` after ``last`` (the sort key of the page's last item when
    more follow, else None): the request's own URL with ``cursor`` set, its filters kept."""
    if last is None:
        return PageLinks()
    cursor = encode_cursor(kind, last)
    return PageLinks(next=str(request.url.include_query_params(cursor=cursor)), next_cursor=cursor)
