"""The console in a real browser: Debian's Chromium driven by Playwright, against a real
``cm-fhir serve`` fed over MLLP.

Covers signing in with the keyboard, the navigation's accessible names, finding a message by
control id and opening its trace, replaying a dead letter (its state changes), resending an
outbox entry the EHR refused (its state changes), the Reviews page, working a task from the
worklist (its status changes in the API), labels on every control, that no request
leaves the service, and the redirect to sign-in without a session. Screenshots go to
``test-artifacts/console/`` (or ``$CM_FHIR_TEST_ARTIFACTS``). Skips, saying why, where Chromium
or Playwright is missing; Playwright's own browser download is never used.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from api_case_helpers import case_json, example
from cm_fhir.demo_feed import demo_feed
from cm_fhir.fhir.pas_request import pas_request_bundle
from cm_fhir.mapping.payer_exchange import default_payer_exchange
from cm_fhir.mapping.registry import default_registry
from cm_fhir.mllp_client import MllpClient, read_ack
from cm_fhir.settings import SQLITE_FILE_NAME
from live_api import ServeProcess, start_serve
from pas_samples import review, stroke_case

playwright_api = pytest.importorskip(
    "playwright.async_api", reason="Playwright for Python is not installed (pip install -e .[dev])"
)

CHROMIUM = os.environ.get("CM_FHIR_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip(
        f"no Chromium at {CHROMIUM}: install Debian's package (apt-get install chromium) "
        "or set CM_FHIR_CHROMIUM",
        allow_module_level=True,
    )

ARTIFACTS = (
    Path(
        os.environ.get("CM_FHIR_TEST_ARTIFACTS")
        or Path(__file__).resolve().parents[1] / "test-artifacts"
    )
    / "console"
)
OWNER = "Dana Whitfield, RN CCM"
NAVIGATION = ("Overview", "Messages", "Dead letters", "Outbox", "Worklist", "Cases", "Reviews")


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[ServeProcess]:
    process = await start_serve(tmp_path / "data")
    try:
        yield process
    finally:
        await process.stop()


@pytest.fixture
async def browser() -> AsyncIterator[object]:
    async with playwright_api.async_playwright() as p:
        chromium = await p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            yield chromium
        finally:
            await chromium.close()


async def _feed(serve: ServeProcess, count: int) -> list[str]:
    feed = demo_feed()[:count]
    async with await MllpClient.connect("127.0.0.1", serve.mllp_port) as client:
        codes = [read_ack(await client.send(m.text, timeout=10))[0].code for m in feed]
    assert set(codes) == {"AA"}
    return [m.control_id for m in feed]


async def _settled(http: httpx.AsyncClient, count: int) -> list[dict[str, object]]:
    deadline = time.monotonic() + 30
    while True:
        items = (await http.get("/api/messages")).json()["items"]
        if len(items) >= count and all(m["state"] != "received" for m in items):
            return list(items)
        assert time.monotonic() < deadline, items
        await _sleep()


async def _sleep() -> None:
    await asyncio.sleep(0.2)


def _dead_letter(data_dir: Path, message_id: int) -> None:
    """Put a processed message in the state the worker leaves a message that failed for good."""
    with sqlite3.connect(data_dir / SQLITE_FILE_NAME, timeout=30) as db:
        db.execute(
            "UPDATE inbox_message SET state = 'dead_lettered', reason = ?, attempts = 5 "
            "WHERE id = ?",
            ("FhirUnavailableError: the EHR did not answer", message_id),
        )


def _refuse_outbox_entry(data_dir: Path) -> int:
    """Leave the newest outbox entry as the sync role leaves a write the EHR refused."""
    with sqlite3.connect(data_dir / SQLITE_FILE_NAME, timeout=30) as db:
        (row_id,) = db.execute("SELECT max(id) FROM outbox").fetchone()
        db.execute(
            "UPDATE outbox SET state = 'failed', attempts = 1, "
            "last_error = '422 Unprocessable Entity' WHERE id = ?",
            (row_id,),
        )
    return int(row_id)


async def _shot(page: object, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)  # type: ignore[attr-defined]


async def _labelled_controls(page: object) -> list[str]:
    """Controls without an accessible label or name (should be none)."""
    return await page.evaluate(  # type: ignore[attr-defined,no-any-return]
        """() => {
        const bad = [];
        for (const el of document.querySelectorAll('input:not([type=hidden]), select, textarea')) {
          if (!(el.labels && el.labels.length) && !el.getAttribute('aria-label')) bad.push(el.name);
        }
        for (const el of document.querySelectorAll('button, a')) {
          const named = (el.textContent || '').trim() || el.getAttribute('aria-label');
          if (!named) bad.push(el.outerHTML);
        }
        if (!document.documentElement.lang) bad.push('html@lang');
        if (document.querySelectorAll('main').length !== 1) bad.push('main');
        if (document.querySelectorAll('h1').length !== 1) bad.push('h1');
        return bad;
      }"""
    )


async def test_console_journey_in_chromium(
    serve: ServeProcess, browser: object, tmp_path: Path
) -> None:
    controls = await _feed(serve, 3)
    headers = {"Authorization": f"Bearer {serve.key}"}
    async with httpx.AsyncClient(base_url=serve.url, headers=headers) as http:
        messages = await _settled(http, 3)
        created = await http.post("/api/cases", json=case_json(example("stroke-inpatient-rehab")))
        assert created.status_code == 201, created.text
        first = next(m for m in messages if m["control_id"] == controls[0])
        _dead_letter(tmp_path / "data", int(first["id"]))

        context = await browser.new_context(viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
        page = await context.new_page()
        requests: list[str] = []
        page.on("request", lambda request: requests.append(request.url))

        # Sign in with the keyboard only.
        await page.goto(serve.url + "/console")
        assert page.url.endswith("/console/sign-in")
        await page.get_by_label("API key").focus()
        await page.keyboard.type(serve.key)
        await _shot(page, "sign-in")
        await page.keyboard.press("Enter")
        await page.wait_for_url(serve.url + "/console")
        for name in NAVIGATION:
            assert await page.get_by_role("link", name=name, exact=True).count() == 1
        assert await page.locator("svg[role=img]").count() >= 1
        assert await _labelled_controls(page) == []
        await _shot(page, "overview-no-ehr")

        # Find a message by its control id and open its trace.
        await page.get_by_role("link", name="Messages", exact=True).click()
        await page.get_by_label("Control id").fill(controls[1])
        await page.get_by_role("button", name="Search").click()
        await page.wait_for_load_state()
        assert urlsplit(page.url).query == ""  # the search travels in the body
        rows = page.locator("tbody tr")
        assert await rows.count() == 1
        assert await _labelled_controls(page) == []
        await _shot(page, "messages")
        await rows.first.get_by_role("link").click()
        await page.wait_for_load_state()
        trace = page.get_by_role("table", name="Trace")
        assert await trace.locator("tbody tr").count() >= 1
        assert controls[1] not in await page.title()
        assert await page.get_by_role("button", name="Show raw message").count() == 1
        await _shot(page, "message")

        # Replay the dead letter: confirm, then see it released and processed again.
        await page.get_by_role("link", name="Dead letters", exact=True).click()
        assert "the EHR did not answer" in await page.content()
        await _shot(page, "dead-letters")
        await page.get_by_role("button", name="Replay").first.click()
        await page.get_by_role("button", name="Confirm replay").click()
        await page.wait_for_load_state()
        assert "released for processing" in await page.content()
        deadline = time.monotonic() + 30
        while (await http.get(f"/api/messages/{first['id']}")).json()["state"] != "processed":
            assert time.monotonic() < deadline
            await _sleep()

        # Resend an entry the EHR refused: its state changes, here and in the API.
        refused = _refuse_outbox_entry(tmp_path / "data")
        await page.get_by_role("link", name="Outbox", exact=True).click()
        entry = page.locator(f'tr[data-outbox-entry="{refused}"]')
        assert await entry.locator("td.state-failed").count() == 1
        assert await _labelled_controls(page) == []
        await _shot(page, "outbox")
        await entry.get_by_role("button", name="Resend").click()
        await page.wait_for_load_state()
        assert "1 entry marked for resending." in await page.content()
        entry = page.locator(f'tr[data-outbox-entry="{refused}"]')
        assert await entry.locator("td.state-pending").count() == 1
        listed = (await http.get("/api/outbox/items", params={"limit": 200})).json()["items"]
        assert {r["id"]: r["state"] for r in listed}[refused] == "pending"

        # Reviews: a payer's pended request in the reviewer's queue, reached by its link.
        body = pas_request_bundle(
            stroke_case(), review(), default_payer_exchange(), default_registry().canonical_base
        )
        submitted = await http.post("/fhir/Claim/$submit", json=body)
        assert submitted.status_code == 200, submitted.text
        await page.get_by_role("link", name="Reviews", exact=True).click()
        await page.wait_for_load_state()
        table = page.get_by_role("table", name=re.compile("^Reviews"))
        assert await table.locator("tr[data-review]").count() == 1
        assert "(overdue)" in await table.inner_text()
        assert await _labelled_controls(page) == []
        await _shot(page, "reviews")

        # Work a task from the worklist: the API shows its new status.
        await page.get_by_role("link", name="Worklist", exact=True).click()
        await page.get_by_label("Owner", exact=True).fill(OWNER)
        await page.get_by_label("Owner", exact=True).press("Enter")
        await page.wait_for_load_state()
        assert await _labelled_controls(page) == []
        await _shot(page, "worklist")
        row = page.locator("tr", has=page.locator('[data-task-status="HOSP-2026-0412/t-bp-call"]'))
        await row.get_by_role("button", name="Complete").click()
        await page.wait_for_load_state()
        assert "The task is completed." in await page.content()
        case = (await http.get("/api/cases/HOSP-2026-0412")).json()
        assert {t["id"]: t["status"] for t in case["tasks"]}["t-bp-call"] == "completed"

        await page.get_by_role("link", name="HOSP-2026-0412").first.click()
        await page.wait_for_load_state()
        await _shot(page, "case")

        # Sign out: the console is closed again.
        await page.get_by_role("button", name="Sign out").click()
        await page.wait_for_url(serve.url + "/console/sign-in")
        await page.goto(serve.url + "/console/messages")
        assert page.url.endswith("/console/sign-in")
        await context.close()

    origin = urlsplit(serve.url)
    outside = [u for u in requests if urlsplit(u).netloc != origin.netloc]
    assert outside == [], outside
    assert len(requests) > 10


async def _sign_in(serve: ServeProcess, page: object) -> None:
    await page.goto(serve.url + "/console")  # type: ignore[attr-defined]
    await page.get_by_label("API key").fill(serve.key)  # type: ignore[attr-defined]
    await page.get_by_role("button", name="Sign in").click()  # type: ignore[attr-defined]
    await page.wait_for_url(serve.url + "/console")  # type: ignore[attr-defined]


async def _outbox_states(http: httpx.AsyncClient) -> dict[int, str]:
    rows = (await http.get("/api/outbox/items", params={"limit": 200})).json()["items"]
    return {int(r["id"]): str(r["state"]) for r in rows}


async def test_a_resent_entry_reaches_the_ehr_and_the_overview_shows_its_circuit(
    tmp_path: Path, browser: object, fhir_server: str
) -> None:
    serve = await start_serve(tmp_path / "data", "--ehr-url", fhir_server)
    try:
        await _feed(serve, 2)
        headers = {"Authorization": f"Bearer {serve.key}"}
        async with httpx.AsyncClient(base_url=serve.url, headers=headers) as http:
            deadline = time.monotonic() + 60
            while set((await _outbox_states(http)).values()) != {"sent"}:
                assert time.monotonic() < deadline, await _outbox_states(http)
                await _sleep()
            refused = _refuse_outbox_entry(tmp_path / "data")

            context = await browser.new_context(viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
            page = await context.new_page()
            await _sign_in(serve, page)
            endpoint = page.locator('tr[data-endpoint="default"]')
            assert await endpoint.locator("td.circuit-closed").inner_text() == "closed"
            assert "sent" in await endpoint.inner_text()  # what the sync role delivered
            await _shot(page, "overview")

            await page.get_by_role("link", name="Outbox", exact=True).click()
            entry = page.locator(f'tr[data-outbox-entry="{refused}"]')
            await entry.get_by_role("button", name="Resend").click()
            await page.wait_for_load_state()
            assert "1 entry marked for resending." in await page.content()
            deadline = time.monotonic() + 60
            while (await _outbox_states(http))[refused] != "sent":
                assert time.monotonic() < deadline, await _outbox_states(http)
                await _sleep()
            await page.reload()
            entry = page.locator(f'tr[data-outbox-entry="{refused}"]')
            assert await entry.locator("td.state-sent").count() == 1
            await context.close()
    finally:
        await serve.stop()


async def test_without_a_session_the_browser_lands_on_sign_in_and_sees_no_data(
    serve: ServeProcess, browser: object
) -> None:
    controls = await _feed(serve, 1)
    context = await browser.new_context()  # type: ignore[attr-defined]
    page = await context.new_page()
    for path in ("/console", "/console/messages", "/console/messages/1", "/console/worklist"):
        await page.goto(serve.url + path)
        assert page.url == serve.url + "/console/sign-in"
        content = await page.content()
        assert controls[0] not in content
        assert "DM10001" not in content
    wrong = page.get_by_label("API key")
    await wrong.fill("not-the-key")
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_load_state()
    assert "not accepted" in await page.content()
    assert page.url == serve.url + "/console/sign-in"
    await context.close()
