"""A site's own vocabulary: a task kind added through an override folder, with no code change.

The site lists ``pharmacy-consult`` in its ``code-systems.yaml`` and uses it in its
``discharge-rules.yaml``; ``mappings check`` accepts it, and an A01 through the listener's intake
and the worker (SQLite and PostgreSQL) produces a Task coded with it. Without the code-systems
entry, the same rule is refused at load with the file, the key and the code.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from api_case_helpers import case_app, case_json, client, example
from cm_fhir.domain import Case
from cm_fhir.errors import MappingError, MappingSpecError
from cm_fhir.fhir import map_case_json
from cm_fhir.mapping.catalog import check_mappings
from cm_fhir.mapping.registry import default_registry, load_registry
from cm_fhir.service_roles import site_mappings
from cm_fhir.settings import Settings
from cm_fhir.worker import Worker, WorkerConfig
from worker_fixtures import cases, fhir_resources, ingest, rows
from workflow_messages import Visit, hours

__all__ = ["case_app"]

CODE_SYSTEMS = """\
task_code:
  concepts:
    pharmacy-consult: Pharmacy consultation
"""
RULES = """\
admission:
  tasks:
    pharmacy:
      kind: pharmacy-consult
      description: Pharmacist review of home medications
      due: 24h
"""


def site_folder(path: Path, *, code_systems: bool = True) -> Path:
    path.mkdir(exist_ok=True)
    if code_systems:
        (path / "code-systems.yaml").write_text(CODE_SYSTEMS, encoding="utf-8")
    (path / "discharge-rules.yaml").write_text(RULES, encoding="utf-8")
    return path


def test_mappings_check_accepts_a_site_task_kind(tmp_path: Path) -> None:
    site = site_folder(tmp_path / "site")
    assert check_mappings(site).problems == []
    task_codes = load_registry(site).code_systems["task_code"].concepts
    assert task_codes["pharmacy-consult"] == "Pharmacy consultation"
    assert task_codes["initial-assessment"]  # the bundled codes are kept (deep merge)


def test_a_site_task_kind_not_listed_is_refused_at_start_up(tmp_path: Path) -> None:
    site = site_folder(tmp_path / "site", code_systems=False)
    [problem] = check_mappings(site).problems
    assert problem.file == f"{site / 'discharge-rules.yaml'} (over discharge-rules.yaml)"
    assert problem.key == "admission.tasks.pharmacy.kind"
    assert "unknown code 'pharmacy-consult'" in problem.reason
    assert "task_code" in problem.reason
    with pytest.raises(MappingSpecError):
        site_mappings(Settings(mappings_dir=site))


def test_a_code_without_a_display_is_refused(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "code-systems.yaml").write_text(
        "task_code:\n  concepts:\n    pharmacy-consult: ''\n", encoding="utf-8"
    )
    [problem] = check_mappings(site).problems
    assert problem.key == "task_code.concepts.pharmacy-consult"


async def test_an_a01_creates_a_task_of_the_site_kind(
    worker_engine: AsyncEngine, tmp_path: Path
) -> None:
    mappings = site_mappings(Settings(mappings_dir=site_folder(tmp_path / "site")))
    visit = Visit(mrn="MRN-PH1", visit="VPH1")
    await ingest(worker_engine, [visit.raw("A01", "PH-1", hours(0))])
    worker = Worker(
        worker_engine,
        WorkerConfig(retry_delay=0.0),
        rules=mappings.rules,
        maps=mappings.maps,
        registry=mappings.registry,
    )
    result = await worker.run_once()
    assert (result.processed, result.failed) == (1, 0)

    [row] = await rows(worker_engine, cases)
    case = Case.model_validate_json(row.case_json)
    pharmacy = next(t for t in case.tasks if t.id == "pharmacy")
    assert pharmacy.kind == "pharmacy-consult"
    assert pharmacy.description == "Pharmacist review of home medications"
    assert {t.kind for t in case.tasks} == {
        "initial-assessment",
        "payer-notification",
        "pharmacy-consult",
    }

    served = [orjson.loads(r.resource) for r in await rows(worker_engine, fhir_resources)]
    codings = [r["code"]["coding"][0] for r in served if r["resourceType"] == "Task"]
    system = mappings.registry.code_systems["task_code"].url
    assert {"system": system, "code": "pharmacy-consult", "display": "Pharmacy consultation"} in (
        codings
    )

    # The bundled registry does not know the site's code: mapping with it is a clear error.
    with pytest.raises(MappingError, match="unknown code 'pharmacy-consult'"):
        map_case_json(case, default_registry())


async def test_the_api_refuses_a_case_with_an_unlisted_task_kind(
    case_app: FastAPI, worker_engine: AsyncEngine
) -> None:
    case = example("stroke-inpatient-rehab")
    task = case.tasks[0].model_copy(update={"kind": "pharmacy-consult"})
    unknown = case.model_copy(update={"tasks": (task, *case.tasks[1:])})
    async with client(case_app) as http:
        response = await http.post("/api/cases", json=case_json(unknown))
    assert response.status_code == 422, response.text
    message = response.json()["error"]["message"]
    assert "unknown code 'pharmacy-consult'" in message
    assert "task_code" in message
    assert await rows(worker_engine, cases) == []
    assert await rows(worker_engine, fhir_resources) == []
