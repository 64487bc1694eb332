"""The instance walk: one resource checked against compiled element trees. Pure.

:class:`InstanceChecker` visits a resource's JSON together with the :class:`ElementNode` tree of
its profile (or of the base definition), descending into datatypes, extensions, contained and
Bundle entry resources. At each element it checks cardinality, unknown properties, JSON shape and
primitive formats, fixed and pattern values, slices, bindings, references and invariants, and
records issues on a :class:`Run`. Codes, bindings and references are delegated to
:mod:`cm_fhir.profiles.rules`. Issue text never repeats instance values (they may be PHI); it
names the element and what the profile expects.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from cm_fhir.profiles.constraints import SKIPPED, ConstraintEngine
from cm_fhir.profiles.model import CompiledProfile, ElementNode
from cm_fhir.profiles.primitives import PRIMITIVE_TYPES, check_primitive, is_primitive
from cm_fhir.profiles.rules import Catalog, Run, check_binding, check_coding, check_reference
from cm_fhir.profiles.slicing import assign_slices, matches_pattern

_NO_TYPE_TREE = frozenset({"BackboneElement", "Element", "Resource"})


class InstanceChecker:
    """Walks instances; holds no per-call state (that lives on :class:`Run`)."""

    def __init__(self, catalog: Catalog, engine: ConstraintEngine) -> None:
        self.catalog = catalog
        self.engine = engine
        # Caches by id() of compiled nodes, which live as long as the catalog that holds them.
        self._layouts: dict[int, _Layout] = {}
        self._json_keys: dict[int, tuple[tuple[str, str, str], ...]] = {}
        self._type_trees: dict[tuple[int, str], CompiledProfile | None] = {}
        self._extra: dict[tuple[int, int], tuple[Any, ...]] = {}
        self._resource_types: dict[str, bool] = {}

    # -- resources --------------------------------------------------------------------------
    def check_resource(
        self, resource: dict[str, Any], expr: str, run: Run, profiles: list[str] | None = None
    ) -> None:
        rtype = resource.get("resourceType")
        if not isinstance(rtype, str):
            run.error("structure", expr, "resourceType is missing: not a FHIR resource")
            return
        if not self.catalog.is_resource_type(rtype):
            run.error("structure", expr, f"'{rtype}' is not an R4 resource type")
            return
        compiled = self._profiles_for(resource, rtype, expr, run, profiles)
        if not compiled:
            run.warning("not-supported", expr, f"no definition of {rtype} is loaded; not checked")
            return
        run.resources.append(resource)
        try:
            for profile in compiled:
                self.check_object(resource, profile.root, rtype, expr, run, root=True)
        finally:
            run.resources.pop()

    def _profiles_for(
        self, resource: dict[str, Any], rtype: str, expr: str, run: Run, extra: list[str] | None
    ) -> list[CompiledProfile]:
        meta = resource.get("meta")
        urls = list(extra or [])
        if isinstance(meta, dict) and isinstance(meta.get("profile"), list):
            urls += [u for u in meta["profile"] if isinstance(u, str) and u not in urls]
        compiled = []
        for url in urls:
            profile = self.catalog.profile(url)
            if profile is None:
                run.warning(
                    "not-supported", expr, f"profile {url} is not loaded; checked against the base"
                )
            elif profile.type != rtype:
                run.error("structure", expr, f"profile {url} is for {profile.type}, not {rtype}")
            else:
                compiled.append(profile)
        if not compiled:
            base = self.catalog.profile(f"http://hl7.org/fhir/StructureDefinition/{rtype}")
            compiled = [base] if base else []
        return compiled

    # -- complex values ---------------------------------------------------------------------
    def check_object(
        self,
        value: dict[str, Any],
        node: ElementNode,
        tcode: str,
        expr: str,
        run: Run,
        root: bool = False,
    ) -> None:
        type_tree = None if root or tcode in _NO_TYPE_TREE else self._type_tree(node, tcode, value)
        owner = node.structure()
        if not owner.children:
            if type_tree is None:
                return
            owner = type_tree.root
        keys = owner.keys
        layout = self._layouts.get(id(owner))
        if layout is None:
            layout = self._layouts[id(owner)] = _Layout(owner)
        to_check = dict(layout.always)
        for key in value:
            known = keys.get(key)
            if known is not None:
                to_check[layout.order[id(known[0])]] = known[0]
                continue
            if root and key == "resourceType":
                continue
            if key.startswith("_"):
                known = keys.get(key[1:])
                if known is not None and is_primitive(known[1]):
                    to_check[layout.order[id(known[0])]] = known[0]
                    continue
            run.error("structure", f"{expr}.{key}", _unknown_text(key, owner))
        # Present elements, and absent ones that are required or must-support, in profile order.
        for index in sorted(to_check):
            self.check_child(value, to_check[index], owner, expr, run)
        if not (root and "resourceType" in value):
            for k, v in value.items():
                if k != "id" and v is not None and v != []:
                    break
            else:
                run.error(
                    "invariant", expr, "ele-1: All FHIR elements must have a @value or children"
                )
        if tcode == "Extension" and _present(value.get("extension")) == _has_value_x(value):
            run.error("invariant", expr, "ext-1: Must have either extensions or value[x], not both")
        if root and isinstance(value.get("contained"), list):
            _check_contained_referenced(value, expr, run)
        if node.constraints:
            fhirpath_type = rtype if (rtype := value.get("resourceType")) and root else None
            self._constraints(
                node.constraints, value, fhirpath_type or node.fhirpath_type, expr, run
            )
        if type_tree is not None and type_tree.root is not node:
            extra = self._extra.get((id(node), id(type_tree.root)))
            if extra is None:
                seen = {c.key for c in node.constraints}
                extra = tuple(c for c in type_tree.root.constraints if c.key not in seen)
                self._extra[(id(node), id(type_tree.root))] = extra
            if extra:
                self._constraints(extra, value, type_tree.root.fhirpath_type, expr, run)

    def _type_tree(
        self, node: ElementNode, tcode: str, value: dict[str, Any]
    ) -> CompiledProfile | None:
        if tcode == "Extension":
            return self._find_type_tree(node, tcode, value)
        key = (id(node), tcode)
        if key not in self._type_trees:
            self._type_trees[key] = self._find_type_tree(node, tcode, value)
        return self._type_trees[key]

    def _find_type_tree(
        self, node: ElementNode, tcode: str, value: dict[str, Any]
    ) -> CompiledProfile | None:
        for t in node.types:
            if t.code == tcode and t.profiles:
                found = self.catalog.profile(t.profiles[0])
                if found is not None:
                    return found
        if tcode == "Extension":
            url = value.get("url")
            if isinstance(url, str) and ":" in url:
                found = self.catalog.profile(url)
                if found is not None:
                    return found
        return self.catalog.profile(f"http://hl7.org/fhir/StructureDefinition/{tcode}")

    def check_child(
        self, value: dict[str, Any], child: ElementNode, owner: ElementNode, expr: str, run: Run
    ) -> None:
        items: list[tuple[Any, Any, str, str]] = []
        json_keys = self._json_keys.get(id(child))
        if json_keys is None:
            json_keys = self._json_keys[id(child)] = tuple(
                (k, t, f"_{k}") for k, t in child.json_keys
            )
        if len(json_keys) == 1 and not child.is_array and child.slicing is None:
            # The common case, without the general bookkeeping: one single-valued element.
            key, tcode, companion = json_keys[0]
            raw, ext = value.get(key), value.get(companion)
            if (key in value or companion in value) and not (
                isinstance(raw, list) or isinstance(ext, list)
            ):
                if child.max == 0:
                    where = f"{expr}.{child.display_name}"
                    text = "is not allowed by the profile (max 0)"
                    run.error("structure", where, f"{child.display_name} {text}")
                self.check_item(raw, ext, tcode, child, owner, f"{expr}.{key}", run)
                return
        present = [(k, t) for k, t, companion in json_keys if k in value or companion in value]
        if len(present) > 1:
            run.error(
                "structure",
                f"{expr}.{child.display_name}",
                f"only one type of {child.name} may be given; found "
                + ", ".join(k for k, _ in present),
            )
        for key, tcode in present:
            items += self._items(value, key, tcode, child, expr, run)
        where = f"{expr}.{child.display_name}"
        count = len(items)
        if count < child.min:
            run.error("required", where, _missing_text(child, count))
        elif child.max is not None and count > child.max:
            text = (
                "is not allowed by the profile (max 0)"
                if child.max == 0
                else f"occurs {count} times; at most {child.max} allowed"
            )
            run.error("structure", where, f"{child.display_name} {text}")
        elif count == 0 and child.must_support:
            run.information(
                "informational", where, f"must-support element {child.display_name} is absent"
            )
        targets: list[ElementNode | None] = [None] * count
        if child.slicing is not None and child.slices:
            targets = assign_slices([i[0] for i in items], [i[3] for i in items], child, where, run)
        for (raw, ext, tcode, item_expr), target in zip(items, targets, strict=True):
            self.check_item(raw, ext, tcode, target or child, owner, item_expr, run)

    def _items(
        self, value: dict[str, Any], key: str, tcode: str, child: ElementNode, expr: str, run: Run
    ) -> list[tuple[Any, Any, str, str]]:
        raw, ext = value.get(key), value.get(f"_{key}")
        if not child.is_array:
            if isinstance(raw, list) or isinstance(ext, list):
                run.error(
                    "structure", f"{expr}.{key}", f"{key} must be a single value, not an array"
                )
                return []
            return [(raw, ext, tcode, f"{expr}.{key}")]
        raws = _as_list(raw, f"{expr}.{key}", run)
        exts = _as_list(ext, f"{expr}._{key}", run)
        size = max(len(raws), len(exts))
        return [
            (
                raws[i] if i < len(raws) else None,
                exts[i] if i < len(exts) else None,
                tcode,
                f"{expr}.{key}[{i}]",
            )
            for i in range(size)
        ]

    # -- single values ----------------------------------------------------------------------
    def check_item(
        self,
        raw: Any,
        ext: Any,
        tcode: str,
        node: ElementNode,
        owner: ElementNode,
        expr: str,
        run: Run,
    ) -> None:
        if tcode in PRIMITIVE_TYPES:
            self._check_primitive(raw, ext, tcode, node, expr, run)
            return
        is_resource = self._resource_types.get(tcode)
        if is_resource is None:
            is_resource = self._resource_types[tcode] = (
                tcode == "Resource" or self.catalog.is_resource_type(tcode)
            )
        if is_resource:
            if isinstance(raw, dict):
                self.check_resource(raw, expr, run)
            else:
                run.error("structure", expr, "must be a JSON object holding a resource")
            return
        if not isinstance(raw, dict):
            run.error("structure", expr, f"must be a JSON object ({tcode})")
            return
        self._fixed_and_pattern(raw, node, expr, run)
        if node.binding is not None:
            check_binding(raw, tcode, node.binding, self.catalog, expr, run)
        if tcode == "Coding":
            check_coding(raw, self.catalog, expr, run)
        elif tcode == "Reference":
            check_reference(raw, node, self.catalog, expr, run)
        elif tcode == "Extension":
            self._check_extension_context(raw, node, owner, expr, run)
        self.check_object(raw, node, tcode, expr, run)

    def _check_primitive(
        self, raw: Any, ext: Any, tcode: str, node: ElementNode, expr: str, run: Run
    ) -> None:
        if raw is None and ext is None:
            run.error("structure", expr, "is null without a value or extension")
            return
        if raw is not None:
            problem = check_primitive(tcode, raw)
            if problem:
                run.error("value", expr, f"{node.display_name} {problem}")
                return
            self._fixed_and_pattern(raw, node, expr, run)
            if node.binding is not None:
                check_binding(raw, tcode, node.binding, self.catalog, expr, run)
        if ext is not None:
            element = self.catalog.profile("http://hl7.org/fhir/StructureDefinition/Element")
            if not isinstance(ext, dict):
                run.error("structure", expr, "the _ companion must be a JSON object")
            elif element is not None:
                self.check_object(ext, element.root, "Element", expr, run, root=True)

    def _fixed_and_pattern(self, raw: Any, node: ElementNode, expr: str, run: Run) -> None:
        if node.has_fixed and raw != node.fixed:
            run.error("value", expr, f"must be exactly the fixed value {_show(node.fixed)}")
        if node.has_pattern and not matches_pattern(raw, node.pattern):
            run.error("value", expr, f"must match the pattern {_show(node.pattern)}")

    def _check_extension_context(
        self, raw: dict[str, Any], node: ElementNode, owner: ElementNode, expr: str, run: Run
    ) -> None:
        url = raw.get("url")
        if not isinstance(url, str) or ":" not in url:
            return
        definition = self.catalog.profile(url)
        if definition is None:
            run.information(
                "informational",
                expr,
                f"extension {url} is not known; only its structure is checked",
            )
            return
        allowed = {"Element", "Resource", "DomainResource", owner.path, owner.fhirpath_type}
        if definition.contexts and not allowed.intersection(definition.contexts):
            run.warning(
                "business-rule",
                expr,
                f"extension {url} is defined for {', '.join(definition.contexts)}, "
                f"not for {owner.path}; strict validators reject it here",
            )

    def _constraints(
        self, constraints: Sequence[Any], value: Any, fhirpath_type: str, expr: str, run: Run
    ) -> None:
        for c in constraints:
            if c.severity != "error" or c.key in SKIPPED:
                continue
            result = self.engine.evaluate(c.key, c.expression, value, fhirpath_type, run.resource)
            if result is None:
                run.information(
                    "informational", expr, f"constraint {c.key} could not be evaluated; not checked"
                )
            elif not result:
                run.error("invariant", expr, f"{c.key}: {c.human}")


class _Layout:
    """Per element: each child's position, and the children checked even when absent (required,
    must-support, or sliced: a slice may be required when its element is not)."""

    __slots__ = ("_owner", "always", "order")

    def __init__(self, owner: ElementNode) -> None:
        self._owner = owner  # keeps the node alive while its id() is a cache key
        children = list(owner.children.values())
        self.order = {id(child): index for index, child in enumerate(children)}
        self.always = {
            index: child
            for index, child in enumerate(children)
            if child.min > 0 or child.must_support or child.slices
        }


def _check_contained_referenced(resource: dict[str, Any], expr: str, run: Run) -> None:
    """dom-3: each contained resource is referenced from the container or refers to it."""
    local_refs: set[str] = set()
    _collect_local_refs(resource, local_refs)
    for index, contained in enumerate(resource["contained"]):
        if not isinstance(contained, dict):
            continue
        inner: set[str] = set()
        _collect_local_refs(contained, inner)
        if f"#{contained.get('id')}" not in local_refs and "#" not in inner:
            run.error(
                "invariant",
                f"{expr}.contained[{index}]",
                "dom-3: a contained resource must be referenced from the resource that holds it",
            )


def _collect_local_refs(value: Any, found: set[str]) -> None:
    if isinstance(value, dict):
        for item in value.values():
            _collect_local_refs(item, found)
    elif isinstance(value, list):
        for item in value:
            _collect_local_refs(item, found)
    elif isinstance(value, str) and value.startswith("#"):
        found.add(value)


def _present(value: Any) -> bool:
    """Whether a JSON value counts as a child in FHIRPath: ``null`` and ``[]`` are nothing."""
    return value is not None and value != []


def _has_value_x(value: dict[str, Any]) -> bool:
    return any(k.startswith("value") and _present(v) for k, v in value.items())


def _as_list(value: Any, expr: str, run: Run) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        run.error("structure", expr, "must be a JSON array")
        return [value]
    if not value:
        run.error("structure", expr, "an empty array is not valid R4 JSON: leave the element out")
    return value


def _missing_text(child: ElementNode, count: int) -> str:
    found = "is missing" if count == 0 else f"occurs {count} times"
    return f"required element {child.display_name} {found}; at least {child.min} needed"


def _unknown_text(key: str, owner: ElementNode) -> str:
    for child in owner.children.values():
        if child.name.endswith("[x]") and key.startswith(child.display_name):
            allowed = ", ".join(k for k, _ in child.json_keys)
            return f"'{key}' is not an allowed type for {child.name} here; use one of: {allowed}"
    return f"unknown element '{key}': not defined in {owner.path}"


def _show(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)
