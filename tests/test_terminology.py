"""Terminology: every code we ship means what its display says, and every system we invent is ours.

``reviewed_codes.json`` lists each code of an external code system the examples use, with the
display that was checked against that system's published meaning (ICD-10-CM tabular list, LOINC,
SNOMED CT, HL7 v2 tables, CPT and HCPCS titles); a new or changed code must be added there after
the same review. Codes of systems under our canonical base, or with a ``urn:cm-fhir:`` system,
must come from a CodeSystem shipped in ``profiles/``, each with one canonical URL.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from cm_fhir.domain import Case
from cm_fhir.fhir import map_case
from cm_fhir.mapping.registry import default_registry
from cm_fhir.mapping.rules import load_discharge_rules
from cm_fhir.mapping.screening_rules import Criterion
from cm_fhir.profiles import ConformanceRegistry, bundled_profiles_dir
from cm_fhir.profiles.terminology import Terminology
from scenario_feeds import WORKFLOW_SCENARIOS, workflow_cases
from worker_fixtures import cases, fhir_resources, ingest, rows, settle_worker
from workflow_messages import Visit, hours

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.json"))
BASE = "http://cm-fhir.org/fhir"
ICD9CM = "http://hl7.org/fhir/sid/icd-9-cm"
Json = dict[str, Any]

REVIEWED: dict[tuple[str, str], str] = {
    (c["system"], c["code"]): c["display"]
    for c in json.loads((Path(__file__).parent / "reviewed_codes.json").read_text())["codes"]
}
# Ours to invent freely (an example payer's own measures).
FOREIGN_EXAMPLE_SYSTEMS = ("https://harborhealthplan.example.org/",)


def codings(value: Any) -> list[Json]:
    if isinstance(value, dict):
        here = [value] if isinstance(value.get("system"), str) and "code" in value else []
        return here + [c for item in value.values() for c in codings(item)]
    if isinstance(value, list):
        return [c for item in value for c in codings(item)]
    return []


@pytest.fixture(scope="module")
def terminology() -> tuple[ConformanceRegistry, Terminology]:
    registry = ConformanceRegistry.from_directory(bundled_profiles_dir())
    return registry, Terminology(registry)


def check_ours(coding: Json, shipped: tuple[ConformanceRegistry, Terminology]) -> None:
    registry, terminology = shipped
    system, code = coding["system"], coding["code"]
    assert not system.startswith("urn:cm-fhir:"), f"{system}: give it a canonical CodeSystem URL"
    if system.startswith(BASE):
        assert system in registry.code_systems, f"{system} is not shipped in profiles/"
        content = registry.code_systems[system]["content"]
        if content == "complete":
            assert code in (terminology.system_codes(system) or set()), (system, code)


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_code_of_an_example_is_reviewed_or_ours(
    example: Path, terminology: tuple[ConformanceRegistry, Terminology]
) -> None:
    for coding in codings(json.loads(example.read_text(encoding="utf-8"))):
        system = coding["system"]
        if system.startswith(BASE) or system.startswith(FOREIGN_EXAMPLE_SYSTEMS):
            check_ours(coding, terminology)
        elif system != "urn:iso:std:iso:4217":  # a currency as a Quantity unit
            key = (system, coding["code"])
            assert key in REVIEWED, f"{key}: review the code and add it to REVIEWED"
            assert coding.get("display") in (None, REVIEWED[key]), key


@pytest.mark.parametrize("name", WORKFLOW_SCENARIOS)
def test_every_system_the_workflow_writes_is_shipped(
    name: str, terminology: tuple[ConformanceRegistry, Terminology]
) -> None:
    for case in workflow_cases(name):
        for coding in codings(map_case(case, validate=False)):
            check_ours(coding, terminology)


def test_mapping_files_name_shipped_code_systems(
    terminology: tuple[ConformanceRegistry, Terminology],
) -> None:
    registry, _ = terminology
    identity = load_discharge_rules().identity
    named = [
        identity.screening_criterion_system,
        identity.default_diagnosis_system,
        *identity.diagnosis_systems.values(),
        *(cs.url for cs in default_registry().code_systems.values()),
    ]
    for url in named:
        assert not url.startswith("urn:cm-fhir:"), url
        if url.startswith(BASE):
            assert url in registry.code_systems, url
    ours = [url for url in registry.code_systems if url.startswith(BASE)]
    ids = [registry.code_systems[url]["id"] for url in ours]
    assert all(url == f"{BASE}/CodeSystem/{i}" for url, i in zip(ours, ids, strict=True))
    assert len(set(ids)) == len(ids)


def test_every_screening_criterion_the_workflow_reports_is_defined(
    terminology: tuple[ConformanceRegistry, Terminology],
) -> None:
    _, shipped = terminology
    system = load_discharge_rules().identity.screening_criterion_system
    kinds = {name.replace("_", "-") for name in Criterion.model_fields} - {"any", "all"}
    assert kinds <= (shipped.system_codes(system) or set())
    assert default_registry().code_systems["screening_criterion"].url == system


def test_the_three_misread_codes_are_gone() -> None:
    text = " ".join(p.read_text(encoding="utf-8") for p in EXAMPLES)
    for code in ("89243-0", "160903007"):
        assert code not in text
    # 768730001 is "Home health aide": used again for what it means, never for a case manager.
    aides = re.findall(r'"code": "768730001", "display": "([^"]+)"', text)
    assert aides == ["Home health aide"]
    case = Case.model_validate_json((ROOT / "examples" / "stroke-inpatient-rehab.json").read_text())
    assert case.goals[0].target is not None
    assert case.goals[0].target.measure.system == f"{BASE}/CodeSystem/cm-goal-measure"


async def test_an_icd9_code_keeps_its_dot_from_dg1_to_the_served_condition(
    worker_engine: AsyncEngine,
) -> None:
    visit = Visit(mrn="MRN-ICD9", visit="V9428", birth="19990101", diagnosis="428.0")
    raw = visit.raw("A01", "D1", hours(0)).replace("^Heart failure^I10", "^Heart failure^I9C")
    await ingest(worker_engine, [raw])
    await settle_worker(worker_engine)
    (row,) = await rows(worker_engine, cases)  # young: the ICD-9 heart failure qualified them
    case = Case.model_validate_json(row.case_json)
    assert [(c.system, c.code) for c in case.reasons] == [(ICD9CM, "428.0")]
    assert case.screening is not None
    assert "diagnosis" in [c.code for c in case.screening.criteria]
    (episode,) = [
        orjson.loads(r.resource)
        for r in await rows(worker_engine, fhir_resources)
        if r.resource_type == "EpisodeOfCare"
    ]
    assert episode["contained"][0]["code"]["coding"][0]["code"] == "428.0"
