"""Compiled StructureDefinitions: a snapshot turned into a tree of element nodes. Pure.

Each :class:`ElementNode` holds what validation needs about one element, in a form that is fast to
walk: cardinality, allowed types (with reference targets as resource type names), fixed and pattern
values, the binding, the constraints, slicing and its slices, and the children keyed by the JSON
property names an instance uses (``valueString`` for ``value[x]`` of type string). Compilation is
done once per StructureDefinition and cached by the validator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cm_fhir.errors import ProfileError
from cm_fhir.profiles.registry import ConformanceRegistry, canonical

_FHIR_TYPE_EXT = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
_SYSTEM_TYPES = {
    "http://hl7.org/fhirpath/System.String": "string",
    "http://hl7.org/fhirpath/System.Boolean": "boolean",
    "http://hl7.org/fhirpath/System.Integer": "integer",
    "http://hl7.org/fhirpath/System.Decimal": "decimal",
    "http://hl7.org/fhirpath/System.Date": "date",
    "http://hl7.org/fhirpath/System.DateTime": "dateTime",
    "http://hl7.org/fhirpath/System.Time": "time",
}


@dataclass(slots=True, frozen=True)
class TypeRef:
    code: str
    profiles: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()  # resource type names a Reference may point to


@dataclass(slots=True, frozen=True)
class Discriminator:
    kind: str  # value | pattern | type | exists | profile
    path: str


@dataclass(slots=True, frozen=True)
class Slicing:
    discriminators: tuple[Discriminator, ...]
    rules: str  # open | closed | openAtEnd


@dataclass(slots=True, frozen=True)
class Binding:
    strength: str
    value_set: str


@dataclass(slots=True, frozen=True)
class Constraint:
    key: str
    severity: str
    human: str
    expression: str
    source: str


_UNSET: Any = object()


@dataclass(slots=True, eq=False)
class ElementNode:
    id: str
    path: str
    name: str
    min: int
    max: int | None  # None: unbounded
    is_array: bool
    types: tuple[TypeRef, ...]
    fhirpath_type: str
    fixed: Any = _UNSET
    pattern: Any = _UNSET
    binding: Binding | None = None
    constraints: tuple[Constraint, ...] = ()
    must_support: bool = False
    slicing: Slicing | None = None
    slice_name: str | None = None
    slices: list[ElementNode] = field(default_factory=list)
    children: dict[str, ElementNode] = field(default_factory=dict)
    keys: dict[str, tuple[ElementNode, str]] = field(default_factory=dict)
    json_keys: tuple[tuple[str, str], ...] = ()  # (JSON property, type code) for this element
    content_reference: ElementNode | None = None

    @property
    def has_fixed(self) -> bool:
        return self.fixed is not _UNSET

    @property
    def has_pattern(self) -> bool:
        return self.pattern is not _UNSET

    @property
    def display_name(self) -> str:
        return self.name.removesuffix("[x]")

    def structure(self) -> ElementNode:
        """The node whose children describe this element's content."""
        return self.content_reference or self


@dataclass(slots=True, eq=False)
class CompiledProfile:
    url: str
    type: str
    kind: str
    root: ElementNode
    contexts: tuple[str, ...] = ()


def type_code(raw: dict[str, Any]) -> str:
    code = str(raw.get("code", ""))
    if code in _SYSTEM_TYPES:
        for ext in raw.get("extension", []):
            if ext.get("url") == _FHIR_TYPE_EXT:
                return str(ext.get("valueUrl") or ext.get("valueUri"))
        return _SYSTEM_TYPES[code]
    return code


def choice_key(name: str, code: str) -> str:
    return name[:-3] + code[:1].upper() + code[1:]


