"""Splitting a transaction to fit a capped server: every reference still resolves, in order.

A pure simulation of a server applies the parts in sending order, keeping resources by business
identifier and resolving each reference as a server would (``urn:uuid`` inside the part,
``Type/id`` and ``Type?identifier=`` against what earlier parts wrote); what it ends with must be
exactly what the unsplit transaction writes. The real server takes them in ``test_fhir_feed``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cm_fhir.domain import Case
from cm_fhir.fhir import WriteMode, map_case
from cm_fhir.fhir.bundle import identifier_query
from cm_fhir.fhir.split import split_transaction
from strategies import cases

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.json"))
PROPERTY = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SOAK = settings(PROPERTY, max_examples=300)  # `make soak`
Json = dict[str, Any]
Key = tuple[str, str]  # resource type, identifier query


def _key(resource: Json) -> Key:
    return (resource["resourceType"], unquote(identifier_query(resource)))


def _resolve_all(value: Any, resolve: Any) -> None:
    if isinstance(value, dict):
        if isinstance(value.get("reference"), str):
            value["reference"] = resolve(value["reference"])
        for item in value.values():
            _resolve_all(item, resolve)
    elif isinstance(value, list):
        for item in value:
            _resolve_all(item, resolve)


def apply_parts(parts: list[Json], cap: int) -> dict[Key, Json]:
    """What a server holds after the parts, references resolved to business keys."""
    store: dict[Key, Json] = {}
    by_id: dict[str, Key] = {}
    for part in parts:
        entries = part["entry"]
        assert 0 < len(entries) <= cap
        keys = [_key(e["resource"]) for e in entries]
        assert len(set(keys)) == len(keys), "a resource twice in one transaction"
        in_part = {e["fullUrl"]: k for e, k in zip(entries, keys, strict=True)}

        def resolve(ref: str, in_part: dict[str, Key] = in_part) -> str:
            if ref.startswith("urn:uuid:"):
                assert ref in in_part, "a urn:uuid reference outside its part"
                return repr(in_part[ref])
            if "?" in ref:
                rtype, query = ref.split("?", 1)
                key = (rtype, unquote(query))
            elif ref.startswith("#"):
                return ref
            else:
                key = by_id[ref.rsplit("/", 1)[-1]]
            assert key in store, "a reference to a resource not written yet"
            return repr(key)

        for entry, key in zip(entries, keys, strict=True):
            resource = copy.deepcopy(entry["resource"])
            resource.pop("id", None)
            _resolve_all(resource, resolve)
            if entry["request"]["method"] == "POST" and key in store:
                continue  # a conditional create of something that exists changes nothing
            store[key] = resource
            by_id[entry["fullUrl"].rsplit(":", 1)[-1]] = key
    return store


def check_split(bundle: Json, cap: int) -> list[Json]:
    parts = split_transaction(bundle, cap)
    whole = apply_parts([bundle], len(bundle["entry"]))
    assert apply_parts(parts, cap) == whole
    return parts


@PROPERTY
@given(cases(), st.sampled_from(list(WriteMode)), st.integers(min_value=1, max_value=8))
def test_split_parts_write_what_the_whole_transaction_writes(
    case: Case, mode: WriteMode, cap: int
) -> None:
    check_split(map_case(case, mode=mode, validate=False), cap)


@pytest.mark.slow
@SOAK
@given(cases(), st.sampled_from(list(WriteMode)), st.integers(min_value=1, max_value=8))
def test_split_parts_write_what_the_whole_transaction_writes_soak(
    case: Case, mode: WriteMode, cap: int
) -> None:
    check_split(map_case(case, mode=mode, validate=False), cap)


@pytest.mark.parametrize("mode", list(WriteMode))
@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_examples_split_at_eight(example: Path, mode: WriteMode) -> None:
    bundle = map_case(Case.model_validate_json(example.read_text(encoding="utf-8")), mode=mode)
    parts = check_split(bundle, 8)
    assert len(parts) > 1


def test_a_bundle_that_fits_is_left_alone() -> None:
    bundle = map_case(Case.model_validate_json(EXAMPLES[0].read_text(encoding="utf-8")))
    assert split_transaction(bundle, len(bundle["entry"])) == [bundle]
    with pytest.raises(ValueError, match="at least 1"):
        split_transaction(bundle, 0)
