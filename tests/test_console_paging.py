"""Every list of the console pages with the API's cursor, on SQLite and PostgreSQL: with one or
two items a page, following "Next page" (a link, or the POSTed form where the filters may name a
patient) lists every item exactly once: messages, dead letters, outbox, cases, the worklist's
sections and reviews."""

from __future__ import annotations

import html
import re

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from api_case_helpers import TOKENS, case_app, case_json, client, example
from api_fixtures import API_KEY
from cm_fhir.console.panels import cases, dead_letters, messages, outbox, reviews, worklist
from cm_fhir.fhir.pas_request import pas_request_bundle
from cm_fhir.mapping.payer_exchange import default_payer_exchange
from cm_fhir.mapping.registry import default_registry
from cm_fhir.store.tables import InboxState, inbox_messages
from console_helpers import hidden, signed_in
from pas_samples import review, stroke_case
from worker_fixtures import ingest, settle_worker
from workflow_messages import Visit, hours

__all__ = ["case_app"]

PAGER_LINK = re.compile(r'<p class="pager"><a href="([^"]+)"')


@pytest.fixture(autouse=True)
def _small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    for panel in (cases, dead_letters, messages, outbox, reviews):
        monkeypatch.setattr(panel, "PAGE_SIZE", 1)
    monkeypatch.setattr(worklist, "PAGE_SIZE", 2)
    monkeypatch.setitem(TOKENS, "claim-token", frozenset({"system/Claim.c"}))


async def _load(app: FastAPI, engine: AsyncEngine) -> None:
    visits = [Visit(mrn=f"MRN-CP-{n}", visit=f"VCP{n}") for n in range(3)]
    await ingest(engine, [v.raw("A01", f"CP-{n}", hours(0)) for n, v in enumerate(visits)])
    await settle_worker(engine)
    async with engine.begin() as connection:
        await connection.execute(
            update(inbox_messages).values(state=InboxState.DEAD_LETTERED.value, reason="boom")
        )
    async with client(app) as http:
        for name in ("stroke-inpatient-rehab", "hiv-adherence-payer"):
            created = await http.post("/api/cases", json=case_json(example(name)))
            assert created.status_code == 201, created.text
    async with client(app, "claim-token") as http:
        for n in range(3):
            body = pas_request_bundle(
                stroke_case(),
                review(id=f"ur{n + 1}", requested=review().requested.replace(hour=9 + n)),
                default_payer_exchange(),
                default_registry().canonical_base,
            )
            assert (await http.post("/fhir/Claim/$submit", json=body)).status_code == 200


async def _walk_links(http: httpx.AsyncClient, start: str, rows: re.Pattern[str]) -> list[str]:
    seen: list[str] = []
    url: str | None = start
    while url is not None:
        page = await http.get(url)
        assert page.status_code == 200, (url, page.text[:300])
        text = page.text
        if "section=" in url or url.endswith("/worklist"):
            text = text.split('<section aria-labelledby="s-2">')[0]  # the Overdue section
        seen += rows.findall(text)
        found = PAGER_LINK.search(text)
        url = html.unescape(found.group(1)) if found else None
        assert len(seen) < 100
    return seen


async def _walk_forms(http: httpx.AsyncClient, path: str, rows: re.Pattern[str]) -> list[str]:
    page = await http.get(path)
    seen = rows.findall(page.text)
    while 'name="cursor" value="' in page.text:
        form = {"csrf": hidden(page.text, "csrf"), "cursor": hidden(page.text, "cursor")}
        page = await http.post(path, data=form)
        assert page.status_code == 200, page.text[:300]
        seen += rows.findall(page.text)
        assert len(seen) < 100
    return seen


async def _api_count(app: FastAPI, path: str) -> int:
    route, _, query = path.partition("?")
    params = dict(part.split("=") for part in query.split("&") if part)
    async with client(app) as http:
        answer = await http.get(route, params={**params, "limit": "200"})
    return len(answer.json()["items"])


async def test_every_console_list_pages_through_every_item_once(
    case_app: FastAPI, worker_engine: AsyncEngine
) -> None:
    await _load(case_app, worker_engine)
    async with signed_in(case_app, API_KEY) as http:
        listed = {
            "/api/dead-letters": await _walk_links(
                http, "/console/dead-letters", re.compile(r'<td id="dl-(\d+)">')
            ),
            "/api/outbox/items": await _walk_links(
                http, "/console/outbox", re.compile(r'data-outbox-entry="(\d+)"')
            ),
            "/api/utilization-reviews": await _walk_links(
                http, "/console/reviews", re.compile(r'<tr data-review="([^"]+)">')
            ),
            "/api/tasks?overdue=true": await _walk_links(
                http, "/console/worklist", re.compile(r'data-task-status="([^"]+)"')
            ),
            "/api/messages": await _walk_forms(
                http, "/console/messages", re.compile(r'<a href="/console/messages/(\d+)">')
            ),
            "/api/cases": await _walk_forms(
                http, "/console/cases", re.compile(r'<tr><td><a href="/console/cases/([^"]+)">')
            ),
        }
    for path, seen in listed.items():
        assert len(seen) == len(set(seen)), (path, seen)
        assert len(seen) == await _api_count(case_app, path) >= 3, (path, seen)


async def test_the_worklists_cases_in_transition_page_through_every_case_once(
    case_app: FastAPI, worker_engine: AsyncEngine
) -> None:
    visits = [Visit(mrn=f"MRN-TR-{n}", visit=f"VTR{n}") for n in range(5)]
    admits = [v.raw("A01", f"TRA-{n}", hours(0)) for n, v in enumerate(visits)]
    discharges = [v.raw("A03", f"TRD-{n}", hours(30)) for n, v in enumerate(visits)]
    await ingest(worker_engine, admits + discharges)
    await settle_worker(worker_engine)
    transition = re.compile(r'data-transition-case="([^"]+)"')
    seen: list[str] = []
    pages = 0
    async with signed_in(case_app, API_KEY) as http:
        url: str | None = "/console/worklist"
        while url is not None:
            pages += 1
            page = await http.get(url)
            assert page.status_code == 200, page.text[:300]
            part = page.text.split('<section aria-labelledby="transition-heading">')[1]
            seen += transition.findall(part)
            found = PAGER_LINK.search(part)
            url = html.unescape(found.group(1)) if found else None
            assert len(seen) < 50
    assert len(seen) == len(set(seen)), seen
    assert len(seen) == await _api_count(case_app, "/api/cases?status=transition") == 5
    assert pages == 3  # two cases a page (the page size is made small above)