def compile_profile(sd: dict[str, Any], registry: ConformanceRegistry) -> CompiledProfile:
    """Compile one StructureDefinition (it must have a snapshot)."""
    url = str(sd.get("url"))
    elements = sd.get("snapshot", {}).get("element")
    if not elements:
        raise ProfileError(f"{url}: no snapshot; run `cm-fhir profiles snapshot`")
    nodes: dict[str, ElementNode] = {}
    references: list[tuple[ElementNode, str]] = []
    root: ElementNode | None = None
    for raw in elements:
        node = _node(raw, registry)
        nodes[node.id] = node
        if raw.get("contentReference"):
            references.append((node, str(raw["contentReference"]).lstrip("#")))
        if root is None:
            root = node
            continue
        parent_id, _, last = node.id.rpartition(".")
        name, _, slice_name = last.partition(":")
        if slice_name:
            sliced = nodes.get(f"{parent_id}.{name}")
            if sliced is None:
                raise ProfileError(f"{url}: slice {node.id} has no sliced element")
            sliced.slices.append(node)
            continue
        parent = nodes.get(parent_id)
        if parent is None:
            raise ProfileError(f"{url}: element {node.id} has no parent in the snapshot")
        parent.children[name] = node
    assert root is not None
    for node, target in references:
        by_path = next((n for n in nodes.values() if n.path == target and not n.slice_name), None)
        if by_path is None:
            raise ProfileError(f"{url}: contentReference #{target} not found")
        node.content_reference = by_path
    for node in nodes.values():
        node.keys = _keys(node)
        node.json_keys = _json_keys(node)
    contexts = tuple(str(c.get("expression")) for c in sd.get("context", []))
    return CompiledProfile(url, str(sd.get("type")), str(sd.get("kind")), root, contexts)


def _keys(node: ElementNode) -> dict[str, tuple[ElementNode, str]]:
    keys: dict[str, tuple[ElementNode, str]] = {}
    for name, child in node.children.items():
        if name.endswith("[x]"):
            for t in child.types:
                keys[choice_key(name, t.code)] = (child, t.code)
        else:
            keys[name] = (child, child.types[0].code if child.types else "BackboneElement")
    return keys


def _json_keys(node: ElementNode) -> tuple[tuple[str, str], ...]:
    if node.name.endswith("[x]"):
        return tuple((choice_key(node.name, t.code), t.code) for t in node.types)
    return ((node.name, node.types[0].code if node.types else "BackboneElement"),)


def _node(raw: dict[str, Any], registry: ConformanceRegistry) -> ElementNode:
    element_id = str(raw.get("id") or raw["path"])
    path = str(raw["path"])
    base = raw.get("base", {})
    base_max = str(base.get("max", raw.get("max", "*")))
    high = str(raw.get("max", "*"))
    fixed = _UNSET
    pattern = _UNSET
    for key, value in raw.items():
        if key.startswith("fixed"):
            fixed = value
        elif key.startswith("pattern"):
            pattern = value
    binding = raw.get("binding")
    types = tuple(_type_ref(t, registry) for t in raw.get("type", []))
    base_path = str(base.get("path", path))
    if base_path == "Resource.id":  # typed System.String in R4 but lexically an id
        types = (TypeRef("id"),)
    is_complex = (
        len(types) == 1
        and types[0].code[:1].isupper()
        and types[0].code not in ("BackboneElement", "Element")
    )
    return ElementNode(
        id=element_id,
        path=path,
        name=element_id.rpartition(".")[2].partition(":")[0] if "." in element_id else path,
        min=int(raw.get("min", 0)),
        max=None if high == "*" else int(high),
        is_array=base_max != "1" and "." in path,
        types=types,
        fhirpath_type=types[0].code if is_complex else base_path,
        fixed=fixed,
        pattern=pattern,
        binding=(
            Binding(str(binding["strength"]), canonical(str(binding["valueSet"])))
            if binding and binding.get("valueSet")
            else None
        ),
        constraints=tuple(
            Constraint(
                key=str(c.get("key")),
                severity=str(c.get("severity")),
                human=str(c.get("human", "")),
                expression=str(c.get("expression", "")),
                source=str(c.get("source", "")),
            )
            for c in raw.get("constraint", [])
            if c.get("expression")
        ),
        must_support=bool(raw.get("mustSupport", False)),
        slicing=_slicing(raw.get("slicing")),
        slice_name=raw.get("sliceName"),
    )


def _slicing(raw: dict[str, Any] | None) -> Slicing | None:
    if not raw:
        return None
    return Slicing(
        tuple(Discriminator(str(d["type"]), str(d["path"])) for d in raw.get("discriminator", [])),
        str(raw.get("rules", "open")),
    )


def _type_ref(raw: dict[str, Any], registry: ConformanceRegistry) -> TypeRef:
    targets = []
    for profile in raw.get("targetProfile", []):
        sd = registry.structure_definition(profile)
        targets.append(str(sd["type"]) if sd else canonical(profile).rpartition("/")[2])
    return TypeRef(type_code(raw), tuple(raw.get("profile", [])), tuple(targets))
