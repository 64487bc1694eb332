"""Caseload limits per case manager: programmes.yaml, ``GET /api/case-managers`` and ``/metrics``,
through the real app on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import AsyncEngine

from api_case_helpers import case_json, client, example
from api_fixtures import API_KEY
from cm_fhir.api.app import create_app
from cm_fhir.domain import Case, CaseStatus
from cm_fhir.mapping.catalog import check_mappings
from cm_fhir.mapping.programmes import load_programmes
from cm_fhir.settings import load_settings

SITE_PROGRAMMES = """\
programmes:
  payer-case-management:
    caseload_limit: 5
    models:
      intensive:
        caseload_limit: 1
"""
EXAMPLES = [
    "brain-injury-clinical-cm",
    "hiv-adherence-payer",
    "home-health-plan-of-care",
    "stroke-inpatient-rehab",
    "workers-comp-return-to-work",
]


@pytest.fixture
def site(tmp_path: Path) -> Path:
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "programmes.yaml").write_text(SITE_PROGRAMMES, encoding="utf-8")
    return folder


@pytest.fixture
async def site_app(worker_engine: AsyncEngine, site: Path) -> AsyncIterator[FastAPI]:
    settings = load_settings(overrides={"api_keys": API_KEY, "mappings_dir": str(site)})
    app = create_app(settings, engine=worker_engine)
    async with app.router.lifespan_context(app):
        yield app


def test_limits_follow_the_model_then_the_programme_then_the_default(site: Path) -> None:
    spec = load_programmes(site)
    assert spec.case_limit("payer-case-management", ["strengths-based"]) == 5
    assert spec.case_limit("payer-case-management", ["strengths-based", "intensive"]) == 1
    assert spec.case_limit("hospital-discharge-planning") == 25  # bundled, kept by the merge
    assert spec.case_limit("workers-compensation", ["intensive"]) == spec.caseload_limit == 30
    assert spec.caseload_limit_of([]) == 30
    assert (
        spec.caseload_limit_of(
            [("hospital-discharge-planning", ()), ("targeted-programme", ("intensive",))]
        )
        == 12
    )


def test_a_programme_or_model_code_not_listed_is_refused(tmp_path: Path) -> None:
    (tmp_path / "programmes.yaml").write_text(
        "programmes:\n  payer-case-management:\n    models:\n      hyper: {caseload_limit: 2}\n",
        encoding="utf-8",
    )
    [problem] = check_mappings(tmp_path).problems
    assert problem.key == "programmes.payer-case-management.models.hyper"
    assert "unknown code 'hyper'" in problem.reason
    (tmp_path / "programmes.yaml").write_text("caseload_limit: 0\n", encoding="utf-8")
    [problem] = check_mappings(tmp_path).problems
    assert problem.key == "caseload_limit"


def _copy(case: Case, case_id: str) -> Case:
    return case.model_copy(update={"id": case_id})


async def test_caseloads_in_the_api_and_metrics(site_app: FastAPI) -> None:
    posted = [example(name) for name in EXAMPLES]
    posted.append(_copy(posted[1], "hiv-adherence-payer-2"))
    async with client(site_app) as http:
        for case in posted:
            response = await http.post("/api/cases", json=case_json(case))
            assert response.status_code == 201, response.text
        listed = (await http.get("/api/case-managers")).json()["case_managers"]
        metrics = (await http.get("/metrics")).text

    spec = load_programmes(None)  # the expected limits, computed from the cases posted
    closed = {CaseStatus.CLOSED, CaseStatus.CANCELLED, CaseStatus.ENTERED_IN_ERROR}
    open_cases = [c for c in posted if c.status not in closed]
    by_owner: dict[str, list[Case]] = {}
    for case in open_cases:
        assert case.case_manager is not None
        by_owner.setdefault(str(case.case_manager.display), []).append(case)
    devon = next(o for o in by_owner if o.startswith("Devon"))
    assert [(m["owner"], m["open_cases"]) for m in listed] == [
        (owner, len(held)) for owner, held in sorted(by_owner.items())
    ]
    found = {m["owner"]: m for m in listed}
    assert found[devon]["limit"] == 1  # the site's intensive limit for payer case management
    assert found[devon]["over_limit"] is True
    assert found[devon]["by_programme"] == {"payer-case-management": 2}
    stroke = posted[3]
    assert stroke.case_manager is not None
    dana = found[str(stroke.case_manager.display)]
    assert (dana["limit"], dana["over_limit"]) == (spec.case_limit(stroke.programme), False)
    assert not any(o.startswith("Renee") for o in found)  # the closed case counts for no one

    families = {f.name: f for f in text_string_to_metric_families(metrics)}
    gauge = {s.labels["owner"]: s.value for s in families["cm_fhir_caseload_open_cases"].samples}
    limit = {s.labels["owner"]: s.value for s in families["cm_fhir_caseload_limit"].samples}
    assert gauge == {m["owner"]: m["open_cases"] for m in listed}
    assert limit == {m["owner"]: m["limit"] for m in listed}
