"""``POST /fhir/$process-message`` over HTTP, on SQLite and PostgreSQL: a notification is stored
in the inbox (format ``fhir``) before it is answered (a response message), the worker opens or
updates the member's payer case (admission: concurrent review scheduled; discharge: transition),
a resend changes nothing, a bad Bundle gets a 400 OperationOutcome naming the element, scopes
and audit."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from api_case_helpers import TOKENS, case_app, client
from cm_fhir.domain import Case, CaseStatus
from cm_fhir.domain.events import NoticeKind
from cm_fhir.fhir.pas_request import pas_request_bundle
from cm_fhir.service_roles import make_workers
from cm_fhir.settings import Settings
from cm_fhir.store.audit import list_audit
from cm_fhir.store.case_tables import cases, trace
from cm_fhir.store.tables import inbox_messages
from notification_samples import ADMITTED, SPEC, bundle
from pas_samples import review, stroke_case
from worker_fixtures import rows, settle_worker

__all__ = ["case_app"]

PROCESS = "/fhir/$process-message"
Json = dict[str, Any]


@pytest.fixture(autouse=True)
def _message_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(TOKENS, "message-token", frozenset({"system/MessageHeader.c"}))
    monkeypatch.setitem(TOKENS, "message-v1-token", frozenset({"system/MessageHeader.write"}))
    monkeypatch.setitem(TOKENS, "claim-v2-token", frozenset({"system/Claim.c"}))


async def send(app: FastAPI, body: Json | bytes, token: str = "message-token") -> Any:
    async with client(app, token) as http:
        if isinstance(body, bytes):
            return await http.post(
                PROCESS, content=body, headers={"content-type": "application/fhir+json"}
            )
        return await http.post(PROCESS, json=body)


async def payer_cases(engine: AsyncEngine) -> list[Case]:
    async with engine.connect() as connection:
        found = await connection.execute(
            select(cases.c.case_json).where(cases.c.programme == SPEC.payer_programme)
        )
        return [Case.model_validate_json(r.case_json) for r in found]


async def test_an_admission_opens_a_payer_case_with_a_concurrent_review(
    case_app: FastAPI, worker_engine: AsyncEngine
) -> None:
    answer = await send(case_app, bundle(NoticeKind.ADMIT))
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/fhir+json")
    reply = answer.json()  # a response message: the payer has the notification
    assert (reply["resourceType"], reply["type"]) == ("Bundle", "message")
    sent_header = bundle(NoticeKind.ADMIT)["entry"][0]["resource"]
    assert reply["entry"][0]["resource"]["response"] == {
        "identifier": sent_header["id"],
        "code": "ok",
    }
    stored = await rows(worker_engine, inbox_messages)
    assert [(r.format, r.state, r.message_type, r.trigger_event) for r in stored] == [
        ("fhir", "received", "NOTIFICATION", "ADMIT")
    ]
    assert json.loads(stored[0].raw) == bundle(NoticeKind.ADMIT)  # kept as received
    assert stored[0].sending_facility == "test:message-token"  # the authenticated client
    assert await payer_cases(worker_engine) == []  # accepted is durable; the worker applies it

    result = await settle_worker(worker_engine)
    assert result.processed == 1, [r.reason for r in await rows(worker_engine, inbox_messages)]
    (case,) = await payer_cases(worker_engine)
    assert case.status == CaseStatus.ACTIVE
    assert case.encounters == stroke_case().encounters
    assert case.next_review == ADMITTED.date() + timedelta(days=1)
    assert case.coverage[0].member_id == "MBR-55512309"
    (row,) = await rows(worker_engine, inbox_messages)
    assert row.state == "processed"
    actions = [t.action for t in await rows(worker_engine, trace)]
    assert "payer-case-opened" in actions
    assert "concurrent-review-scheduled" in actions
    assert all(t.inbox_message_id == row.id for t in await rows(worker_engine, trace))


async def test_a_discharge_moves_the_case_to_transition_and_resends_change_nothing(
    case_app: FastAPI, worker_engine: AsyncEngine
) -> None:
    for kind in (NoticeKind.ADMIT, NoticeKind.TRANSFER, NoticeKind.DISCHARGE):
        assert (await send(case_app, bundle(kind))).status_code == 200
    await settle_worker(worker_engine)
    (case,) = await payer_cases(worker_engine)
    assert case.status == CaseStatus.TRANSITION
    assert case.next_review is None
    versions = [r.version for r in await rows(worker_engine, cases)]

    # The same Bundles again, one re-indented: same answers, no new rows, nothing changes.
    first = bundle(NoticeKind.ADMIT)
    again = await send(case_app, json.dumps(first, indent=2, sort_keys=True).encode())
    assert again.status_code == 200
    for kind in (NoticeKind.TRANSFER, NoticeKind.DISCHARGE):
        assert (await send(case_app, bundle(kind))).status_code == 200
    assert len(await rows(worker_engine, inbox_messages)) == 3
    # Content changed under a known identifier is stored (flagged), applied, and still a no-op.
    changed = bundle(NoticeKind.DISCHARGE, location="Discharge lounge")
    assert (await send(case_app, changed)).status_code == 200
    stored = await rows(worker_engine, inbox_messages)
    assert len(stored) == 4
    assert stored[-1].control_id_reused
    await settle_worker(worker_engine)
    assert [r.version for r in await rows(worker_engine, cases)] == versions
    assert (await payer_cases(worker_engine))[0] == case


async def test_a_prior_authorization_request_and_the_notices_share_one_payer_case(
    case_app: FastAPI, worker_engine: AsyncEngine
) -> None:
    request = pas_request_bundle(stroke_case(), review(), SPEC, "http://cm-fhir.org/fhir")
    async with client(case_app, "claim-v2-token") as http:
        assert (await http.post("/fhir/Claim/$submit", json=request)).status_code == 200
    assert (await send(case_app, bundle(NoticeKind.ADMIT))).status_code == 200
    await settle_worker(worker_engine)
    (case,) = await payer_cases(worker_engine)
    assert len(case.utilization_reviews) == 1
    assert case.next_review == date(2026, 3, 2)


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda d: d.update(type="collection"), "Bundle.type"),
        (lambda d: d["entry"][0]["resource"].pop("focus"), "MessageHeader.focus"),
        (lambda d: d["entry"][1]["resource"].pop("identifier"), "Encounter.identifier"),
    ],
)
async def test_a_bad_bundle_is_refused_naming_the_element_and_nothing_is_stored(
    case_app: FastAPI, worker_engine: AsyncEngine, change: Any, where: str
) -> None:
    document = bundle()
    change(document)
    answer = await send(case_app, document)
    assert answer.status_code == 400
    body = answer.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["expression"] == [where]
    assert "MBR-55512309" not in answer.text
    assert "MRN100234" not in answer.text
    assert await rows(worker_engine, inbox_messages) == []


async def test_not_json_is_refused(case_app: FastAPI) -> None:
    answer = await send(case_app, b"MSH|^~\\&|not json")
    assert answer.status_code == 400
    assert answer.json()["resourceType"] == "OperationOutcome"


async def test_scopes_and_audit(case_app: FastAPI, worker_engine: AsyncEngine) -> None:
    assert (await send(case_app, bundle(), token="claim-v2-token")).status_code == 403
    assert (await send(case_app, bundle(), token=None)).status_code == 401  # type: ignore[arg-type]
    assert (await send(case_app, bundle(), token="message-v1-token")).status_code == 200
    bad = bundle()
    bad["type"] = "collection"
    assert (await send(case_app, bad)).status_code == 400
    async with worker_engine.connect() as connection:
        events = await list_audit(connection, entity_type="MessageHeader")
    mine = [(e["action"], e["outcome"]) for e in events]
    assert ("process-message", "success") in mine
    assert ("process-message", "failure") in mine


async def test_the_worker_follows_the_site_payer_exchange(
    case_app: FastAPI, worker_engine: AsyncEngine, api_settings: Settings, tmp_path: Path
) -> None:
    (tmp_path / "payer-exchange.yaml").write_text("notifications:\n  concurrent_review_every: 3\n")
    settings = api_settings.model_copy(update={"mappings_dir": tmp_path})
    (worker,) = make_workers(worker_engine, settings, count=1)
    assert (await send(case_app, bundle(NoticeKind.ADMIT))).status_code == 200
    await worker.run_once()  # type: ignore[attr-defined]
    (case,) = await payer_cases(worker_engine)
    assert case.next_review == ADMITTED.date() + timedelta(days=3)
