"""Paging of facade searches: the cursor, the page links and the searchset Bundle. Pure.

Search results are ordered by resource id, which never changes for a resource (ids are
deterministic UUIDs), so the order is stable while resources are updated. A page is addressed by
a keyset cursor, not an offset: ``_page=after.<id>`` is the page of resources whose id follows
``<id>``, ``_page=before.<id>`` the page that precedes it. A resource added or changed between two
requests therefore never makes a page repeat or skip one that was already there. Clients should
treat the value as opaque and follow the ``next`` and ``previous`` links.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from cm_fhir.errors import SearchParameterError

if TYPE_CHECKING:
    from cm_fhir.facade.search import SearchQuery

__all__ = ["Cursor", "Direction", "Page", "page_links", "parse_cursor", "searchset"]

Json = dict[str, Any]
_CURSOR = re.compile(r"^(after|before)\.([A-Za-z0-9\-.]{1,64})$")


class Direction(StrEnum):
    AFTER = "after"
    BEFORE = "before"


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a page starts: the resources after (or before) the resource with this id."""

    direction: Direction
    id: str

    def __str__(self) -> str:
        return f"{self.direction.value}.{self.id}"


def parse_cursor(text: str) -> Cursor:
    """Read a ``_page`` value (SearchParameterError if it is not one this server made)."""
    match = _CURSOR.match(text)
    if match is None:
        raise SearchParameterError("_page", "not a page cursor; follow the Bundle's links")
    return Cursor(Direction(match.group(1)), match.group(2))


@dataclass(frozen=True, slots=True)
class Page:
    """One page of results, in id order, and whether there is more on either side."""

    resources: Sequence[Json]
    has_previous: bool
    has_next: bool
    total: int


def _url(base: str, resource_type: str, params: list[tuple[str, str]]) -> str:
    return f"{base}/{resource_type}?{urlencode(params)}" if params else f"{base}/{resource_type}"


def page_links(base: str, query: SearchQuery, page: Page) -> list[Json]:
    """The ``self``, ``first``, ``previous`` and ``next`` links (``base`` ends in /fhir)."""
    params = [*query.params, ("_count", str(query.count))]
    own = [*params, ("_page", str(query.cursor))] if query.cursor else params
    links = [
        {"relation": "self", "url": _url(base, query.resource_type, own)},
        {"relation": "first", "url": _url(base, query.resource_type, params)},
    ]
    if page.resources and page.has_previous:
        first_id = str(page.resources[0]["id"])
        cursor = Cursor(Direction.BEFORE, first_id)
        url = _url(base, query.resource_type, [*params, ("_page", str(cursor))])
        links.append({"relation": "previous", "url": url})
    if page.resources and page.has_next:
        last_id = str(page.resources[-1]["id"])
        cursor = Cursor(Direction.AFTER, last_id)
        url = _url(base, query.resource_type, [*params, ("_page", str(cursor))])
        links.append({"relation": "next", "url": url})
    return links


def searchset(base: str, query: SearchQuery, page: Page) -> Json:
    """The searchset Bundle of one page: total, links, and one ``match`` entry per resource."""
    bundle: Json = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": page.total,
        "link": page_links(base, query, page),
    }
    if page.resources:  # FHIR JSON has no empty arrays
        bundle["entry"] = [
            {
                "fullUrl": f"{base}/{r['resourceType']}/{r['id']}",
                "resource": r,
                "search": {"mode": "match"},
            }
            for r in page.resources
        ]
    return bundle
