"""A utilization review <-> Da Vinci PAS, both ways, field by field; what we build is valid R4.

The request goes out as a Bundle with the Claim first and comes back (as a payer reads it) as the
same review; a decision goes out as a ClaimResponse and comes back as the same decision. Payers'
ClaimResponses are read across PAS versions (STU1 item extension, STU2 adjudication, 2.2 code
directly, none at all); other clients' request Bundles are read without rejecting what we do
not use.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cm_fhir.domain import (
    LevelOfCare,
    PatientRef,
    Period,
    ReviewDecision,
    ReviewType,
    ReviewUrgency,
    ServiceUnit,
)
from cm_fhir.errors import MappingError, MappingSpecError, ValidationError
from cm_fhir.fhir.models import validate_bundle, validate_resource
from cm_fhir.fhir.pas_intake import parse_pas_request
from cm_fhir.fhir.pas_request import pas_request_bundle
from cm_fhir.fhir.pas_response import (
    claim_response,
    claim_response_of,
    parse_claim_response,
    pas_response_bundle,
)
from cm_fhir.mapping.payer_exchange import default_payer_exchange, load_payer_exchange
from cm_fhir.mapping.registry import default_registry
from pas_samples import REQUESTED, review, stroke_case

SPEC = default_payer_exchange()
BASE = default_registry().canonical_base
DECIDED = REQUESTED + timedelta(hours=20)
Json = dict[str, Any]
PAS = "http://hl7.org/fhir/us/davinci-pas/StructureDefinition"
X12_306 = "https://codesystem.x12.org/005010/306"


def request_bundle(**changes: Any) -> Json:
    return pas_request_bundle(stroke_case(), review(**changes), SPEC, BASE)


def test_the_request_bundle_is_valid_r4_with_the_preauthorization_claim_first() -> None:
    bundle = request_bundle()
    validate_bundle(bundle)
    for entry in bundle["entry"]:
        validate_resource(entry["resource"])
    claim = bundle["entry"][0]["resource"]
    assert bundle["type"] == "collection"
    assert bundle["meta"]["profile"] == [f"{PAS}/profile-pas-request-bundle"]
    assert (claim["resourceType"], claim["use"]) == ("Claim", "preauthorization")
    assert claim["meta"]["profile"] == [f"{PAS}/profile-claim"]
    kinds = [e["resource"]["resourceType"] for e in bundle["entry"]]
    assert kinds == ["Claim", "Patient", "Coverage", "Organization", "Organization"]
    urls = {e["fullUrl"] for e in bundle["entry"]}
    for ref in (
        claim["patient"],
        claim["insurer"],
        claim["provider"],
        claim["insurance"][0]["coverage"],
    ):
        assert ref["reference"] in urls


def test_the_request_carries_the_supporting_information_pas_names() -> None:
    claim = request_bundle()["entry"][0]["resource"]
    by_category = {i["category"]["coding"][0]["code"]: i for i in claim["supportingInfo"]}
    assert by_category["admissionReview"]["timingDate"] == "2026-03-01"
    assert by_category["freeFormMessage"]["valueString"].startswith("Left MCA stroke")
    systems = {i["category"]["coding"][0]["system"] for i in claim["supportingInfo"]}
    assert systems == {"http://hl7.org/fhir/us/davinci-pas/CodeSystem/PASSupportingInfoType"}
    assert claim["item"][0]["productOrService"]["coding"][0]["code"] == "irf"
    assert claim["item"][0]["quantity"]["value"] == 10
    assert claim["priority"]["coding"][0]["code"] == "stat"
    coverage = request_bundle()["entry"][2]["resource"]
    assert coverage["subscriberId"] == "MBR-55512309"


def test_the_same_review_builds_the_same_bytes() -> None:
    assert request_bundle() == request_bundle()


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"urgency": ReviewUrgency.STANDARD, "review_type": ReviewType.CONCURRENT},
        {"review_type": ReviewType.RETROSPECTIVE, "criteria_set": None, "criteria_subset": None},
        {
            "requested_level_of_care": LevelOfCare.HOME_HEALTH,
            "unit": ServiceUnit.VISIT,
            "requested_quantity": 12,
            "admitted": None,
            "clinical_summary": None,
            "encounter": None,
        },
        {"requested_level_of_care": None, "requested_quantity": None},
    ],
)
def test_a_request_reads_back_as_the_review_it_was_built_from(changes: Json) -> None:
    sent = review(**changes)
    bundle = pas_request_bundle(stroke_case(), sent, SPEC, BASE)
    read = parse_pas_request(bundle, SPEC, review_id="ur1")
    claim = bundle["entry"][0]["resource"]
    expected = sent.model_copy(update={"request_identifier": read.review.request_identifier})
    assert read.review == expected
    assert read.review.request_identifier is not None
    assert (
        read.review.request_identifier.value
        == claim["identifier"][0]["value"]
        == "HOSP-2026-0412.ur1"
    )
    mrn, member = stroke_case().patient.identifiers
    assert read.patient == PatientRef(identifiers=(member, mrn))  # the member id leads
    assert read.member_id == "MBR-55512309"
    assert read.claim_entry == 0


def test_a_request_needs_the_provider_and_a_coverage_with_the_payer() -> None:
    with pytest.raises(MappingError, match="requesting provider"):
        request_bundle(requester=None)
    other = stroke_case().coverage[0].payer.model_copy(update={"display": "Another plan"})
    with pytest.raises(MappingError, match="no coverage"):
        request_bundle(payer=other)


def foreign_bundle() -> Json:
    """A PAS request as another client sends it: Type/id references, a ServiceRequest-backed
    item with X12-ish codes we do not know, Conditions, a QuestionnaireResponse, a Location."""
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {
                "fullUrl": "http://ehr.example/fhir/Location/loc1",
                "resource": {"resourceType": "Location", "id": "loc1"},
            },
            {
                "fullUrl": "http://ehr.example/fhir/Claim/c9",
                "resource": {
                    "resourceType": "Claim",
                    "id": "c9",
                    "identifier": [{"system": "urn:trnorg:1234567890", "value": "TRN-0001"}],
                    "status": "active",
                    "type": {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/claim-type",
                                "code": "professional",
                            }
                        ]
                    },
                    "use": "preauthorization",
                    "patient": {"reference": "Patient/p1"},
                    "created": "2026-03-03T10:00:00-05:00",
                    "insurer": {"reference": "Organization/ins"},
                    "provider": {"reference": "PractitionerRole/pr1", "display": "Dr Ada Osei"},
                    "priority": {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/processpriority",
                                "code": "normal",
                            }
                        ]
                    },
                    "diagnosis": [
                        {
                            "sequence": 1,
                            "diagnosisCodeableConcept": {
                                "coding": [
                                    {
                                        "system": "http://hl7.org/fhir/sid/icd-10-cm",
                                        "code": "I63.512",
                                    }
                                ]
                            },
                        }
                    ],
                    "supportingInfo": [
                        {
                            "sequence": 1,
                            "category": {
                                "coding": [
                                    {
                                        "system": "http://hl7.org/fhir/us/davinci-pas/CodeSystem/PASSupportingInfoType",
                                        "code": "admissionReview",
                                    }
                                ]
                            },
                            "timingPeriod": {"start": "2026-03-01T08:00:00-05:00"},
                        },
                        {
                            "sequence": 2,
                            "category": {
                                "coding": [
                                    {
                                        "system": "http://hl7.org/fhir/us/davinci-pas/CodeSystem/PASSupportingInfoType",
                                        "code": "additionalInformation",
                                    }
                                ]
                            },
                            "valueReference": {"reference": "QuestionnaireResponse/q1"},
                        },
                    ],
                    "insurance": [
                        {"sequence": 1, "focal": True, "coverage": {"reference": "Coverage/cov1"}}
                    ],
                    "item": [
                        {
                            "sequence": 1,
                            "extension": [
                                {
                                    "url": f"{PAS}/extension-requestedService",
                                    "valueReference": {"reference": "ServiceRequest/sr1"},
                                }
                            ],
                            "productOrService": {
                                "coding": [
                                    {
                                        "system": "https://codesystem.x12.org/005010/1365",
                                        "code": "42",
                                    }
                                ]
                            },
                            "quantity": {"value": 8, "unit": "visits", "code": "visit"},
                        }
                    ],
                },
            },
            {
                "fullUrl": "http://ehr.example/fhir/Patient/p1",
                "resource": {
                    "resourceType": "Patient",
                    "id": "p1",
                    "identifier": [{"system": "urn:oid:1.2.3", "value": "MRN-9"}],
                },
            },
            {
                "fullUrl": "http://ehr.example/fhir/Organization/ins",
                "resource": {
                    "resourceType": "Organization",
                    "id": "ins",
                    "identifier": [
                        {"system": "http://hl7.org/fhir/sid/us-npi", "value": "1999999984"}
                    ],
                    "name": "Lakeside Health Plan",
                },
            },
            {
                "fullUrl": "http://ehr.example/fhir/Coverage/cov1",
                "resource": {
                    "resourceType": "Coverage",
                    "id": "cov1",
                    "status": "active",
                    "identifier": [{"value": "MBR-1"}],
                    "beneficiary": {"reference": "Patient/p1"},
                    "payor": [{"reference": "Organization/ins"}],
                },
            },
            {
                "fullUrl": "http://ehr.example/fhir/ServiceRequest/sr1",
                "resource": {
                    "resourceType": "ServiceRequest",
                    "id": "sr1",
                    "status": "active",
                    "intent": "order",
                    "subject": {"reference": "Patient/p1"},
                },
            },
            {
                "fullUrl": "http://ehr.example/fhir/QuestionnaireResponse/q1",
                "resource": {
                    "resourceType": "QuestionnaireResponse",
                    "id": "q1",
                    "status": "completed",
                },
            },
            {
                "fullUrl": "http://ehr.example/fhir/PractitionerRole/pr1",
                "resource": {"resourceType": "PractitionerRole", "id": "pr1"},
            },
        ],
    }


def test_another_clients_bundle_is_read_without_rejecting_what_we_do_not_use() -> None:
    bundle = foreign_bundle()
    validate_bundle(bundle)
    kept = copy.deepcopy(bundle)
    read = parse_pas_request(bundle, SPEC, review_id="r-9")
    assert bundle == kept  # reading changes nothing; every entry stays for the caller to keep
    r = read.review
    assert read.claim_entry == 1
    assert (r.request_identifier and r.request_identifier.value) == "TRN-0001"
    assert r.requested == datetime(2026, 3, 3, 15, 0, tzinfo=UTC)
    assert r.admitted == date(2026, 3, 1)
    assert (r.requested_quantity, r.unit) == (8, ServiceUnit.VISIT)
    assert r.requested_level_of_care is None  # X12 service types are not ours to guess
    assert (r.review_type, r.urgency) == (ReviewType.ADMISSION, ReviewUrgency.STANDARD)
    assert r.payer.display == "Lakeside Health Plan"
    assert r.payer.identifier is not None
    assert r.payer.identifier.value == "1999999984"
    assert r.requester is not None
    assert r.requester.display == "Dr Ada Osei"
    assert read.patient.primary.value == "MRN-9"
    assert read.member_id == "MBR-1"
    assert [d.code for d in read.diagnoses] == ["I63.512"]


@pytest.mark.parametrize(
    ("breaks", "path", "words"),
    [
        (lambda b: b.update(resourceType="Parameters"), "Bundle", "not a FHIR Bundle"),
        (lambda b: b.update(entry=[]), "Bundle.entry", "no entries"),
        (lambda b: b["entry"].pop(1), "Bundle.entry[0]", "no Claim"),
        (lambda b: b["entry"][1]["resource"].update(use="claim"), "Bundle.entry[0]", "no Claim"),
        (lambda b: b["entry"].insert(0, copy.deepcopy(b["entry"][1])), "Claim.use", None),
        (
            lambda b: b["entry"][1]["resource"].pop("identifier"),
            "Claim.identifier",
            "business identifier",
        ),
        (lambda b: b["entry"][2]["resource"].pop("identifier"), "Claim.patient", "no identifier"),
        (lambda b: b["entry"][1]["resource"].pop("created"), "Claim.created", "no 'created'"),
        (lambda b: b["entry"][1]["resource"].update(created="yesterday"), "Claim.created", None),
        (lambda b: b["entry"][3]["resource"].clear(), "Claim.insurer", "no insurer"),
        (
            lambda b: b["entry"][1]["resource"]["item"][0]["quantity"].update(value=2.5),
            "Claim.item[0].quantity.value",
            "whole number",
        ),
    ],
)
def test_a_bundle_without_a_usable_claim_names_the_problem(
    breaks: Any, path: str, words: str | None
) -> None:
    bundle = foreign_bundle()
    breaks(bundle)
    if path == "Claim.use":
        bundle["entry"][0]["resource"]["use"] = "claim"
    with pytest.raises(MappingError) as caught:
        parse_pas_request(bundle, SPEC, review_id="r-9")
    assert caught.value.path == path
    if words:
        assert words in str(caught.value)


@pytest.mark.parametrize(
    ("breaks", "path"),
    [
        (lambda c: c["item"][0]["quantity"].update(value=True), "Claim.item[0].quantity.value"),
        (lambda c: c["item"][0]["quantity"].update(value=1e300), "Claim.item[0].quantity.value"),
        (lambda c: c["item"][0]["quantity"].update(value=367), "Claim.item[0].quantity.value"),
    ],
)
def test_a_requested_quantity_is_a_whole_number_of_days_or_visits(breaks: Any, path: str) -> None:
    bundle = foreign_bundle()
    breaks(bundle["entry"][1]["resource"])
    with pytest.raises(MappingError) as caught:
        parse_pas_request(bundle, SPEC, review_id="r-9")
    assert caught.value.path == path
    assert "validation error" not in str(caught.value)  # our words, not the library's


@pytest.mark.parametrize(
    ("element", "value", "where"),
    [
        ("priority", "stat", "Claim.priority"),
        ("subType", [1], "Claim.subType"),
        ("diagnosis", [{"sequence": 1, "diagnosisCodeableConcept": "x"}], "Claim.diagnosis"),
        ("insurance", [{"sequence": 1, "focal": True, "coverage": "x"}], "Claim.insurance"),
    ],
)
def test_a_claim_that_is_not_valid_r4_is_refused_with_its_operation_outcome(
    element: str, value: Any, where: str
) -> None:
    bundle = foreign_bundle()
    bundle["entry"][1]["resource"][element] = value
    with pytest.raises(ValidationError) as caught:
        parse_pas_request(bundle, SPEC, review_id="r-9")
    expressions = [e for i in caught.value.outcome["issue"] for e in i.get("expression", [])]
    assert any(e.startswith(where) for e in expressions), expressions


def decided(decision: ReviewDecision, **grant: Any) -> Any:
    sent = pas_request_bundle(stroke_case(), review(), SPEC, BASE)
    pended = parse_pas_request(sent, SPEC, review_id="ur1")
    return pended, pended.review.decide(decision, DECIDED, **grant)


@pytest.mark.parametrize(
    ("decision", "grant", "code"),
    [
        (
            ReviewDecision.APPROVED,
            {
                "authorized_quantity": 10,
                "authorization_number": "AUTH-7731",
                "authorized_period": Period(start=REQUESTED, end=REQUESTED + timedelta(days=10)),
                "next_review": date(2026, 3, 6),
                "reason": "Meets IRF criteria",
            },
            "A1",
        ),
        (
            ReviewDecision.PARTIALLY_APPROVED,
            {
                "authorized_quantity": 3,
                "authorization_number": "AUTH-7732",
                "next_review": date(2026, 3, 4),
            },
            "A2",
        ),
        (ReviewDecision.DENIED, {"reason": "Does not meet IRF criteria; SNF suggested"}, "A3"),
        (ReviewDecision.PENDED, {}, "A4"),
    ],
)
def test_a_decision_goes_out_and_reads_back_as_the_same_decision(
    decision: ReviewDecision, grant: Json, code: str
) -> None:
    pended, review_out = decided(decision, **grant)
    response = claim_response(review_out, pended.patient, SPEC, BASE, DECIDED)
    bundle = pas_response_bundle(response, SPEC, DECIDED)
    validate_bundle(bundle)
    validate_resource(response)
    assert claim_response_of(bundle) is response
    assert response["outcome"] == ("queued" if decision == ReviewDecision.PENDED else "complete")
    assert response["request"]["identifier"]["value"] == "HOSP-2026-0412.ur1"
    adjudication = response["item"][0]["adjudication"][0]
    assert adjudication["extension"][0]["url"] == f"{PAS}/extension-reviewAction"
    assert adjudication["extension"][0]["extension"][0]["valueCodeableConcept"]["coding"][0] == {
        "system": X12_306,
        "code": code,
    }
    outcome = parse_claim_response(response, SPEC)
    assert outcome.review_action_code == code
    assert outcome.apply(pended.review, DECIDED + timedelta(hours=1)) == review_out


def stu1_response(code: str | None, **extra: Any) -> Json:
    """An earlier PAS version's ClaimResponse: review action on the item, sub-extension 'code'."""
    item: Json = {
        "itemSequence": 1,
        "adjudication": [{"category": {"coding": [{"code": "submitted"}]}}],
    }
    if code is not None:
        item["extension"] = [
            {
                "url": f"{PAS}/extension-reviewAction",
                "extension": [
                    {
                        "url": "code",
                        "valueCodeableConcept": {"coding": [{"system": X12_306, "code": code}]},
                    }
                ],
            }
        ]
    return {
        "resourceType": "ClaimResponse",
        "status": "active",
        "type": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/claim-type",
                    "code": "institutional",
                }
            ]
        },
        "use": "preauthorization",
        "patient": {"reference": "Patient/p1"},
        "created": "2026-03-02T18:00:00Z",
        "insurer": {"display": "Lakeside Health Plan"},
        "outcome": "complete",
        "item": [item],
        **extra,
    }


