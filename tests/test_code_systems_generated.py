"""The CodeSystems in ``profiles/`` follow from ``mappings/code-systems.yaml``; a site's follow from
its override, written by ``cm-fhir mappings code-systems``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from cm_fhir.fhir.code_systems import code_system_json, code_system_resources
from cm_fhir.mapping.registry import default_registry, load_registry
from cm_fhir.profiles import bundled_profiles_dir

PROFILES = bundled_profiles_dir()


def test_every_shipped_code_system_is_generated_from_the_mappings() -> None:
    generated = code_system_resources(default_registry())
    assert len(generated) == len(default_registry().code_systems)  # all under our base
    for resource in generated:
        shipped = PROFILES / f"CodeSystem-{resource['id']}.json"
        assert shipped.read_text(encoding="utf-8") == code_system_json(resource), shipped.name
    ours = {p.name for p in PROFILES.glob("CodeSystem-*.json")}
    # The one shipped CodeSystem not in code-systems.yaml: local HL7v2 diagnosis codes, whose
    # content is not-present (any DG1 code a site sends).
    assert ours - {f"CodeSystem-{r['id']}.json" for r in generated} == {
        "CodeSystem-cm-hl7v2-diagnosis.json"
    }


def test_mappings_code_systems_writes_a_site_extension(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "code-systems.yaml").write_text(
        "task_code:\n  concepts:\n    pharmacy-consult: Pharmacy consultation\n", encoding="utf-8"
    )
    out = tmp_path / "out"
    out.mkdir()
    cli = str(Path(sys.executable).parent / "cm-fhir")
    done = subprocess.run(
        [cli, "mappings", "code-systems", str(out), "--mappings", str(site)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    task_codes = json.loads((out / "CodeSystem-cm-task-code.json").read_text(encoding="utf-8"))
    concepts = {c["code"]: c["display"] for c in task_codes["concept"]}
    assert concepts["pharmacy-consult"] == "Pharmacy consultation"
    assert task_codes["count"] == len(load_registry(site).code_systems["task_code"].concepts)
    assert concepts.keys() > {"initial-assessment", "home-visit"}
