"""What ``POST /fhir/$process-message`` answers, over real HTTP, on SQLite and PostgreSQL (FHIR R4
messaging): a response message naming the notification's MessageHeader with ``ok`` once it is
stored; the same answer to a resend (same Bundle identifier and MessageHeader id), which is not
stored again; 200 without a body with ``?async=true``; a 400 OperationOutcome for a notification
it cannot use (nothing stored), including one whose MessageHeader has no id to answer to."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from api_case_helpers import API_KEY, case_app
from cm_fhir.domain.events import NoticeKind
from cm_fhir.fhir.models import validate_bundle
from cm_fhir.store.tables import inbox_messages
from live_api import serving
from notification_samples import SPEC, bundle
from worker_fixtures import rows

__all__ = ["case_app"]

PROCESS = "/fhir/$process-message"
Json = dict[str, Any]


@pytest.fixture
async def http(case_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        serving(case_app) as port,
        httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/fhir+json"},
        ) as client,
    ):
        yield client


async def test_a_notification_is_answered_with_a_response_message(
    http: httpx.AsyncClient, worker_engine: AsyncEngine
) -> None:
    sent = bundle(NoticeKind.DISCHARGE)
    sent_header = sent["entry"][0]["resource"]
    answer = await http.post(PROCESS, content=json.dumps(sent))
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/fhir+json")
    reply = answer.json()
    validate_bundle(reply)  # R4
    assert (reply["resourceType"], reply["type"]) == ("Bundle", "message")
    assert reply["identifier"]["value"] != sent["identifier"]["value"]
    (entry,) = reply["entry"]
    header = entry["resource"]
    assert header["resourceType"] == "MessageHeader"
    assert header["response"] == {"identifier": sent_header["id"], "code": "ok"}
    assert header["eventCoding"] == {
        "system": SPEC.notifications.event_system,
        "code": "notification-discharge",
    }
    assert header["destination"] == [{"endpoint": sent_header["source"]["endpoint"]}]
    assert header["source"]["endpoint"] == f"{str(http.base_url).rstrip('/')}/fhir"
    assert header["id"] != sent_header["id"]
    assert "MRN100234" not in answer.text  # the reply carries no patient data

    # the same notification again, re-serialised: the same answer, stored once
    again = await http.post(PROCESS, content=json.dumps(sent, indent=1, sort_keys=True))
    assert again.status_code == 200
    assert again.json() == reply
    assert len(await rows(worker_engine, inbox_messages)) == 1


async def test_async_is_answered_without_a_body_and_stored(
    http: httpx.AsyncClient, worker_engine: AsyncEngine
) -> None:
    answer = await http.post(PROCESS, params={"async": "true"}, content=json.dumps(bundle()))
    assert answer.status_code == 200
    assert answer.content == b""
    (stored,) = await rows(worker_engine, inbox_messages)
    assert (stored.format, stored.state) == ("fhir", "received")


async def test_a_header_without_an_id_cannot_be_answered_and_is_refused(
    http: httpx.AsyncClient, worker_engine: AsyncEngine
) -> None:
    sent = bundle()
    del sent["entry"][0]["resource"]["id"]
    answer = await http.post(PROCESS, content=json.dumps(sent))
    assert answer.status_code == 400
    outcome = answer.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"] == ["MessageHeader.id"]
    assert await rows(worker_engine, inbox_messages) == []