def test_earlier_versions_carry_the_review_action_on_the_item_or_the_claim_response() -> None:
    on_item = stu1_response(
        "A1", preAuthRef="AUTH-1", preAuthPeriod={"start": "2026-03-02", "end": "2026-03-05"}
    )
    validate_resource(on_item)
    outcome = parse_claim_response(on_item, SPEC)
    assert (outcome.decision, outcome.authorization_number) == (ReviewDecision.APPROVED, "AUTH-1")
    assert outcome.authorized_period == Period(
        start=datetime(2026, 3, 2, tzinfo=UTC), end=datetime(2026, 3, 5, tzinfo=UTC)
    )
    assert outcome.next_review is None  # PAS has no element for it; the period is not a guess
    on_root = stu1_response(None, disposition="Not certified")
    on_root["extension"] = on_item["item"][0]["extension"]
    on_root["extension"][0]["extension"][0]["valueCodeableConcept"]["coding"][0]["code"] = "A3"
    denied = parse_claim_response(on_root, SPEC)
    assert (denied.decision, denied.disposition) == (ReviewDecision.DENIED, "Not certified")


def test_pas_2_2_may_put_the_review_action_code_on_the_adjudication_directly() -> None:
    response = stu1_response(None)
    response["item"][0]["adjudication"][0]["extension"] = [
        {
            "url": f"{PAS}/extension-reviewActionCode",
            "valueCodeableConcept": {"coding": [{"system": X12_306, "code": "A3"}]},
        }
    ]
    assert parse_claim_response(response, SPEC).decision == ReviewDecision.DENIED


