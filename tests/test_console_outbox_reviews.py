"""The console's Outbox "Resend", the Overview's endpoints, and the Reviews page, over ASGI on the
real app (SQLite and PostgreSQL).

Resend goes through ``POST /api/outbox/resend``: per entry and per endpoint, with the form's CSRF
token, refused to a reader; Overview shows each endpoint with its circuit (or says the sync role
does not run here); Reviews lists the reviewer's queue pended first with deadlines and overdue
marked, pages with the API's cursor, and the case page shows the case's own reviews."""

from __future__ import annotations

import re

import pytest
from fastapi import FastAPI
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from api_case_helpers import TOKENS, case_app, case_json, client, example
from api_fixtures import API_KEY
from cm_fhir.fhir.pas_request import pas_request_bundle
from cm_fhir.mapping.payer_exchange import default_payer_exchange
from cm_fhir.mapping.registry import default_registry
from cm_fhir.store.case_tables import outbox
from console_helpers import hidden, signed_in
from pas_samples import review, stroke_case
from worker_fixtures import ingest, settle_worker
from workflow_messages import Visit, hours

__all__ = ["case_app"]


async def _failed_entries(engine: AsyncEngine, count: int) -> list[tuple[int, str]]:
    """``count`` patients' writes, each refused by the EHR (the state the sync leaves)."""
    visits = [Visit(mrn=f"MRN-CR-{n}", visit=f"VCR{n}") for n in range(count)]
    await ingest(engine, [v.raw("A01", f"CR-{n}", hours(0)) for n, v in enumerate(visits)])
    await settle_worker(engine)
    async with engine.begin() as connection:
        await connection.execute(
            update(outbox).values(state="failed", last_error="422 Unprocessable Entity")
        )
        rows = (await connection.execute(select(outbox.c.id, outbox.c.case_id))).all()
    return [(int(r.id), str(r.case_id)) for r in rows]


async def _state(engine: AsyncEngine, row_id: int) -> str:
    async with engine.connect() as connection:
        query = select(outbox.c.state).where(outbox.c.id == row_id)
        return str((await connection.execute(query)).scalar_one())


async def test_resend_one_entry_then_an_endpoint(
    case_app: FastAPI, worker_engine: AsyncEngine
) -> None:
    rows = await _failed_entries(worker_engine, 3)
    (first, first_case), *others = rows
    async with signed_in(case_app, API_KEY) as http:
        page = await http.get("/console/outbox?state=failed")
        assert page.text.count(">Resend</button>") == 3
        assert ">Resend failed</button>" in page.text
        assert "422 Unprocessable Entity" in page.text
        csrf = hidden(page.text, "csrf")
        forged = await http.post(
            "/console/outbox/resend", data={"endpoint": "default", "case_id": first_case}
        )
        assert forged.status_code == 400
        assert await _state(worker_engine, first) == "failed"
        one = await http.post(
            "/console/outbox/resend",
            data={"csrf": csrf, "endpoint": "default", "case_id": first_case, "state": "failed"},
        )
        assert one.status_code == 200, one.text
        assert "1 entry marked for resending." in one.text
        assert await _state(worker_engine, first) == "pending"
        assert [await _state(worker_engine, i) for i, _ in others] == ["failed", "failed"]
        every = await http.post(
            "/console/outbox/resend", data={"csrf": csrf, "endpoint": "default"}
        )
        assert "2 entries marked for resending." in every.text
        assert {await _state(worker_engine, i) for i, _ in rows} == {"pending"}
        nothing = await http.post("/console/outbox/resend", data={"csrf": csrf})
        assert "Nothing to resend" in nothing.text
        unknown = await http.post(
            "/console/outbox/resend", data={"csrf": csrf, "endpoint": "elsewhere"}
        )
        assert unknown.status_code == 422
        assert "no endpoint named" in unknown.text


