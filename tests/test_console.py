"""The console over ASGI, on the real app over SQLite and PostgreSQL: signing in and out, the
session cookie, CSRF, redirects without a session, same-origin assets, no PHI in URLs or titles,
and each panel over data the worker made."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from api_case_helpers import case_app, case_json, client, example
from api_fixtures import API_KEY
from cm_fhir.console.deps import NAVIGATION
from cm_fhir.console.panels.worklist import completion_path
from cm_fhir.domain import TaskStatus
from cm_fhir.store.audit import list_audit
from cm_fhir.store.tables import InboxState, inbox_messages
from console_helpers import asset_urls, hidden, sign_in, signed_in, signed_out
from worker_fixtures import ingest, settle_worker
from workflow_messages import Visit, hours

__all__ = ["case_app"]

PAGES = ["", "/messages", "/dead-letters", "/outbox", "/worklist", "/cases", "/reviews"]
MRN = "MRN-CONSOLE-7"


async def _feed(engine: AsyncEngine) -> None:
    visit = Visit(mrn=MRN, visit="V-CON-1")
    await ingest(engine, [visit.raw("A01", "CTRL-CON-1", hours(0))])
    await settle_worker(engine)


@pytest.mark.parametrize("page", [*PAGES, "/messages/1", "/cases/X", "/dead-letters/1/replay"])
async def test_without_a_session_every_page_redirects_to_sign_in(
    case_app: FastAPI, page: str
) -> None:
    await _feed(case_app.state.context.engine)
    async with signed_out(case_app) as http:
        answer = await http.get("/console" + page)
        assert answer.status_code == 303
        assert answer.headers["location"].endswith("/console/sign-in")
        assert MRN not in answer.text
        assert "CTRL-CON-1" not in answer.text
        posted = await http.post("/console/messages", data={"control_id": "CTRL-CON-1"})
        assert posted.status_code == 303
        # A bearer header does not open the console: it takes its session cookie only.
        bearer = await http.get("/console" + page, headers={"Authorization": f"Bearer {API_KEY}"})
        assert bearer.status_code == 303


async def test_sign_in_sets_a_strict_cookie_and_sign_out_ends_the_session(
    case_app: FastAPI,
) -> None:
    async with signed_out(case_app) as http:
        form = await http.get("/console/sign-in")
        assert 'for="api-key">API key</label>' in form.text
        assert ">Sign in</button>" in form.text
        answer = await sign_in(http, API_KEY)
        assert answer.status_code == 303
        cookie = next(
            c for c in answer.headers.get_list("set-cookie") if c.startswith("cm_fhir_console=")
        )
        assert "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie
        assert "Max-Age=28800" in cookie
        assert "Path=/console" in cookie
        assert "Secure" not in cookie
        assert API_KEY not in cookie
        overview = await http.get("/console")
        assert overview.status_code == 200
        for name, _ in NAVIGATION:
            assert f">{name}</a>" in overview.text
        csp = overview.headers["content-security-policy"]
        assert "default-src 'none'" in csp
        assert "script-src 'self'" in csp
        assert overview.headers["cache-control"] == "no-store"
        # Sign-out without the CSRF token does nothing; with it, the session is gone.
        assert (await http.post("/console/sign-out", data={})).status_code == 303
        assert (await http.get("/console")).status_code == 200
        out = await http.post("/console/sign-out", data={"csrf": hidden(overview.text, "csrf")})
        assert out.headers["location"].endswith("/console/sign-in")
        assert (await http.get("/console")).status_code == 303


async def test_sign_in_refusals(case_app: FastAPI, worker_engine: AsyncEngine) -> None:
    async with signed_out(case_app) as http:
        wrong = await sign_in(http, "not-a-key")
        assert wrong.status_code == 401
        assert "not accepted" in wrong.text
        assert "not-a-key" not in wrong.text
        no_scope = await sign_in(http, "no-scope-token")
        assert no_scope.status_code == 403
        smart_only = await sign_in(http, "smart-all-token")
        assert smart_only.status_code == 403
        # The double-submit token: a form from elsewhere (no matching cookie) is refused.
        forged = await signed_out(case_app).post(
            "/console/sign-in", data={"signin_token": "x", "api_key": API_KEY}
        )
        assert forged.status_code == 400
        other_site = await http.post(
            "/console/sign-in",
            data={"signin_token": "x", "api_key": API_KEY},
            headers={"Origin": "https://evil.example"},
        )
        assert other_site.status_code == 400
    async with worker_engine.connect() as connection:
        denied = await list_audit(connection, entity_type="request")
    assert {(r["outcome"], r["route"]) for r in denied} >= {
        ("denied", "/console/sign-in"),
        ("forbidden", "/console/sign-in"),
    }


async def test_a_reader_sees_pages_but_cannot_change(case_app: FastAPI) -> None:
    await _feed(case_app.state.context.engine)
    async with signed_in(case_app, "reader-token") as http:
        for page in PAGES:
            answer = await http.get("/console" + page)
            assert answer.status_code == 200, (page, answer.text[:300])
        worklist = await http.get("/console/worklist")
        assert ">Complete</button>" not in worklist.text
        page = await http.get("/console/messages")
        replay = await http.post(
            "/console/dead-letters/1/replay", data={"csrf": hidden(page.text, "csrf")}
        )
        assert replay.status_code == 403
        assert "write" in replay.text


async def test_every_page_loads_only_its_own_assets(case_app: FastAPI) -> None:
    await _feed(case_app.state.context.engine)
    async with signed_in(case_app, API_KEY) as http:
        pages = [await http.get("/console" + p) for p in [*PAGES, "/messages/1", "/sign-in"]]
        for page in pages:
            assert page.status_code == 200, page.url
            urls = asset_urls(page.text)
            assert urls, page.url
            for url in urls:
                parts = urlsplit(url)
                assert (parts.scheme, parts.netloc) == ("", ""), (page.url, url)
                assert url.startswith("/console/static/"), url
                asset = await http.get(url)
                assert asset.status_code == 200, url
                assert not re.search(r"https?://", asset.text.split("*/", 1)[-1]), url
            for target in re.findall(r'(?:href|action)="([^"]*)"', page.text):
                assert target.startswith(("/console", "#")), (page.url, target)


async def test_message_search_by_control_id_detail_trace_and_raw_view(
    case_app: FastAPI, worker_engine: AsyncEngine
) -> None:
    await _feed(worker_engine)
    async with signed_in(case_app, API_KEY) as http:
        page = await http.get("/console/messages")
        csrf = hidden(page.text, "csrf")
        no_csrf = await http.post("/console/messages", data={"control_id": "CTRL-CON-1"})
        assert no_csrf.status_code == 400
        assert "form has expired" in no_csrf.text
        found = await http.post("/console/messages", data={"csrf": csrf, "patient": MRN})
        assert str(found.url).endswith("/console/messages")  # the MRN is in no URL
        assert MRN not in found.text.split("<title>")[1].split("</title>")[0]
        assert "CTRL-CON-1</td>" in found.text
        by_control = await http.post(
            "/console/messages", data={"csrf": csrf, "control_id": "CTRL-CON-1"}
        )
        link = re.search(r'href="(/console/messages/(\d+))"', by_control.text)
        assert link is not None
        detail = await http.get(link.group(1))
        assert detail.status_code == 200
        title = re.search(r"<title>(.*)</title>", detail.text)
        assert title is not None
        assert MRN not in title.group(1)
        assert "MSA|AA|CTRL-CON-1" in detail.text  # the ACK
        assert "/console/cases/" in detail.text  # the trace names the case it opened
        assert "added: EpisodeOfCare" in detail.text  # the FHIR changes
        assert "Show raw message</button>" in detail.text
        assert "PID|" not in detail.text
        raw = await http.post(link.group(1) + "/raw", data={"csrf": csrf})
        assert "PID|" in raw.text
    async with worker_engine.connect() as connection:
        reads = await list_audit(connection, entity_type="message", entity_id=link.group(2))
    assert [r["action"] for r in reads].count("read-raw") == 1


async def test_replay_of_a_dead_letter_asks_then_releases(
    case_app: FastAPI, worker_engine: AsyncEngine
) -> None:
    await _feed(worker_engine)
    async with worker_engine.begin() as connection:
        await connection.execute(
            update(inbox_messages).values(state=InboxState.DEAD_LETTERED.value, reason="boom")
        )
    async with signed_in(case_app, API_KEY) as http:
        listing = await http.get("/console/dead-letters")
        assert "boom" in listing.text
        assert ">Replay</button>" in listing.text
        confirm = await http.get("/console/dead-letters/1/replay")
        assert "Confirm replay</button>" in confirm.text
        assert ">dead_lettered<" in confirm.text
        done = await http.post(
            "/console/dead-letters/1/replay", data={"csrf": hidden(confirm.text, "csrf")}
        )
        assert done.status_code == 200
        assert "released for processing" in done.text
        assert ">received<" in done.text


async def test_worklist_completes_reassigns_and_notes_through_the_api(case_app: FastAPI) -> None:
    case = example("stroke-inpatient-rehab")
    async with client(case_app) as api:
        assert (await api.post("/api/cases", json=case_json(case))).status_code == 201
    owner = "Dana Whitfield, RN CCM"
    async with signed_in(case_app, "writer-token") as http:
        page = await http.get("/console/worklist", params={"owner": owner})
        assert "Call patient" in page.text or "t-bp-call" in page.text
        csrf = hidden(page.text, "csrf")
        base = {"csrf": csrf, "case_id": case.id, "f_owner": owner}
        done = await http.post(
            "/console/worklist/task",
            data={
                **base,
                "task_id": "t-bp-call",
                "version": "1",
                "status": "requested",
                "action": "complete",
            },
        )
        assert done.status_code == 303
        assert "notice=completed" in done.headers["location"]
        stale = await http.post(
            "/console/worklist/task",
            data={
                **base,
                "task_id": "t-auth",
                "version": "1",
                "status": "in-progress",
                "action": "note",
                "note": "called the payer",
            },
        )
        assert "error=stale" in stale.headers["location"]
        noted = await http.post(
            "/console/worklist/task",
            data={
                **base,
                "task_id": "t-auth",
                "version": "3",
                "status": "in-progress",
                "action": "note",
                "note": "called the payer",
            },
        )
        assert "notice=noted" in noted.headers["location"]
        moved = await http.post(
            "/console/worklist/task",
            data={
                **base,
                "task_id": "t-auth",
                "version": "4",
                "status": "in-progress",
                "action": "reassign",
                "owner": "Marco Ruiz, LCSW",
            },
        )
        assert "notice=reassigned" in moved.headers["location"]
    async with client(case_app) as api:
        stored = (await api.get(f"/api/cases/{case.id}")).json()
    tasks = {t["id"]: t for t in stored["tasks"]}
    assert tasks["t-bp-call"]["status"] == "completed"
    assert tasks["t-auth"]["notes"][-1] == "called the payer"
    assert tasks["t-auth"]["owner"]["display"] == "Marco Ruiz, LCSW"


def test_completion_walks_the_task_state_machine() -> None:
    assert completion_path(TaskStatus.IN_PROGRESS) == [TaskStatus.COMPLETED]
    assert completion_path(TaskStatus.REQUESTED) == [TaskStatus.IN_PROGRESS, TaskStatus.COMPLETED]
    assert completion_path(TaskStatus.DRAFT) == [TaskStatus.READY, TaskStatus.COMPLETED]
    assert completion_path(TaskStatus.CANCELLED) == []


async def test_case_page_and_overview(case_app: FastAPI, worker_engine: AsyncEngine) -> None:
    await _feed(worker_engine)
    async with signed_in(case_app, API_KEY) as http:
        cases = await http.get("/console/cases")
        link = re.search(r'href="(/console/cases/[^"]+)"', cases.text)
        assert link is not None
        page = await http.get(link.group(1))
        assert page.status_code == 200
        for heading in (
            "Status history",
            "Screening",
            "Goals",
            "Plan",
            "Tasks",
            "Referrals",
            "Timeline",
        ):
            assert f">{heading}</h2>" in page.text
        assert "message #1</a>" in page.text
        overview = await http.get("/console")
        assert overview.text.count("<svg") >= 2  # all senders and the one sender
        assert 'role="img"' in overview.text
        assert "received 1" in overview.text
        assert "data-refresh=" in overview.text
        missing = await http.get("/console/cases/NOPE")
        assert missing.status_code == 404


async def test_api_is_unchanged_by_the_console(case_app: FastAPI) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(case_app), base_url="http://cm-fhir.test"
    ) as http:
        assert (await http.get("/api/messages")).status_code == 401
        assert (await http.get("/consoles")).status_code == 401


async def test_hostile_values_are_escaped_and_bad_paths_echo_nothing(
    case_app: FastAPI, worker_engine: AsyncEngine
) -> None:
    await _feed(worker_engine)
    script = "<script>alert(1)</script>"
    async with worker_engine.begin() as connection:
        await connection.execute(
            update(inbox_messages).values(
                state=InboxState.DEAD_LETTERED.value, reason=script, sending_application=script
            )
        )
    async with signed_out(case_app) as http:
        assert (await http.get("/console/messages/abc")).status_code == 303
    async with signed_in(case_app, API_KEY) as http:
        for page in (
            "/console",
            "/console/messages",
            "/console/dead-letters",
            "/console/messages/1",
        ):
            text = (await http.get(page)).text
            assert script not in text, page
        assert "&lt;script&gt;" in (await http.get("/console/dead-letters")).text
        bad = await http.get("/console/messages/%3Cb%3Ex")
        assert bad.status_code == 404
        assert "<b>x" not in bad.text
        assert "no such page" in bad.text
        assert (await http.get("/console/no-such-panel")).status_code == 404
        big = await http.post(
            "/console/messages",
            content=b"csrf=x&pad=" + b"a" * 70_000,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert big.status_code == 400
        assert "too large" in big.text


async def test_every_list_pages_by_its_next_link(
    case_app: FastAPI, worker_engine: AsyncEngine
) -> None:
    visits = [Visit(mrn=f"MRN-PAGE-{n}", visit=f"V-PAGE-{n}") for n in range(3)]
    await ingest(
        worker_engine, [v.raw("A01", f"CTRL-PAGE-{n}", hours(0)) for n, v in enumerate(visits)]
    )
    await settle_worker(worker_engine)
    async with client(case_app) as api:
        for path in ("/api/outbox/items", "/api/messages", "/api/cases", "/api/tasks"):
            seen: list[str] = []
            url: str | None = f"{path}?limit=1"
            while url is not None:
                page = (await api.get(url)).json()
                seen += [str(item["id"]) + str(item.get("case_id", "")) for item in page["items"]]
                url = page["next"]
            assert len(seen) == len(set(seen)) >= 3, path
