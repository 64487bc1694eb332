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

__all__ = [
    "SUBSETTED",
    "Cursor",
    "Direction",
    "Page",
    "page_links",
    "parse_cursor",
    "searchset",
    "subset",
]

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
    included: Sequence[Json] = ()


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


#: The tag FHIR puts on a resource of which only some elements are returned.
SUBSETTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
    "display": "subsetted",
}


def subset(resource: Json, elements: Sequence[str]) -> Json:
    """``resource`` with only ``elements`` (and its type, id and meta), tagged SUBSETTED."""
    kept = {k: v for k, v in resource.items() if k in elements or k in ("resourceType", "id")}
    meta = dict(resource.get("meta", {}))
    meta["tag"] = [*meta.get("tag", []), SUBSETTED]
    kept["meta"] = meta
    return kept


def searchset(base: str, query: SearchQuery, page: Page) -> Json:
    """The searchset Bundle of one page: total, links, and one ``match`` entry per resource.

    ``_summary=count``: the total and the ``self`` link only. ``_elements``: each resource
    subsetted (:func:`subset`).
    """
    links = page_links(base, query, page)
    bundle: Json = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": page.total,
        "link": links[:1] if query.summary_count else links,
    }
    if page.resources and not query.summary_count:  # FHIR JSON has no empty arrays
        bundle["entry"] = [
            {
                "fullUrl": f"{base}/{r['resourceType']}/{r['id']}",
                "resource": subset(r, query.elements) if query.elements else r,
                "search": {"mode": "match"},
            }
            for r in page.resources
        ]
        bundle["entry"] += [
            {
                "fullUrl": f"{base}/{r['resourceType']}/{r['id']}",
                "resource": r,
                "search": {"mode": "include"},
            }
            for r in page.included
        ]
    return bundle
