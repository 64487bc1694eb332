"""The inbox API over SQLite and PostgreSQL: ingest over HTTP, list and filter, detail with ACK,
audit of raw reads, replay of dead letters, validation errors, outbox and metrics."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from cm_fhir.mllp_client import read_ack
from cm_fhir.store.audit import list_audit
from cm_fhir.store.tables import inbox_messages
from hl7v2_samples import evn, msh, pid, pv1

HL7 = {"Content-Type": "x-application/hl7-v2+er7"}


def adt(event: str, control_id: str, mrn: str) -> str:
    return "\r".join([msh(event, "2.5.1", control_id=control_id), evn(event), pid(mrn), pv1()])


async def ingest(client: httpx.AsyncClient, message: str) -> httpx.Response:
    return await client.post("/api/hl7v2", content=message.encode(), headers=HL7)


async def test_ingest_over_http_answers_the_ack_and_stores_first(
    api_client: httpx.AsyncClient,
) -> None:
    response = await ingest(api_client, adt("A01", "HTTP-1", "MRN-A"))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("x-application/hl7-v2+er7")
    [ack] = read_ack(response.content)
    assert (ack.code, ack.control_id) == ("AA", "HTTP-1")
    again = await ingest(api_client, adt("A01", "HTTP-1", "MRN-A"))
    assert again.content == response.content  # a retransmission gets the stored ACK
    listed = (await api_client.get("/api/messages")).json()["items"]
    assert [m["control_id"] for m in listed] == ["HTTP-1"]
    assert listed[0]["peer"].startswith("http:")


async def test_unparseable_body_is_stored_and_answered_ae(api_client: httpx.AsyncClient) -> None:
    response = await ingest(api_client, "this is not HL7")
    assert response.status_code == 200
    assert read_ack(response.content)[0].code == "AE"
    failed = (await api_client.get("/api/messages", params={"state": "refused"})).json()
    assert len(failed["items"]) == 1
    assert failed["items"][0]["reason"].startswith("MSH")


async def test_empty_and_oversize_bodies_are_refused(api_client: httpx.AsyncClient) -> None:
    assert (await ingest(api_client, "  ")).status_code == 400
    big = adt("A01", "BIG", "MRN-B") + "\rNTE|" + "x" * 1_100_000
    response = await ingest(api_client, big)
    assert response.status_code == 413
    assert (await api_client.get("/api/messages")).json()["items"] == []


async def test_filters_and_paging(api_client: httpx.AsyncClient) -> None:
    for n, (event, mrn) in enumerate([("A01", "MRN-1"), ("A03", "MRN-1"), ("A01", "MRN-2")]):
        await ingest(api_client, adt(event, f"F-{n}", mrn))

    async def ids(**params: str | int) -> list[str]:
        response = await api_client.get("/api/messages", params=params)
        assert response.status_code == 200, response.text
        return [m["control_id"] for m in response.json()["items"]]

    assert await ids() == ["F-2", "F-1", "F-0"]
    assert await ids(event="A01") == ["F-2", "F-0"]
    assert await ids(patient="MRN-1") == ["F-1", "F-0"]
    assert await ids(patient="MRN-1^NSH") == ["F-1", "F-0"]
    assert await ids(patient="MRN") == []
    assert await ids(ack_code="AA", event="A03") == ["F-1"]
    assert await ids(received_from="2000-01-01T00:00:00Z", received_to="2001-01-01") == []
    assert await ids(received_from="2000-01-01T00:00:00Z") == ["F-2", "F-1", "F-0"]
    first = (await api_client.get("/api/messages", params={"limit": 2})).json()
    assert [m["control_id"] for m in first["items"]] == ["F-2", "F-1"]
    assert await ids(cursor=first["next_cursor"]) == ["F-0"]
    following = (await api_client.get(first["next"])).json()  # every list pages by `next`
    assert [m["control_id"] for m in following["items"]] == ["F-0"]
    assert following["next"] is None
    assert await ids(control_id="F-1") == ["F-1"]
    assert await ids(control_id="F-") == []
    sender = (await api_client.get("/api/messages")).json()["items"][0]["sending_application"]
    assert await ids(sender=sender) == ["F-2", "F-1", "F-0"]
    assert await ids(sender=sender + "X") == []


async def test_validation_errors_name_the_field(api_client: httpx.AsyncClient) -> None:
    response = await api_client.get(
        "/api/messages", params={"limit": 0, "state": "bogus", "received_from": "x"}
    )
    assert response.status_code == 422
    fields = {f["field"] for f in response.json()["error"]["fields"]}
    assert fields == {"query.limit", "query.state", "query.received_from"}
    assert "bogus" not in response.text  # the value sent is not echoed
    body = await api_client.post("/api/messages/replay", json={"ids": ["x"], "extra": 1})
    assert {f["field"] for f in body.json()["error"]["fields"]} == {"body.ids[0]", "body.extra"}
    huge = await api_client.post("/api/messages/replay", json={"ids": [1, 2**70, -3]})
    assert huge.status_code == 422
    assert {f["field"] for f in huge.json()["error"]["fields"]} == {"body.ids[1]", "body.ids[2]"}


async def test_detail_has_ack_and_raw_only_on_request_which_is_audited(
    api_client: httpx.AsyncClient, inbox_engine: AsyncEngine
) -> None:
    await ingest(api_client, adt("A01", "D-1", "MRN-D"))
    [row] = (await api_client.get("/api/messages")).json()["items"]
    plain = (await api_client.get(f"/api/messages/{row['id']}")).json()
    assert plain["raw"] is None
    assert read_ack(plain["ack"].encode())[0].control_id == "D-1"
    assert plain["trace"] == [] or all("rule" in t for t in plain["trace"])
    raw = (await api_client.get(f"/api/messages/{row['id']}", params={"include_raw": True})).json()
    assert "PID|1||MRN-D" in raw["raw"]
    async with inbox_engine.connect() as connection:
        audit = await list_audit(connection, entity_type="message", entity_id=str(row["id"]))
    assert [a["action"] for a in audit[:2]] == ["read-raw", "read"]
    assert audit[0]["subject"].startswith("api-key:")
    assert audit[0]["route"] == "/api/messages/{message_id}"
    assert (await api_client.get("/api/messages/999999")).status_code == 404


async def test_replay_of_a_dead_letter(
    api_client: httpx.AsyncClient, inbox_engine: AsyncEngine
) -> None:
    await ingest(api_client, adt("A01", "R-1", "MRN-R"))
    [row] = (await api_client.get("/api/messages")).json()["items"]
    async with inbox_engine.begin() as connection:
        await connection.execute(
            update(inbox_messages)
            .where(inbox_messages.c.id == row["id"])
            .values(state="dead_lettered", reason="PID-3: test")
        )
    dead = (await api_client.get("/api/dead-letters")).json()["items"]
    assert [m["id"] for m in dead] == [row["id"]]
    result = (await api_client.post(f"/api/messages/{row['id']}/replay")).json()
    assert result == {"replayed": [row["id"]], "skipped": {}}
    assert (await api_client.get("/api/dead-letters")).json()["items"] == []
    again = (
        await api_client.post("/api/messages/replay", json={"ids": [row["id"], 424242]})
    ).json()
    assert again["skipped"] == {str(row["id"]): "already queued", "424242": "no such message"}
    assert (await api_client.post("/api/messages/424242/replay")).status_code == 404
    async with inbox_engine.connect() as connection:
        audit = await list_audit(connection, entity_type="message", entity_id=str(row["id"]))
    assert audit[0]["action"] == "replay"


async def test_outbox_summary_and_items(api_client: httpx.AsyncClient) -> None:
    summary = (await api_client.get("/api/outbox")).json()
    # the configured endpoint with every state (other tests' endpoints may share the schema)
    listed = {(c["endpoint"], c["state"]) for c in summary["counts"]}
    assert {pair for pair in listed if pair[0] == "default"} == {
        ("default", "pending"),
        ("default", "sent"),
        ("default", "failed"),
        ("default", "superseded"),
    }
    items = await api_client.get("/api/outbox/items", params={"state": "pending", "limit": 5})
    assert items.status_code == 200
    bad = await api_client.get("/api/outbox/items", params={"state": "lost"})
    assert bad.json()["error"]["fields"][0]["field"] == "query.state"


async def test_metrics_count_messages_by_event_and_ack(api_client: httpx.AsyncClient) -> None:
    await ingest(api_client, adt("A01", "M-1", "MRN-M"))
    await ingest(api_client, adt("A01", "M-2", "MRN-N"))
    await ingest(api_client, "garbage")
    response = await api_client.get("/metrics")
    assert response.status_code == 200
    lines = response.text.splitlines()
    assert (
        'cm_fhir_inbox_messages_total{ack_code="AA",event="A01",message_type="ADT",'
        'state="received"} 2.0'
    ) in lines
    assert 'cm_fhir_inbox_depth{state="refused"} 1.0' in lines
    assert "cm_fhir_dead_letters 0.0" in lines
    age = next(x for x in lines if x.startswith("cm_fhir_inbox_oldest_received_age_seconds "))
    assert float(age.split()[1]) >= 0.0
    assert any(x.startswith("cm_fhir_message_processing_seconds_bucket") for x in lines)


@pytest.mark.parametrize("path", ["/api/nothing", "/fhir-not"])
async def test_unknown_paths_are_json_404(api_client: httpx.AsyncClient, path: str) -> None:
    response = await api_client.get(path)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
