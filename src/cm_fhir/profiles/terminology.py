"""Value-set expansion and code membership from the loaded ValueSets and CodeSystems. Pure.

Expands what can be expanded locally: ``compose.include`` / ``exclude`` with a system and an
explicit concept list, a whole code system that is loaded with ``content = complete`` (nested
concepts included), ``is-a`` / ``descendent-of`` filters on such a system, and included value sets.
Anything else (a code system that is not loaded, other filters) makes the value set unexpandable:
:meth:`Terminology.expand` returns ``None`` and bindings to it are not checked. Expansions are
cached.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from cm_fhir.profiles.registry import ConformanceRegistry, canonical

Code = tuple[str, str]  # (system, code)


class Terminology:
    """Answers "is this code in that value set?" from local content only."""

    def __init__(self, registry: ConformanceRegistry) -> None:
        self._registry = registry
        self._expansions: dict[str, frozenset[Code] | None] = {}
        self._codes: dict[str, frozenset[str] | None] = {}
        self._system_codes: dict[str, frozenset[str] | None] = {}

    def expand(self, value_set: str) -> frozenset[Code] | None:
        """All (system, code) pairs of ``value_set``, or None when it cannot be expanded."""
        url = canonical(value_set)
        if url not in self._expansions:
            self._expansions[url] = None  # guards against include cycles
            self._expansions[url] = self._expand(url)
        return self._expansions[url]

    def codes(self, value_set: str) -> frozenset[str] | None:
        """The bare codes of ``value_set`` (for ``code``-typed elements)."""
        url = canonical(value_set)
        if url not in self._codes:
            expansion = self.expand(url)
            self._codes[url] = None if expansion is None else frozenset(c for _, c in expansion)
        return self._codes[url]

    def system_codes(self, system: str) -> frozenset[str] | None:
        """Every code of a loaded, complete code system; None when it is not known."""
        if system not in self._system_codes:
            cs = self._registry.code_systems.get(system)
            if cs is None or cs.get("content") != "complete":
                self._system_codes[system] = None
            else:
                self._system_codes[system] = frozenset(c for c, _ in _walk(cs.get("concept", [])))
        return self._system_codes[system]

    def _expand(self, url: str) -> frozenset[Code] | None:
        vs = self._registry.value_sets.get(url)
        if vs is None:
            return None
        compose = vs.get("compose", {})
        included: set[Code] = set()
        for part in compose.get("include", []):
            codes = self._part(part)
            if codes is None:
                return None
            included |= codes
        for part in compose.get("exclude", []):
            codes = self._part(part)
            if codes is None:
                return None
            included -= codes
        return frozenset(included)

    def _part(self, part: dict[str, Any]) -> set[Code] | None:
        system = part.get("system")
        result: set[Code] | None = None
        if system is not None:
            result = self._system_part(str(system), part)
            if result is None:
                return None
        for imported in part.get("valueSet", []):
            codes = self.expand(imported)
            if codes is None:
                return None
            result = set(codes) if result is None else result & codes
        return result or set()

    def _system_part(self, system: str, part: dict[str, Any]) -> set[Code] | None:
        if part.get("concept"):
            return {(system, str(c["code"])) for c in part["concept"]}
        cs = self._registry.code_systems.get(system)
        if cs is None or cs.get("content") != "complete":
            return None
        concepts = cs.get("concept", [])
        filters = part.get("filter", [])
        if not filters:
            return {(system, code) for code, _ in _walk(concepts)}
        result: set[Code] | None = None
        for flt in filters:
            if flt.get("property") != "concept" or flt.get("op") not in ("is-a", "descendent-of"):
                return None
            found = _subtree(concepts, str(flt.get("value")), flt["op"] == "is-a")
            codes = {(system, code) for code in found}
            result = codes if result is None else result & codes
        return result


def _walk(
    concepts: list[dict[str, Any]], parent: str | None = None
) -> Iterator[tuple[str, str | None]]:
    for concept in concepts:
        code = str(concept["code"])
        yield code, parent
        yield from _walk(concept.get("concept", []), code)


def _subtree(concepts: list[dict[str, Any]], root: str, include_root: bool) -> set[str]:
    for concept in concepts:
        if concept["code"] == root:
            below = {code for code, _ in _walk(concept.get("concept", []))}
            return below | {root} if include_root else below
        found = _subtree(concept.get("concept", []), root, include_root)
        if found:
            return found
    return set()
