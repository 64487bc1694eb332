"""Da Vinci admit/transfer/discharge notifications <-> encounter notices, both ways, every field;
what a payer refuses (with the element named); the R4 check of what is received and sent."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from cm_fhir.domain.events import NoticeKind
from cm_fhir.errors import MappingError, ValidationError
from cm_fhir.fhir.models import validate_bundle
from cm_fhir.fhir.notification import notification_bundle, parse_notification, read_header
from cm_fhir.fhir.pas_request import pas_inquiry_bundle
from notification_samples import ADMITTED, SPEC, as_read_by_the_payer, bundle, notice

Json = dict[str, Any]


@pytest.mark.parametrize("kind", list(NoticeKind))
def test_every_field_survives_the_round_trip(kind: NoticeKind) -> None:
    sent = notice(kind)
    document = bundle(kind)
    validate_bundle(document)  # what we send is R4
    assert document["meta"]["profile"] == [SPEC.notifications.bundle_profile]
    assert parse_notification(document, SPEC) == as_read_by_the_payer(sent)


def test_the_header_names_the_message_sender_and_event() -> None:
    header = read_header(bundle(NoticeKind.DISCHARGE), SPEC)
    assert header.message_id == notice(NoticeKind.DISCHARGE).message_id
    assert header.source == "https://ehr.riverside.example/fhir"
    assert header.event_code == "notification-discharge"
    assert header.kind == NoticeKind.DISCHARGE
    assert header.timestamp == ADMITTED


def test_optional_parts_may_be_absent() -> None:
    bare = notice(
        NoticeKind.TRANSFER,
        location=None,
        facility=None,
        payer=None,
        member_id=None,
        encounter_class=None,
    )
    document = notification_bundle(
        bare, SPEC, event_code="notification-transfer", timestamp=ADMITTED
    )
    read = parse_notification(document, SPEC)
    assert read.payer is None
    assert read.member_id is None
    assert read.location is None
    assert read.encounter_class == "IMP"  # the class is required in R4: IMP is sent
    assert read.at == ADMITTED  # a transfer has no time of its own: the Bundle's timestamp


def test_a_coverage_identifier_stands_in_for_a_missing_subscriber_id() -> None:
    document = bundle()
    coverage = next(
        e["resource"] for e in document["entry"] if e["resource"]["resourceType"] == "Coverage"
    )
    del coverage["subscriberId"]
    coverage["identifier"] = [{"system": "urn:oid:2.16.840.1.113883.3.9001.7", "value": "M-9"}]
    assert parse_notification(document, SPEC).member_id == "M-9"


def _broken(change: Any) -> Json:
    document = copy.deepcopy(bundle())
    change(document)
    return document


def _resource(document: Json, rtype: str) -> Json:
    found: Json = next(
        e["resource"] for e in document["entry"] if e["resource"]["resourceType"] == rtype
    )
    return found


BROKEN = {
    "Bundle": lambda d: d.update(resourceType="Parameters"),
    "Bundle.type": lambda d: d.update(type="collection"),
    "Bundle.entry": lambda d: d.update(entry=[]),
    "Bundle.entry[0]": lambda d: d["entry"].reverse(),
    "MessageHeader.id": lambda d: _resource(d, "MessageHeader").pop("id"),
    "Bundle.timestamp": lambda d: d.pop("timestamp"),
    "MessageHeader.event": lambda d: _resource(d, "MessageHeader").pop("eventCoding"),
    "MessageHeader.eventCoding": lambda d: _resource(d, "MessageHeader")["eventCoding"].update(
        code="notification-referral"
    ),
    "MessageHeader.source.endpoint": lambda d: _resource(d, "MessageHeader")["source"].pop(
        "endpoint"
    ),
    "MessageHeader.focus": lambda d: _resource(d, "MessageHeader").update(
        focus=[{"reference": "Encounter/elsewhere"}]
    ),
    "Encounter.identifier": lambda d: _resource(d, "Encounter").pop("identifier"),
    "Encounter.subject": lambda d: _resource(d, "Encounter").update(
        subject={"reference": "Patient/elsewhere"}
    ),
    "Patient.identifier": lambda d: _resource(d, "Patient").update(identifier=[{"value": "x"}]),
}


@pytest.mark.parametrize("path", sorted(BROKEN))
def test_an_unusable_notification_is_refused_naming_the_element(path: str) -> None:
    with pytest.raises(MappingError) as caught:
        parse_notification(_broken(BROKEN[path]), SPEC)
    assert caught.value.path == path


def test_an_event_code_from_another_system_is_refused() -> None:
    document = _broken(
        lambda d: _resource(d, "MessageHeader")["eventCoding"].update(system="http://example.org")
    )
    with pytest.raises(MappingError) as caught:
        parse_notification(document, SPEC)
    assert caught.value.path == "MessageHeader.eventCoding"


def test_a_resource_that_is_not_r4_is_refused_with_its_operation_outcome() -> None:
    document = _broken(lambda d: _resource(d, "Encounter").update(priority="urgent"))
    with pytest.raises(ValidationError) as caught:
        parse_notification(document, SPEC)
    issues = caught.value.outcome["issue"]
    assert issues
    assert all(i["severity"] == "error" for i in issues)
    assert ["Bundle.entry[1].resource.priority"] in [i.get("expression") for i in issues]


def test_the_shipped_examples_are_what_the_code_builds_today() -> None:
    folder = Path(__file__).resolve().parents[1] / "examples" / "pas"
    shipped = {p.name: json.loads(p.read_text()) for p in folder.glob("*.json")}
    assert shipped["admit-notification.json"] == bundle(NoticeKind.ADMIT)
    assert shipped["discharge-notification.json"] == bundle(NoticeKind.DISCHARGE)
    request = shipped["irf-admission-request.json"]
    assert shipped["irf-admission-inquiry.json"] == pas_inquiry_bundle(request)
    for document in shipped.values():
        validate_bundle(document)
