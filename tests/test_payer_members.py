"""A payer knows its member by the member id, whatever order the Patient lists its identifiers
in, on SQLite and PostgreSQL: notifications, ``Claim/$submit`` and ``Claim/$inquire`` find the
member's payer case by any identifier the payer recognises as a member id (typed ``MB``, in a
``member_id_systems`` system, or the Coverage's ``subscriberId``), by system and value; the same
value in another system is another member."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from api_case_helpers import API_KEY, TOKENS, case_app, client
from cm_fhir.domain import Case, CaseStatus, Identifier, IdentifierKind, PatientRef
from cm_fhir.domain.events import NoticeKind
from cm_fhir.fhir.notification import parse_notification
from cm_fhir.fhir.pas_intake import parse_pas_inquiry, parse_pas_request
from cm_fhir.fhir.pas_request import pas_inquiry_bundle, pas_request_bundle
from cm_fhir.store.case_tables import cases
from cm_fhir.workflow.facts import member_keys
from live_api import serving
from notification_samples import SPEC, bundle
from pas_samples import review, stroke_case
from worker_fixtures import settle_worker

__all__ = ["case_app"]

BASE = "http://cm-fhir.org/fhir"
PLAN = "urn:oid:2.16.840.1.113883.3.9001.7"
MEMBER = Identifier(system=PLAN, value="MBR-55512309", kind=IdentifierKind.MEMBER_ID)
Json = dict[str, Any]


def mrn(system: str, value: str) -> Identifier:
    return Identifier(system=system, value=value, kind=IdentifierKind.MRN)


# Riverside's MRN first, the member id second (the stroke example), and another hospital's.
RIVERSIDE = PatientRef(identifiers=(mrn("urn:oid:2.16.840.1.113883.3.4711.1", "MRN100234"), MEMBER))
HILLCREST = PatientRef(identifiers=(mrn("urn:oid:1.2.840.99999.42", "HC-7781"), MEMBER))


@pytest.fixture(autouse=True)
def _tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(TOKENS, "message-token", frozenset({"system/MessageHeader.c"}))
    monkeypatch.setitem(TOKENS, "claim-token", frozenset({"system/Claim.c"}))
    monkeypatch.setitem(TOKENS, "inquiry-token", frozenset({"system/ClaimResponse.r"}))


def request_for(patient: PatientRef, claim: str = "ur1") -> Json:
    case = stroke_case().model_copy(update={"patient": patient})
    return pas_request_bundle(case, review(id=claim), SPEC, BASE)


async def post(app: FastAPI, path: str, body: Json, token: str) -> httpx.Response:
    async with client(app, token) as http:
        return await http.post(path, json=body)


async def payer_cases(engine: AsyncEngine) -> list[Case]:
    async with engine.connect() as connection:
        found = await connection.execute(
            select(cases.c.case_json)
            .where(cases.c.programme == SPEC.payer_programme)
            .order_by(cases.c.case_id)
        )
        return [Case.model_validate_json(r.case_json) for r in found]


def test_the_member_id_leads_the_patient_read_from_a_notification_or_a_request() -> None:
    notice = parse_notification(bundle(NoticeKind.ADMIT, patient=RIVERSIDE), SPEC)
    assert notice.patient.primary == MEMBER
    assert member_keys(notice.patient) == (f"{PLAN}|MBR-55512309",)
    read = parse_pas_request(request_for(HILLCREST), SPEC, "ur-x")
    assert read.patient.primary == MEMBER
    inquiry = parse_pas_inquiry(pas_inquiry_bundle(request_for(HILLCREST)), SPEC)
    assert member_keys(inquiry.patient) == (f"{PLAN}|MBR-55512309",)


def test_an_untyped_identifier_is_a_member_id_by_the_subscriber_id_or_a_configured_system() -> None:
    untyped = Identifier(system=PLAN, value="MBR-55512309")
    patient = PatientRef(identifiers=(RIVERSIDE.identifiers[0], untyped))
    # the Coverage's subscriberId names it (same value, the Patient gives the system)
    notice = parse_notification(bundle(NoticeKind.ADMIT, patient=patient), SPEC)
    assert member_keys(notice.patient) == (f"{PLAN}|MBR-55512309",)
    # without a Coverage, only a configured member-id system does
    alone = parse_notification(bundle(NoticeKind.ADMIT, patient=patient, payer=None), SPEC)
    assert member_keys(alone.patient) == ("urn:oid:2.16.840.1.113883.3.4711.1|MRN100234",)
    site = SPEC.model_copy(update={"member_id_systems": (PLAN,)})
    configured = parse_notification(bundle(NoticeKind.ADMIT, patient=patient, payer=None), site)
    assert member_keys(configured.patient) == (f"{PLAN}|MBR-55512309",)


async def test_a_request_from_another_hospital_lands_on_the_members_case(
    case_app: FastAPI, worker_engine: AsyncEngine
) -> None:
    admit = await post(
        case_app, "/fhir/$process-message", bundle(patient=RIVERSIDE), "message-token"
    )
    assert admit.status_code == 200, admit.text
    await settle_worker(worker_engine)
    submitted = await post(case_app, "/fhir/Claim/$submit", request_for(HILLCREST), "claim-token")
    assert submitted.status_code == 200, submitted.text
    (case,) = await payer_cases(worker_engine)
    assert len(case.utilization_reviews) == 1  # the admission's stay and the request share it
    assert case.encounters


async def test_a_second_member_id_alone_finds_the_case_its_first_notice_opened(
    case_app: FastAPI, worker_engine: AsyncEngine
) -> None:
    other = Identifier(
        system="urn:oid:2.16.840.1.113883.3.9001.8", value="LHP-0042", kind=IdentifierKind.MEMBER_ID
    )
    both = PatientRef(identifiers=(*RIVERSIDE.identifiers, other))
    assert (
        await post(case_app, "/fhir/$process-message", bundle(patient=both), "message-token")
    ).status_code == 200
    await settle_worker(worker_engine)
    # the discharge comes from another sender that knows the member by the second id only
    only = PatientRef(identifiers=(mrn("urn:oid:1.2.840.99999.42", "HC-7781"), other))
    discharge = bundle(NoticeKind.DISCHARGE, patient=only)
    assert (
        await post(case_app, "/fhir/$process-message", discharge, "message-token")
    ).status_code == 200
    await settle_worker(worker_engine)
    (case,) = await payer_cases(worker_engine)
    assert case.status == CaseStatus.TRANSITION
    # and a request naming that id only lands there too
    request = request_for(PatientRef(identifiers=(other,)), claim="ur2")
    assert (await post(case_app, "/fhir/Claim/$submit", request, "claim-token")).status_code == 200
    (case,) = await payer_cases(worker_engine)
    assert len(case.utilization_reviews) == 1


async def test_the_same_value_in_another_system_is_another_member(
    case_app: FastAPI, worker_engine: AsyncEngine
) -> None:
    twin = Identifier(
        system="urn:oid:2.16.840.1.113883.3.7777.1",
        value="MBR-55512309",
        kind=IdentifierKind.MEMBER_ID,
    )
    first = bundle(patient=PatientRef(identifiers=(MEMBER,)))
    second = bundle(patient=PatientRef(identifiers=(twin,)), message_id="urn:uuid:twin-admit")
    for notification in (first, second):
        answer = await post(case_app, "/fhir/$process-message", notification, "message-token")
        assert answer.status_code == 200, answer.text
    await settle_worker(worker_engine)
    found = await payer_cases(worker_engine)
    assert sorted(c.patient.primary.system for c in found) == sorted([PLAN, twin.system])
    # a request for the twin does not land on the first member's case
    request = request_for(PatientRef(identifiers=(twin,)))
    assert (await post(case_app, "/fhir/Claim/$submit", request, "claim-token")).status_code == 200
    held = {
        c.patient.primary.system: len(c.utilization_reviews)
        for c in await payer_cases(worker_engine)
    }
    assert held == {PLAN: 0, twin.system: 1}


async def test_an_inquiry_naming_the_member_second_finds_the_request_over_http(
    case_app: FastAPI,
) -> None:
    request = request_for(RIVERSIDE)
    inquiry = pas_inquiry_bundle(request_for(HILLCREST))  # same Claim, another hospital's MRN
    async with (
        serving(case_app) as port,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http,
    ):
        submitted = await http.post(
            "/fhir/Claim/$submit", json=request, headers={"Authorization": f"Bearer {API_KEY}"}
        )
        assert submitted.status_code == 200, submitted.text
        asked = await http.post(
            "/fhir/Claim/$inquire", json=inquiry, headers={"Authorization": f"Bearer {API_KEY}"}
        )
        assert asked.status_code == 200, asked.text
        answer = asked.json()["entry"][0]["resource"]
        assert answer["resourceType"] == "ClaimResponse"
        assert answer["outcome"] == "queued"
        # a member the payer does not hold this request for: 404
        stranger = PatientRef(
            identifiers=(
                Identifier(system=PLAN, value="MBR-00000001", kind=IdentifierKind.MEMBER_ID),
            )
        )
        missing = await http.post(
            "/fhir/Claim/$inquire",
            json=pas_inquiry_bundle(request_for(stranger)),
            headers={"Authorization": f"Bearer {API_KEY}"},
        )
        assert missing.status_code == 404
