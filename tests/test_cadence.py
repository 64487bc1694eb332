"""Contact cadence: a model's recurring contacts (programmes.yaml) as tasks, one open at a time.
Pure, then through the cases API on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from api_case_helpers import case_json, client, example
from api_fixtures import API_KEY
from cm_fhir.api.app import create_app
from cm_fhir.domain import Case, CaseStatus, TaskStatus
from cm_fhir.mapping.catalog import check_mappings
from cm_fhir.mapping.programmes import load_programmes
from cm_fhir.settings import load_settings
from cm_fhir.workflow.cadence import with_contacts

SITE = """\
programmes:
  payer-case-management:
    models:
      intensive:
        contacts:
          - kind: home-visit
            description: Weekly home visit
            every: 7d
"""
CASE = "hiv-adherence-payer"  # payer case management, intensive and strengths-based, active
NOW = datetime(2025, 10, 1, 12, tzinfo=UTC)
FIRST = "contact-intensive-home-visit-1"


@pytest.fixture
def site(tmp_path: Path) -> Path:
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "programmes.yaml").write_text(SITE, encoding="utf-8")
    return folder


def contacts(case: Case) -> list[tuple[str, TaskStatus, datetime]]:
    return [(t.id, t.status, t.due) for t in case.tasks if t.id.startswith("contact-")]


def test_one_open_contact_at_a_time_each_due_a_week_after_the_last(site: Path) -> None:
    spec = load_programmes(site)
    case = example(CASE)
    first = with_contacts(case, spec, NOW)
    assert contacts(first) == [(FIRST, TaskStatus.REQUESTED, case.opened + timedelta(days=7))]
    assert first.task(FIRST).owner == case.case_manager
    assert with_contacts(first, spec, NOW) == first  # still open: nothing more
    done = first.update_task_status(FIRST, TaskStatus.IN_PROGRESS).update_task_status(
        FIRST, TaskStatus.COMPLETED
    )
    second = with_contacts(done, spec, NOW)
    assert contacts(second)[-1] == (
        "contact-intensive-home-visit-2",
        TaskStatus.REQUESTED,
        case.opened + timedelta(days=14),
    )


def test_no_contacts_without_the_model_or_once_closed(site: Path) -> None:
    spec = load_programmes(site)
    case = example(CASE)
    assert with_contacts(case.model_copy(update={"models": ("brokerage",)}), spec, NOW) == (
        case.model_copy(update={"models": ("brokerage",)})
    )
    closed = example("workers-comp-return-to-work")
    assert closed.status == CaseStatus.CLOSED
    assert with_contacts(closed, spec, NOW) == closed
    assert with_contacts(case, load_programmes(None), NOW) == case  # none bundled


def test_a_contact_kind_not_listed_is_refused(tmp_path: Path) -> None:
    (tmp_path / "programmes.yaml").write_text(SITE.replace("home-visit", "spa-day"), "utf-8")
    [problem] = check_mappings(tmp_path).problems
    assert problem.key == "programmes.payer-case-management.models.intensive.contacts[0].kind"
    assert "unknown code 'spa-day'" in problem.reason


@pytest.fixture
async def site_app(worker_engine: AsyncEngine, site: Path) -> AsyncIterator[FastAPI]:
    settings = load_settings(overrides={"api_keys": API_KEY, "mappings_dir": str(site)})
    app = create_app(settings, engine=worker_engine)
    async with app.router.lifespan_context(app):
        yield app


async def test_the_api_keeps_the_next_contact_open(site_app: FastAPI) -> None:
    case = example(CASE)
    async with client(site_app) as http:
        created = await http.post("/api/cases", json=case_json(case))
        assert created.status_code == 201, created.text
        assert contacts(Case.model_validate_json(created.content))[0][0] == FIRST
        for status in ("in-progress", "completed"):
            moved = await http.post(
                f"/api/cases/{case.id}/tasks/{FIRST}/status", json={"status": status}
            )
            assert moved.status_code == 200, moved.text
        stored = Case.model_validate_json((await http.get(f"/api/cases/{case.id}")).content)
    assert contacts(stored) == [
        (FIRST, TaskStatus.COMPLETED, case.opened + timedelta(days=7)),
        ("contact-intensive-home-visit-2", TaskStatus.REQUESTED, case.opened + timedelta(days=14)),
    ]