@pytest.mark.parametrize("code", [None, "ZZ", "NA"])
def test_no_or_an_unknown_review_action_is_the_neutral_default(code: str | None) -> None:
    response = stu1_response(code, preAuthRef="AUTH-9")
    outcome = parse_claim_response(response, SPEC)
    assert outcome.decision == ReviewDecision.PENDED
    assert outcome.review_action_code == code
    assert outcome.authorized_quantity is None
    assert outcome.authorized_period is None


def test_the_review_action_map_is_configurable_per_site(tmp_path: Path) -> None:
    (tmp_path / "payer-exchange.yaml").write_text(
        "review_actions:\n  default: denied\n  codes:\n    ZZ: approved\n"
    )
    site = load_payer_exchange(tmp_path)
    assert parse_claim_response(stu1_response("ZZ"), site).decision == ReviewDecision.APPROVED
    assert parse_claim_response(stu1_response("QQ"), site).decision == ReviewDecision.DENIED
    assert site.review_actions.codes["A1"] == ReviewDecision.APPROVED  # the bundled codes stay


def test_a_bad_review_action_map_fails_at_load_naming_file_and_key(tmp_path: Path) -> None:
    (tmp_path / "payer-exchange.yaml").write_text("review_actions:\n  codes:\n    A1: granted\n")
    with pytest.raises(MappingSpecError) as caught:
        load_payer_exchange(tmp_path)
    assert "payer-exchange.yaml" in str(caught.value)
    assert "review_actions.codes.A1" in str(caught.value)


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (
            lambda r: r["item"][0]["adjudication"][0].update(value="three"),
            "ClaimResponse.item.adjudication[0].value",
        ),
        (
            lambda r: r["item"][0]["adjudication"][0].update(value=2.5),
            "ClaimResponse.item.adjudication[0].value",
        ),
        (
            lambda r: r.update(preAuthPeriod={"start": "2026-03-05", "end": "2026-03-01"}),
            "ClaimResponse.preAuthPeriod",
        ),
        (lambda r: r.update(created="soon"), "ClaimResponse.created"),
        (lambda r: r.update(resourceType="Claim"), "ClaimResponse"),
    ],
)
def test_a_malformed_claim_response_names_the_element(mutate: Any, path: str) -> None:
    response = stu1_response("A1")
    mutate(response)
    with pytest.raises(MappingError) as caught:
        parse_claim_response(response, SPEC)
    assert caught.value.path == path


def test_an_answer_whose_first_entry_is_not_a_claim_response_is_refused() -> None:
    with pytest.raises(MappingError, match="first entry"):
        claim_response_of(
            {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"resource": {"resourceType": "Patient"}}],
            }
        )


def test_the_shipped_example_request_is_what_the_mapper_builds_today() -> None:
    shipped = (
        Path(__file__).resolve().parents[1] / "examples" / "pas" / "irf-admission-request.json"
    )
    assert json.loads(shipped.read_text()) == request_bundle()


def test_a_date_only_or_early_created_never_puts_the_decision_before_the_request() -> None:
    pended = parse_pas_request(request_bundle(), SPEC, review_id="ur1").review
    response = stu1_response("A1", created="2026-03-02")  # midnight, before the 09:30 request
    decided = parse_claim_response(response, SPEC).apply(pended, REQUESTED + timedelta(hours=1))
    assert decided.decided == REQUESTED
