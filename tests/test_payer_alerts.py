"""Da Vinci Alerts notifications a hospital sends a member's payer, and the PAS inquiry: every
field as built, valid R4 (models and the profile validator), and stored by a real FHIR server."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from cm_fhir.domain import Identifier, NotificationEvent, PartyKind, PartyRef
from cm_fhir.domain.case import Coverage
from cm_fhir.errors import MappingError
from cm_fhir.fhir.alerts import ACT_CODE, EncounterNotice, notification_bundle
from cm_fhir.fhir.models import validate_bundle, validate_resource
from cm_fhir.fhir.pas_intake import parse_pas_request
from cm_fhir.fhir.pas_request import pas_inquiry_bundle, pas_request_bundle
from cm_fhir.mapping.payer_exchange import default_payer_exchange
from cm_fhir.mapping.registry import default_registry
from cm_fhir.profiles import default_validator, error_issues
from pas_samples import review, stroke_case

SPEC = default_payer_exchange()
BASE = default_registry().canonical_base
ALERTS = "http://hl7.org/fhir/us/davinci-alerts"
PAYER_URL = "https://payer.example/fhir"
ADMITTED = datetime(2026, 3, 1, 7, 45, tzinfo=UTC)
Json = dict[str, Any]


def notice(event: NotificationEvent = NotificationEvent.ADMIT, **changes: Any) -> EncounterNotice:
    case = stroke_case()
    fields: dict[str, Any] = {
        "event": event,
        "message_id": "RGH|MSG0001",
        "occurred": ADMITTED,
        "encounter": case.encounters[0],
        "admitted": ADMITTED,
        "location": "RGH 4W 412 A",
    }
    fields.update(changes)
    return EncounterNotice(**fields)


def bundle_of(event: NotificationEvent = NotificationEvent.ADMIT, **changes: Any) -> Json:
    case = stroke_case()
    return notification_bundle(
        case, case.coverage[0], notice(event, **changes), SPEC, BASE, PAYER_URL
    )


def by_type(bundle: Json) -> dict[str, Json]:
    return {e["resource"]["resourceType"]: e["resource"] for e in bundle["entry"]}


def url_of(bundle: Json, resource: Json) -> str:
    return next(str(e["fullUrl"]) for e in bundle["entry"] if e["resource"] is resource)


@pytest.mark.parametrize(
    ("event", "code", "status"),
    [
        (NotificationEvent.ADMIT, "notification-admit", "in-progress"),
        (NotificationEvent.TRANSFER, "notification-transfer", "in-progress"),
        (NotificationEvent.DISCHARGE, "notification-discharge", "finished"),
    ],
)
def test_each_event_is_a_message_bundle_with_its_event_code_and_the_encounter_as_focus(
    event: NotificationEvent, code: str, status: str
) -> None:
    bundle = bundle_of(event, discharged=ADMITTED.replace(day=4) if status == "finished" else None)
    validate_bundle(bundle)
    for entry in bundle["entry"]:
        validate_resource(entry["resource"])
    assert error_issues(default_validator().validate(bundle)) == []
    assert bundle["type"] == "message"
    assert bundle["meta"]["profile"] == [f"{ALERTS}/StructureDefinition/notifications-bundle"]
    header = bundle["entry"][0]["resource"]
    assert header["resourceType"] == "MessageHeader"
    assert header["eventCoding"] == {
        "system": f"{ALERTS}/CodeSystem/notification-event",
        "code": code,
    }
    resources = by_type(bundle)
    assert set(resources) >= {"MessageHeader", "Encounter", "Patient", "Coverage", "Organization"}
    encounter = resources["Encounter"]
    assert header["focus"] == [{"reference": url_of(bundle, encounter)}]
    assert encounter["status"] == status
    urls = [e["fullUrl"] for e in bundle["entry"]]
    assert len(urls) == len(set(urls))
    assert all(e["fullUrl"] == f"urn:uuid:{e['resource']['id']}" for e in bundle["entry"])


def test_every_field_of_the_case_and_the_event_is_carried() -> None:
    case = stroke_case()
    bundle = bundle_of(NotificationEvent.DISCHARGE, discharged=datetime(2026, 3, 9, 11, tzinfo=UTC))
    resources = by_type(bundle)
    header, encounter = resources["MessageHeader"], resources["Encounter"]
    patient, coverage = resources["Patient"], resources["Coverage"]
    patient_url = url_of(bundle, patient)
    # the patient by every identifier the case knows
    assert [(i["system"], i["value"]) for i in patient["identifier"]] == [
        (i.system, i.value) for i in case.patient.identifiers
    ]
    # the visit
    visit = case.encounters[0]
    assert encounter["identifier"][0]["system"] == visit.system
    assert encounter["identifier"][0]["value"] == visit.value
    assert encounter["class"] == {"system": ACT_CODE, "code": "IMP"}
    assert encounter["subject"] == {"reference": patient_url}
    assert encounter["period"] == {
        "start": "2026-03-01T07:45:00+00:00",
        "end": "2026-03-09T11:00:00+00:00",
    }
    # the coverage and its payer
    member = case.coverage[0]
    assert coverage["subscriberId"] == member.member_id
    assert coverage["identifier"][0]["value"] == member.member_id
    assert coverage["beneficiary"] == {"reference": patient_url}
    payers = [e for e in bundle["entry"] if e["fullUrl"] == coverage["payor"][0]["reference"]]
    assert len(payers) == 1
    assert payers[0]["resource"]["name"] == member.payer.display
    # sender, author and destination
    assert header["destination"][0]["endpoint"] == PAYER_URL
    assert header["destination"][0]["receiver"] == coverage["payor"][0]
    assert header["source"]["endpoint"] == BASE
    sender = case.managing_organization
    assert sender is not None
    senders = [e for e in bundle["entry"] if e["fullUrl"] == header["sender"]["reference"]]
    assert senders[0]["resource"]["name"] == sender.display
    assert header["author"] == header["sender"]
    assert bundle["timestamp"] == "2026-03-01T07:45:00+00:00"


def test_a_transfer_names_the_new_unit_and_the_class_follows_the_visit() -> None:
    encounter = by_type(bundle_of(NotificationEvent.TRANSFER, encounter_class="OBSENC"))[
        "Encounter"
    ]
    assert encounter["location"] == [{"location": {"display": "RGH 4W 412 A"}}]
    assert encounter["class"]["code"] == "OBSENC"


def test_a_resend_is_the_same_message_and_another_event_or_payer_is_not() -> None:
    first, again = bundle_of(), bundle_of()
    assert first == again  # a retry after a lost answer: the payer tells it by its identifier
    assert first["identifier"]["system"] == f"{BASE}/sid/alerts-notification"
    discharge = bundle_of(NotificationEvent.DISCHARGE)
    other_message = bundle_of(message_id="RGH|MSG0002")
    ids = {b["identifier"]["value"] for b in (first, discharge, other_message)}
    assert len(ids) == 3
    case = stroke_case()
    second = Coverage(
        payer=PartyRef(
            kind=PartyKind.ORGANIZATION,
            identifier=Identifier(system="urn:payer", value="P2"),
            display="Second Plan",
        ),
        member_id="M-2",
    )
    case = case.model_copy(update={"coverage": (*case.coverage, second)})
    to_second = notification_bundle(case, second, notice(), SPEC, BASE, PAYER_URL)
    assert to_second["identifier"]["value"] not in ids
    assert by_type(to_second)["Coverage"]["subscriberId"] == "M-2"


def test_a_coverage_that_is_not_the_cases_is_refused() -> None:
    stranger = Coverage(payer=stroke_case().coverage[0].payer, member_id="NOT-THEIRS")
    with pytest.raises(MappingError):
        notification_bundle(stroke_case(), stranger, notice(), SPEC, BASE)


def test_a_discharge_stamped_before_its_admission_never_runs_the_period_backwards() -> None:
    encounter = by_type(
        bundle_of(NotificationEvent.DISCHARGE, discharged=datetime(2026, 2, 27, tzinfo=UTC))
    )["Encounter"]
    assert encounter["period"]["start"] == encounter["period"]["end"]


def test_the_inquiry_is_the_request_with_the_inquiry_profiles_and_reads_as_the_same_review() -> (
    None
):
    case = stroke_case()
    request = pas_request_bundle(case, review(), SPEC, BASE)
    inquiry = pas_inquiry_bundle(case, review(), SPEC, BASE)
    validate_bundle(inquiry)
    assert error_issues(default_validator().validate(inquiry)) == []
    pas = "http://hl7.org/fhir/us/davinci-pas/StructureDefinition"
    assert inquiry["meta"]["profile"] == [f"{pas}/profile-pas-inquiry-request-bundle"]
    claim = inquiry["entry"][0]["resource"]
    assert claim["meta"]["profile"] == [f"{pas}/profile-claim-inquiry"]
    assert claim["identifier"] == request["entry"][0]["resource"]["identifier"]
    assert inquiry["identifier"]["value"] == request["identifier"]["value"] + ".inquiry"
    assert (
        parse_pas_request(inquiry, SPEC, "ur1").review
        == parse_pas_request(request, SPEC, "ur1").review
    )


# -- a real FHIR server ----------------------------------------------------------------------


@pytest.fixture
def client(fhir_server: str) -> Iterator[httpx.Client]:
    headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
    with httpx.Client(base_url=fhir_server, headers=headers, timeout=30.0) as http:
        yield http


@pytest.mark.parametrize("event", list(NotificationEvent))
def test_the_server_stores_the_message_and_each_resource_it_carries(
    client: httpx.Client, event: NotificationEvent
) -> None:
    bundle = bundle_of(event, message_id=f"RGH|{uuid.uuid4().hex[:10]}")
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
