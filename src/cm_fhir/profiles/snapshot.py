"""Snapshot generation: a profile's differential applied to its base definition's snapshot. Pure.

Works on plain dicts. The base snapshot is copied; each differential element is then found by its
id, or made: a slice (``Task.identifier:taskId``) is copied from the sliced element and placed after
the sliced element's block; a child of an element whose type is a datatype
(``Task.restriction.period.end``) is reached by unfolding that datatype's own snapshot under the
element. Constraints are appended (marked with the profile as source); every other property in the
differential replaces the base one, after a check that cardinality only narrows.

This covers what cm-fhir's profiles use: constraints on nested elements, slices (including complex
extensions), fixed and pattern values, bindings and invariants. Type slicing on choice elements and
re-slicing are not supported and raise :class:`~cm_fhir.errors.ProfileError`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from cm_fhir.errors import ProfileError

Resolver = Callable[[str], dict[str, Any] | None]
_MERGED_LISTS = ("constraint", "condition")


def generate_snapshot(profile: dict[str, Any], resolve: Resolver) -> list[dict[str, Any]]:
    """Return the snapshot elements of ``profile``; ``resolve`` maps a canonical URL to its SD.

    The base definition must already carry a snapshot (generate ours in dependency order).
    """
    url = str(profile.get("url", profile.get("id", "?")))
    base_url = profile.get("baseDefinition")
    if not isinstance(base_url, str):
        raise ProfileError(f"{url}: baseDefinition is missing")
    base = resolve(base_url)
    if base is None or "snapshot" not in base:
        raise ProfileError(f"{url}: base definition {base_url} is not loaded or has no snapshot")
    builder = _Builder(url, copy.deepcopy(base["snapshot"]["element"]), resolve)
    seen: set[str] = set()
    for diff in profile.get("differential", {}).get("element", []):
        element_id = diff.get("id") or diff.get("path")
        if not isinstance(element_id, str):
            raise ProfileError(f"{url}: a differential element has neither id nor path")
        if element_id in seen:  # sdf-17: servers refuse duplicate ids
            raise ProfileError(f"{url}: element {element_id} appears twice in the differential")
        seen.add(element_id)
        builder.apply(element_id, diff)
    return builder.elements


class _Builder:
    def __init__(self, url: str, elements: list[dict[str, Any]], resolve: Resolver) -> None:
        self.url = url
        self.elements = elements
        self.resolve = resolve
        for element in elements:
            element.setdefault("id", element["path"])

    def apply(self, element_id: str, diff: dict[str, Any]) -> None:
        index = self._find(element_id)
        if index is None:
            index = self._make(element_id)
        self._merge(self.elements[index], diff)
        self._fix_extension_url(self.elements[index])

    def _fix_extension_url(self, element: dict[str, Any]) -> None:
        """An extension slice gets its url fixed, so slice matching needs no profile lookup."""
        if "sliceName" not in element or element["path"].rpartition(".")[2] not in (
            "extension",
            "modifierExtension",
        ):
            return
        profiles = [p for t in element.get("type", []) for p in t.get("profile", [])]
        if len(profiles) != 1:
            return
        url_id = element["id"] + ".url"
        url_index = self._find(url_id)
        if url_index is None:
            url_index = self._make(url_id)
        self.elements[url_index]["fixedUri"] = profiles[0]

    def _find(self, element_id: str) -> int | None:
        for index, element in enumerate(self.elements):
            if element["id"] == element_id:
                return index
        return None

    def _block_end(self, element_id: str) -> int:
        """Index just after ``element_id``, its descendants and its slices."""
        index = self._find(element_id)
        assert index is not None
        end = index + 1
        while end < len(self.elements):
            other = self.elements[end]["id"]
            if not other.startswith((element_id + ".", element_id + ":")):
                break
            end += 1
        return end

    def _make(self, element_id: str) -> int:
        parent_id, _, last = element_id.rpartition(".")
        if not parent_id:
            raise ProfileError(f"{self.url}: element {element_id} is not in the base definition")
        if ":" in last:
            return self._make_slice(parent_id, last, element_id)
        parent_index = self._find(parent_id)
        if parent_index is None:
            parent_index = self._make(parent_id)
        if self._has_children(parent_id):
            raise ProfileError(f"{self.url}: element {element_id} is not in the base definition")
        self._unfold(parent_index)
        index = self._find(element_id)
        if index is None:
            raise ProfileError(f"{self.url}: element {element_id} is not in the base definition")
        return index

    def _has_children(self, element_id: str) -> bool:
        prefix = element_id + "."
        return any(e["id"].startswith(prefix) for e in self.elements)

    def _make_slice(self, parent_id: str, last: str, element_id: str) -> int:
        name, _, slice_name = last.partition(":")
        if "/" in slice_name or ":" in slice_name:
            raise ProfileError(f"{self.url}: re-slicing ({element_id}) is not supported")
        sliced_id = f"{parent_id}.{name}"
        sliced_index = self._find(sliced_id)
        if sliced_index is None:
            sliced_index = self._make(sliced_id)
        sliced = self.elements[sliced_index]
        if name.endswith("[x]"):
            raise ProfileError(f"{self.url}: type slicing ({element_id}) is not supported")
        block = [sliced] + [
            e for e in self.elements[sliced_index + 1 :] if e["id"].startswith(sliced_id + ".")
        ]
        copies = []
        for original in block:
            item = copy.deepcopy(original)
            item["id"] = element_id + original["id"][len(sliced_id) :]
            copies.append(item)
        copies[0].pop("slicing", None)
        copies[0]["sliceName"] = slice_name
        at = self._block_end(sliced_id)
        self.elements[at:at] = copies
        return at

    def _unfold(self, index: int) -> None:
        element = self.elements[index]
        types = element.get("type", [])
        if len(types) != 1:
            raise ProfileError(
                f"{self.url}: cannot constrain children of {element['id']}: it has "
                f"{len(types)} types; restrict it to one type first"
            )
        code = types[0]["code"]
        datatype = self.resolve(f"http://hl7.org/fhir/StructureDefinition/{code}")
        if datatype is None or "snapshot" not in datatype:
            raise ProfileError(f"{self.url}: datatype {code} is not loaded")
        children = []
        for original in datatype["snapshot"]["element"][1:]:
            item = copy.deepcopy(original)
            suffix_id = original.get("id", original["path"])[len(code) :]
            item["id"] = element["id"] + suffix_id
            item["path"] = element["path"] + original["path"][len(code) :]
            children.append(item)
        self.elements[index + 1 : index + 1] = children

    def _merge(self, target: dict[str, Any], diff: dict[str, Any]) -> None:
        for key, value in diff.items():
            if key in ("id", "path"):
                continue
            if key in _MERGED_LISTS:
                items = copy.deepcopy(value)
                if key == "constraint":
                    for item in items:
                        item.setdefault("source", self.url)
                known = target.get(key, [])
                target[key] = known + [item for item in items if item not in known]
            else:
                target[key] = copy.deepcopy(value)
        self._check_cardinality(target, diff)

    def _check_cardinality(self, target: dict[str, Any], diff: dict[str, Any]) -> None:
        base = target.get("base", {})
        low = int(target.get("min", 0))
        high = str(target.get("max", "*"))
        base_min = int(base.get("min", 0))
        base_max = str(base.get("max", "*"))
        where = f"{self.url}: {target['id']}"
        if "sliceName" not in target and low < base_min:
            raise ProfileError(f"{where}: min {low} is below the base min {base_min}")
        if high != "*" and low > int(high):
            raise ProfileError(f"{where}: min {low} is above max {high}")
        if "max" in diff and base_max != "*" and (high == "*" or int(high) > int(base_max)):
            raise ProfileError(f"{where}: max {high} widens the base max {base_max}")


def generate_snapshots(
    profiles: list[dict[str, Any]], resolve: Resolver
) -> dict[str, list[dict[str, Any]]]:
    """Snapshots for several profiles, by URL, built in base-before-derived order.

    A profile whose base is another profile of the list is built after it, against the fresh
    snapshot; ``resolve`` supplies everything else (core resources and datatypes).
    """
    pending = {str(p["url"]): p for p in profiles}
    done: dict[str, list[dict[str, Any]]] = {}

    def lookup(url: str) -> dict[str, Any] | None:
        key = url.split("|", 1)[0]
        if key in done:
            return {**pending[key], "snapshot": {"element": done[key]}}
        return resolve(url)

    while len(done) < len(pending):
        ready = [
            url
            for url, p in pending.items()
            if url not in done
            and (p.get("baseDefinition") not in pending or p["baseDefinition"] in done)
        ]
        if not ready:
            raise ProfileError("profiles derive from each other in a cycle: " + ", ".join(pending))
        for url in ready:
            done[url] = generate_snapshot(pending[url], lookup)
    return done