async def test_a_reader_sees_no_resend_and_is_refused(
    case_app: FastAPI, worker_engine: AsyncEngine
) -> None:
    [(row_id, case_id)] = await _failed_entries(worker_engine, 1)
    async with signed_in(case_app, "reader-token") as http:
        page = await http.get("/console/outbox")
        assert "Resend" not in page.text
        refused = await http.post(
            "/console/outbox/resend",
            data={"csrf": hidden(page.text, "csrf"), "case_id": case_id},
        )
        assert refused.status_code == 403
        assert "write" in refused.text
    assert await _state(worker_engine, row_id) == "failed"


async def test_overview_shows_each_endpoint_and_its_circuit(
    case_app: FastAPI, worker_engine: AsyncEngine
) -> None:
    await _failed_entries(worker_engine, 2)
    async with signed_in(case_app, API_KEY) as http:
        overview = (await http.get("/console")).text
    row = re.search(r'<tr data-endpoint="default">(.*?)</tr>', overview, re.S)
    assert row is not None, overview
    assert "no endpoint configured" in row.group(1)  # no EHR in these settings
    assert 'class="state-failed">2<' in row.group(1)
    assert "Outbox and sync per endpoint" in overview


@pytest.fixture
def claim_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(TOKENS, "claim-token", frozenset({"system/Claim.c"}))


async def _submit(app: FastAPI, review_id: str, hour: int) -> None:
    body = pas_request_bundle(
        stroke_case(),
        review(id=review_id, requested=review().requested.replace(hour=hour)),
        default_payer_exchange(),
        default_registry().canonical_base,
    )
    async with client(app, "claim-token") as http:
        answer = await http.post("/fhir/Claim/$submit", json=body)
    assert answer.status_code == 200, answer.text


@pytest.mark.usefixtures("claim_token")
async def test_reviews_page_lists_pended_first_with_deadlines(case_app: FastAPI) -> None:
    for n in range(3):
        await _submit(case_app, f"ur{n + 1}", 9 + n)
    async with client(case_app, "writer-token") as http:
        queue = (await http.get("/api/utilization-reviews")).json()["items"]
        decided = queue[0]["review"]["id"]
        answer = await http.post(
            f"/api/utilization-reviews/{decided}/decision",
            json={"decision": "approved", "authorized_quantity": 5},
        )
        assert answer.status_code == 200, answer.text
    async with signed_in(case_app, "reader-token") as http:
        overview = await http.get("/console")
        assert 'href="/console/reviews">Reviews</a>' in overview.text
        page = await http.get("/console/reviews")
        assert page.status_code == 200
        shown = re.findall(r'<tr data-review="([^"]+)">', page.text)
        assert len(shown) == 3
        assert shown[-1] == decided  # pended first
        assert page.text.count("(overdue)") == 2  # asked in 2026-03, expedited: long past
        assert "approved: 5 days" in page.text
        pended = await http.get("/console/reviews?status=pended")
        assert re.findall(r'<tr data-review="([^"]+)">', pended.text) == shown[:2]
        case_id = queue[0]["case_id"]
        assert f'href="/console/cases/{case_id}"' in page.text
        case = await http.get(f"/console/cases/{case_id}")
        assert ">Utilization reviews</h2>" in case.text
        on_case = re.findall(r'<tr data-review="([^"]+)">', case.text)
        assert sorted(on_case) == sorted(shown)
        assert case.text.count("(overdue)") == 2
        bad = await http.get("/console/reviews?cursor=not-one-of-ours")
        assert bad.status_code == 422
        assert "cursor" in bad.text


async def test_the_case_page_shows_screening_criteria_by_their_display(case_app: FastAPI) -> None:
    async with client(case_app) as http:
        created = await http.post("/api/cases", json=case_json(example("stroke-inpatient-rehab")))
        assert created.status_code == 201, created.text
    async with signed_in(case_app, "reader-token") as http:
        page = (await http.get("/console/cases/HOSP-2026-0412")).text
    screening = page.split('id="h-screening"')[1].split("</table>")[0]
    assert "Age 65 or older; Acute stroke diagnosis" in screening
    assert "{'system'" not in screening
    assert ">None<" not in screening  # an empty field is left out
