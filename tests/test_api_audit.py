"""The audit trail of PHI reads, through the real app on SQLite and PostgreSQL: inbox lists and
searches (by MRN too), dead letters, outbox rows, and refused callers. Audit rows name entities by
id and routes by template; never a patient identifier, a query string or a token."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import event, select, update

from api_case_helpers import case_app, case_json, client, example
from cm_fhir.store.audit import audit_events
from cm_fhir.store.tables import inbox_messages
from hl7v2_samples import evn, msh, pid, pv1

__all__ = ["case_app"]

HL7 = {"Content-Type": "x-application/hl7-v2+er7"}


async def _ingest(http: httpx.AsyncClient, control_id: str, mrn: str) -> None:
    message = "\r".join([msh("A01", "2.5.1", control_id=control_id), evn("A01"), pid(mrn), pv1()])
    response = await http.post("/api/hl7v2", content=message.encode(), headers=HL7)
    assert response.status_code == 200


async def _audit(app: FastAPI) -> list[dict[str, Any]]:
    engine = app.state.context.engine
    async with engine.connect() as connection:
        rows = await connection.execute(select(audit_events).order_by(audit_events.c.id))
    return [dict(row) for row in rows.mappings()]


def _no_phi(rows: list[dict[str, Any]], *secrets: str) -> None:
    for row in rows:
        for value in row.values():
            assert all(secret not in str(value) for secret in secrets), row


async def test_inbox_lists_and_searches_are_audited(case_app: FastAPI) -> None:
    async with client(case_app) as http:
        await _ingest(http, "AU-1", "MRN-AUDIT-1")
        await _ingest(http, "AU-2", "MRN-AUDIT-2")
        start = len(await _audit(case_app))
        found = (await http.get("/api/messages", params={"patient": "MRN-AUDIT-1"})).json()
        listed = (await http.get("/api/messages")).json()
        empty = (await http.get("/api/messages", params={"patient": "MRN-NOBODY"})).json()
    assert len(found["items"]) == 1
    assert empty["items"] == []
    rows = (await _audit(case_app))[start:]
    searches = [(r["action"], r["entity_type"], r["entity_id"], r["route"]) for r in rows]
    assert searches == [
        ("search", "message", str(found["items"][0]["id"]), "/api/messages"),
        *[("search", "message", str(m["id"]), "/api/messages") for m in listed["items"]],
        ("search", "message", None, "/api/messages"),  # a search that found nobody is audited
    ]
    assert all(r["subject"].startswith("api-key:") and r["outcome"] == "success" for r in rows)
    _no_phi(rows, "MRN-AUDIT-1", "MRN-NOBODY")


async def test_dead_letter_and_outbox_reads_are_audited(case_app: FastAPI) -> None:
    case = example("stroke-inpatient-rehab")
    async with client(case_app) as http:
        await _ingest(http, "DL-1", "MRN-DEAD-1")
        assert (await http.post("/api/cases", json=case_json(case))).status_code == 201
        engine = case_app.state.context.engine
        async with engine.begin() as connection:
            await connection.execute(
                update(inbox_messages).values(state="dead_lettered", reason="PID-3: test")
            )
        start = len(await _audit(case_app))
        dead = (await http.get("/api/dead-letters")).json()["items"]
        outbox = (await http.get("/api/outbox/items", params={"case_id": case.id})).json()
        summary = await http.get("/api/outbox")  # counts only: no PHI, not audited
    assert len(dead) == 1
    assert outbox["items"]
    assert summary.status_code == 200
    rows = (await _audit(case_app))[start:]
    assert [(r["action"], r["entity_type"], r["entity_id"], r["route"]) for r in rows] == [
        ("search", "message", str(dead[0]["id"]), "/api/dead-letters"),
        *[("search", "outbox", str(i["id"]), "/api/outbox/items") for i in outbox["items"]],
    ]
    _no_phi(rows, "MRN-DEAD-1")


async def test_refused_callers_are_audited_without_their_token(case_app: FastAPI) -> None:
    start = len(await _audit(case_app))
    wrong = "wrong-token-abcdef0123456789"
    async with client(case_app, token=wrong) as http:
        assert (await http.get("/api/messages/7")).status_code == 401
        assert (
            await http.get("/fhir/Task", params={"identifier": "urn:x|MRN-1"})
        ).status_code == 401
    async with client(case_app, token=None) as http:
        assert (await http.post("/api/cases", json={"id": "x"})).status_code == 401
    async with client(case_app, token="reader-token") as http:  # a real caller without the scope
        assert (await http.get("/fhir/Task")).status_code == 403
        assert (await http.post("/api/messages/replay", json={"ids": [1]})).status_code == 403
    rows = (await _audit(case_app))[start:]
    assert [(r["action"], r["outcome"], r["route"]) for r in rows] == [
        ("authenticate", "denied", "/api/messages/{message_id}"),
        ("authenticate", "denied", "/fhir/{resource_type}"),
        ("authenticate", "denied", "/api/cases"),
        ("authorise", "forbidden", "/fhir/{resource_type}"),
        ("authorise", "forbidden", "/api/messages/replay"),
    ]
    assert rows[0]["subject"] == rows[1]["subject"] != wrong
    assert rows[0]["subject"].startswith("token:")
    assert rows[2]["subject"] == "anonymous"
    assert rows[3]["subject"] == "test:reader-token"
    assert {r["entity_type"] for r in rows} == {"request"}
    _no_phi(rows, wrong, "MRN-1")


async def test_a_flood_of_refusals_is_audited_in_few_transactions(case_app: FastAPI) -> None:
    """Each refusal is recorded, but concurrent ones share a commit: a flood of bad tokens must
    not turn into one write (and, on SQLite, one write lock) per request."""
    engine = case_app.state.context.engine
    commits: list[int] = []

    def _count(_connection: Any) -> None:
        commits.append(1)

    start = len(await _audit(case_app))
    event.listen(engine.sync_engine, "commit", _count)
    try:
        async with client(case_app, token="flood-token-0123456789abcdef") as http:
            answers = await asyncio.gather(*(http.get("/api/outbox") for _ in range(200)))
    finally:
        event.remove(engine.sync_engine, "commit", _count)
    assert [a.status_code for a in answers] == [401] * 200
    rows = (await _audit(case_app))[start:]
    assert len(rows) == 200
    assert {(r["action"], r["route"]) for r in rows} == {("authenticate", "/api/outbox")}
    assert len(commits) <= 20, len(commits)
