"""What the payer exchange builds, stored by a real FHIR R4 server on loopback (which validates
structure, cardinality and required bindings), and read back unchanged in meaning."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from api_case_helpers import check_resource
from cm_fhir.domain import Period, ReviewDecision
from cm_fhir.domain.events import NoticeKind
from cm_fhir.fhir import map_case
from cm_fhir.fhir.notification import parse_notification
from cm_fhir.fhir.pas_intake import parse_pas_request
from cm_fhir.fhir.pas_request import pas_request_bundle
from cm_fhir.fhir.pas_response import claim_response, parse_claim_response
from cm_fhir.mapping.payer_exchange import default_payer_exchange
from cm_fhir.mapping.registry import default_registry
from cm_fhir.workflow import PatientState
from cm_fhir.workflow.payer_events import apply_notice
from notification_samples import bundle as notification_bundle_of
from notification_samples import notice
from pas_samples import REQUESTED, review, stroke_case

FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
SPEC = default_payer_exchange()
BASE = default_registry().canonical_base
Json = dict[str, Any]


@pytest.fixture
def client(fhir_server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fhir_server, headers=FHIR_JSON, timeout=30.0) as http:
        yield http


def create(client: httpx.Client, resource: Json) -> Json:
    body = {k: v for k, v in resource.items() if k != "id"}
    response = client.post(resource["resourceType"], content=json.dumps(body))
    assert response.status_code == 201, response.text[:2000]
    stored: Json = response.json()
    return stored


def test_the_request_bundle_and_each_of_its_resources_are_accepted(client: httpx.Client) -> None:
    case = stroke_case().model_copy(update={"id": f"UR-{uuid.uuid4().hex[:8]}"})
    bundle = pas_request_bundle(case, review(), SPEC, BASE)
    stored = create(client, bundle)
    assert (
        parse_pas_request(stored, SPEC, "ur1").review
        == parse_pas_request(bundle, SPEC, "ur1").review
    )
    for entry in bundle["entry"]:
        create(client, entry["resource"])


def test_every_decision_as_a_claim_response_is_accepted_and_reads_back(
    client: httpx.Client,
) -> None:
    pended = parse_pas_request(pas_request_bundle(stroke_case(), review(), SPEC, BASE), SPEC, "ur1")
    at = REQUESTED + timedelta(hours=30)
    grants: dict[ReviewDecision, Json] = {
        ReviewDecision.APPROVED: {
            "authorized_quantity": 3,
            "authorization_number": "AUTH-1",
            "authorized_period": Period(start=at, end=at + timedelta(days=3)),
            "reason": "Meets criteria",
        },
        ReviewDecision.PARTIALLY_APPROVED: {"authorized_quantity": 2},
        ReviewDecision.DENIED: {"reason": "Criteria not met"},
        ReviewDecision.PENDED: {},
    }
    for decision, grant in grants.items():
        decided = pended.review.decide(decision, at, **grant)
        stored = create(client, claim_response(decided, pended.patient, SPEC, BASE, at))
        assert parse_claim_response(stored, SPEC).apply(pended.review, at) == decided


@pytest.mark.parametrize("kind", list(NoticeKind))
def test_each_notification_bundle_and_its_resources_are_accepted_and_read_back(
    client: httpx.Client, kind: NoticeKind
) -> None:
    document = notification_bundle_of(kind)
    stored = create(client, document)
    assert parse_notification(stored, SPEC) == parse_notification(document, SPEC)
    for entry in document["entry"]:
        create(client, entry["resource"])


def test_a_payer_case_with_its_next_review_is_accepted_and_reads_back(
    client: httpx.Client,
) -> None:
    opened = apply_notice(notice(), PatientState(), SPEC, now=REQUESTED)
    (case,) = opened.changed_cases
    assert case.next_review is not None
    episode = map_case(case)["entry"][0]["resource"]
    check_resource(episode)  # our EpisodeOfCare profile, its next-review slice included
    stored = create(client, episode)
    url = default_registry().extension("next_review")
    (ext,) = [e for e in stored["extension"] if e["url"] == url]
    assert ext["valueDate"] == case.next_review.isoformat()
