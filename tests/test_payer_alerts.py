"""Da Vinci Alerts notifications a hospital sends a member's payer, and the PAS inquiry: what the
hospital side adds (profiles, identifier system, sender, destination, coverage), valid R4 (models
and the profile validator), read back by the payer side, and stored by a real FHIR server."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from cm_fhir.domain.events import NoticeKind
from cm_fhir.errors import MappingError
from cm_fhir.fhir.models import validate_bundle, validate_resource
from cm_fhir.fhir.notification import notification_bundle, parse_notification
from cm_fhir.fhir.pas_request import pas_inquiry_bundle, pas_request_bundle
from cm_fhir.mapping.payer_exchange import default_payer_exchange
from cm_fhir.mapping.registry import default_registry
from cm_fhir.profiles import default_validator, error_issues
from notification_samples import ADMITTED, as_read_by_the_payer, notice
from pas_samples import review, stroke_case

SPEC = default_payer_exchange()
BASE = default_registry().canonical_base
ALERTS = "http://hl7.org/fhir/us/davinci-alerts"
PAYER_URL = "https://payer.example/fhir"
Json = dict[str, Any]


def bundle_of(kind: NoticeKind = NoticeKind.ADMIT, **changes: Any) -> Json:
    return notification_bundle(
        notice(kind, **changes), SPEC, timestamp=ADMITTED, destination=PAYER_URL
    )


def by_type(bundle: Json) -> dict[str, Json]:
    return {e["resource"]["resourceType"]: e["resource"] for e in bundle["entry"]}


def url_of(bundle: Json, resource: Json) -> str:
    return next(str(e["fullUrl"]) for e in bundle["entry"] if e["resource"] is resource)


@pytest.mark.parametrize(
    ("kind", "code", "status"),
    [
        (NoticeKind.ADMIT, "notification-admit", "in-progress"),
        (NoticeKind.TRANSFER, "notification-transfer", "in-progress"),
        (NoticeKind.DISCHARGE, "notification-discharge", "finished"),
    ],
)
def test_each_event_is_a_message_bundle_with_its_event_code_and_the_encounter_as_focus(
    kind: NoticeKind, code: str, status: str
) -> None:
    bundle = bundle_of(kind)
    validate_bundle(bundle)
    for entry in bundle["entry"]:
        validate_resource(entry["resource"])
    assert error_issues(default_validator().validate(bundle)) == []
    assert bundle["type"] == "message"
    assert bundle["meta"]["profile"] == [f"{ALERTS}/StructureDefinition/notifications-bundle"]
    header = bundle["entry"][0]["resource"]
    assert header["resourceType"] == "MessageHeader"
    assert header["meta"]["profile"] == [
        f"{ALERTS}/StructureDefinition/notifications-messageheader"
    ]
    assert header["eventCoding"] == {
        "system": f"{ALERTS}/CodeSystem/notification-event",
        "code": code,
    }
    resources = by_type(bundle)
    assert set(resources) >= {"MessageHeader", "Encounter", "Patient", "Coverage", "Organization"}
    encounter = resources["Encounter"]
    assert encounter["meta"]["profile"] == [
        f"{ALERTS}/StructureDefinition/adt-notification-encounter"
    ]
    assert header["focus"] == [{"reference": url_of(bundle, encounter)}]
    assert encounter["status"] == status
    urls = [e["fullUrl"] for e in bundle["entry"]]
    assert len(urls) == len(set(urls))
    assert all(e["fullUrl"] == f"urn:uuid:{e['resource']['id']}" for e in bundle["entry"])
    assert parse_notification(bundle, SPEC) == as_read_by_the_payer(notice(kind))


def test_the_hospital_side_fields_sender_destination_and_coverage() -> None:
    sent = notice(NoticeKind.DISCHARGE)
    bundle = bundle_of(NoticeKind.DISCHARGE)
    resources = by_type(bundle)
    header, coverage = resources["MessageHeader"], resources["Coverage"]
    patient_url = url_of(bundle, resources["Patient"])
    assert bundle["identifier"] == {
        "system": f"{BASE}/sid/alerts-notification",
        "value": sent.message_id,
    }
    assert header["source"]["endpoint"] == sent.source
    assert header["destination"] == [{"endpoint": PAYER_URL, "receiver": coverage["payor"][0]}]
    assert header["author"] == header["sender"]
    senders = [e for e in bundle["entry"] if e["fullUrl"] == header["sender"]["reference"]]
    assert len(senders) == 1
    assert senders[0]["resource"]["name"] == sent.facility.display if sent.facility else False
    assert coverage["subscriberId"] == sent.member_id
    assert coverage["identifier"][0]["value"] == sent.member_id
    assert coverage["beneficiary"] == {"reference": patient_url}
    payers = [e for e in bundle["entry"] if e["fullUrl"] == coverage["payor"][0]["reference"]]
    assert len(payers) == 1
    assert payers[0]["resource"]["name"] == "Lakeside Health Plan"


def test_a_resend_is_the_same_message_and_another_notice_is_not() -> None:
    first, again = bundle_of(), bundle_of()
    assert first == again  # a retry after a lost answer: the payer tells it by its identifier
    other = bundle_of(message_id="RGH|MSG0002|admit|x")
    assert other["identifier"]["value"] != first["identifier"]["value"]
    assert {e["fullUrl"] for e in other["entry"]}.isdisjoint(e["fullUrl"] for e in first["entry"])


def test_a_discharge_stamped_before_its_admission_never_runs_the_period_backwards() -> None:
    encounter = by_type(
        bundle_of(NoticeKind.DISCHARGE, discharged=datetime(2026, 2, 27, tzinfo=UTC))
    )["Encounter"]
    assert encounter["period"]["start"] == encounter["period"]["end"]


def test_an_event_code_of_another_kind_is_refused() -> None:
    with pytest.raises(MappingError):
        notification_bundle(notice(), SPEC, timestamp=ADMITTED, event_code="notification-discharge")


def test_the_hospitals_inquiry_carries_the_inquiry_profiles_and_the_requests_identifiers() -> None:
    case = stroke_case()
    request = pas_request_bundle(case, review(), SPEC, BASE)
    inquiry = pas_inquiry_bundle(request, SPEC)
    validate_bundle(inquiry)
    assert error_issues(default_validator().validate(inquiry)) == []
    pas = "http://hl7.org/fhir/us/davinci-pas/StructureDefinition"
    assert inquiry["meta"]["profile"] == [f"{pas}/profile-pas-inquiry-request-bundle"]
    claim = inquiry["entry"][0]["resource"]
    assert claim["meta"]["profile"] == [f"{pas}/profile-claim-inquiry"]
    assert claim["identifier"] == request["entry"][0]["resource"]["identifier"]
    assert inquiry["identifier"] == {
        "system": request["identifier"]["system"],
        "value": request["identifier"]["value"] + ".inquiry",
    }
    unstamped = pas_inquiry_bundle(request)
    assert "meta" not in unstamped
    assert unstamped["entry"][1:] == inquiry["entry"][1:]


# -- a real FHIR server ----------------------------------------------------------------------


@pytest.fixture
def client(fhir_server: str) -> Iterator[httpx.Client]:
    headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
    with httpx.Client(base_url=fhir_server, headers=headers, timeout=30.0) as http:
        yield http


@pytest.mark.parametrize("kind", list(NoticeKind))
def test_the_server_stores_the_message_and_each_resource_it_carries(
    client: httpx.Client, kind: NoticeKind
) -> None:
    bundle = bundle_of(kind, message_id=f"RGH|{uuid.uuid4().hex[:10]}")
    for resource in [bundle, *(e["resource"] for e in bundle["entry"])]:
        body = {k: v for k, v in resource.items() if k != "id"}
        response = client.post(resource["resourceType"], content=json.dumps(body))
        assert response.status_code == 201, response.text[:2000]
        stored = response.json()
        if resource["resourceType"] == "MessageHeader":
            assert stored["eventCoding"] == resource["eventCoding"]
        if resource["resourceType"] == "Bundle":
            assert stored["identifier"] == resource["identifier"]
            assert len(stored["entry"]) == len(resource["entry"])
