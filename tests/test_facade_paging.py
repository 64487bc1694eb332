"""Paging links, the searchset Bundle and the CapabilityStatement: pure values, checked with R4B."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement

from cm_fhir.errors import SearchParameterError
from cm_fhir.facade import (
    SEARCH_PARAMETERS,
    Cursor,
    Direction,
    Page,
    capability_statement,
    parse_cursor,
    parse_search,
    searchset,
)
from cm_fhir.mapping.registry import default_registry

BASE = "https://cm.example.org/fhir"


def _tasks(*ids: str) -> list[dict[str, Any]]:
    return [
        {"resourceType": "Task", "id": i, "status": "requested", "intent": "order"} for i in ids
    ]


def _links(bundle: dict[str, Any]) -> dict[str, list[tuple[str, str]]]:
    out = {}
    for link in bundle["link"]:
        url = urlsplit(link["url"])
        assert f"{url.scheme}://{url.netloc}{url.path}" == f"{BASE}/Task"
        out[link["relation"]] = parse_qsl(url.query)
    return out


def test_cursor_round_trip() -> None:
    for cursor in (Cursor(Direction.AFTER, "abc-1"), Cursor(Direction.BEFORE, "x.y")):
        assert parse_cursor(str(cursor)) == cursor
    with pytest.raises(SearchParameterError, match="_page"):
        parse_cursor("after.a b")


def test_middle_page_links_carry_the_search_and_the_cursors() -> None:
    query = parse_search(
        "Task",
        [("status", "requested"), ("_count", "2"), ("_page", "after.a"), ("_format", "json")],
    )
    page = Page(_tasks("b", "c"), has_previous=True, has_next=True, total=9)
    bundle = searchset(BASE, query, page)
    links = _links(bundle)
    assert links["self"] == [("status", "requested"), ("_count", "2"), ("_page", "after.a")]
    assert links["first"] == [("status", "requested"), ("_count", "2")]
    assert links["next"] == [("status", "requested"), ("_count", "2"), ("_page", "after.c")]
    assert links["previous"] == [("status", "requested"), ("_count", "2"), ("_page", "before.b")]
    assert bundle["total"] == 9
    assert [e["fullUrl"] for e in bundle["entry"]] == [f"{BASE}/Task/b", f"{BASE}/Task/c"]
    assert {e["search"]["mode"] for e in bundle["entry"]} == {"match"}
    Bundle.model_validate(bundle)


def test_edges_have_no_links_beyond_them_and_an_empty_page_has_no_entry() -> None:
    query = parse_search("Task", [])
    first = searchset(BASE, query, Page(_tasks("a"), has_previous=False, has_next=False, total=1))
    assert set(_links(first)) == {"self", "first"}
    empty = searchset(BASE, query, Page([], has_previous=False, has_next=False, total=0))
    assert "entry" not in empty
    assert empty["total"] == 0
    Bundle.model_validate(empty)


def test_values_are_url_encoded_in_links() -> None:
    query = parse_search("Task", [("patient:identifier", "urn:oid:1.2|M&1 2")])
    bundle = searchset(BASE, query, Page(_tasks("a"), has_previous=False, has_next=True, total=2))
    assert ("patient:identifier", "urn:oid:1.2|M&1 2") in _links(bundle)["next"]


def test_capability_statement_lists_exactly_the_table() -> None:
    registry = default_registry()
    statement = capability_statement(
        BASE, registry, software_version="9.9.9", date="2026-03-01T00:00:00Z"
    )
    CapabilityStatement.model_validate(statement)
    (rest,) = statement["rest"]
    served = {r["type"]: r for r in rest["resource"]}
    claim = served.pop("Claim")  # the payer operations only: no interaction, no search
    assert "interaction" not in claim
    assert "searchParam" not in claim
    subscription = served.pop("Subscription")  # the PAS topic: create, read, delete only
    assert "searchParam" not in subscription
    assert set(served) == set(SEARCH_PARAMETERS)
    for resource_type, resource in served.items():
        names = [p["name"] for p in resource["searchParam"]]
        assert names == [p.name for p in SEARCH_PARAMETERS[resource_type]]
        assert [i["code"] for i in resource["interaction"]] == ["read", "search-type"]
    assert served["Task"]["supportedProfile"] == [
        registry.profile("task"),
        registry.profile("referral_task"),
    ]
    assert served["Goal"]["profile"] == registry.profile("goal")
    assert "profile" not in served["Provenance"]
    assert statement["software"]["version"] == "9.9.9"
    assert statement["fhirVersion"] == "4.0.1"
    assert "system/*.read" in rest["security"]["description"]
    assert rest["security"]["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
