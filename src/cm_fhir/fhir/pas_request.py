"""A utilization review <-> a Da Vinci PAS request Bundle (``Claim/$submit``), both ways. Pure.

:func:`pas_request_bundle` builds what a provider sends: a ``collection`` Bundle whose first entry
is the Claim (``use = preauthorization``), then the Patient, the Coverage, the payer and the
requesting provider. The Claim carries the requested level of care and quantity on its item and in
``supportingInfo`` (admission date, level of care, criteria set, clinical summary), the urgency as
``priority`` and the review type as ``subType``.

The other way, what a payer receives, is :mod:`cm_fhir.fhir.pas_intake`.
:func:`pas_inquiry_bundle` builds the ``Claim/$inquire`` Bundle for a submitted request.
"""

from __future__ import annotations

from typing import Any

from cm_fhir.domain.case import Case, Coverage
from cm_fhir.domain.codes import IdentifierKind, PartyKind, ReviewUrgency, ServiceUnit
from cm_fhir.domain.common import PartyRef
from cm_fhir.domain.review import UtilizationReview
from cm_fhir.errors import MappingError
from cm_fhir.fhir.datatypes import day, identifier, instant
from cm_fhir.fhir.ids import local_value, resource_id
from cm_fhir.mapping.payer_exchange import PayerExchange

Json = dict[str, Any]
CLAIM_TYPE = "http://terminology.hl7.org/CodeSystem/claim-type"
PROCESS_PRIORITY = "http://terminology.hl7.org/CodeSystem/processpriority"
_PRIORITY = {ReviewUrgency.EXPEDITED: "stat", ReviewUrgency.STANDARD: "normal"}
#: UCUM code and words of each unit; :mod:`cm_fhir.fhir.pas_intake` reads the code back.
UCUM_UNITS = {ServiceUnit.DAY: ("d", "days"), ServiceUnit.VISIT: ("{visit}", "visits")}


def urn(spec_base: str, rtype: str, system: str, value: str) -> str:
    return f"urn:uuid:{resource_id(spec_base, rtype, system, value)}"


def party_resource(party: PartyRef, full_url: str) -> Json:
    """An Organization or Practitioner with the party's identifier and name, id from its URN."""
    out: Json = {"resourceType": party.kind.value, "id": full_url.rsplit(":", 1)[1]}
    if party.identifier is not None:
        out["identifier"] = [identifier(party.identifier)]
    if party.display is not None and party.kind == PartyKind.ORGANIZATION:
        out["name"] = party.display
    elif party.display is not None and party.kind == PartyKind.PRACTITIONER:
        out["name"] = [{"text": party.display}]
    return out


def party_key(party: PartyRef) -> str:
    """What tells parties apart in their URNs: the identifier, else the name."""
    if party.identifier is not None:
        return f"{party.identifier.system}|{party.identifier.value}"
    return f"display|{party.display}"


def _coverage_for(case: Case, payer: PartyRef) -> Coverage:
    for coverage in case.coverage:
        if coverage.payer == payer:
            return coverage
    raise MappingError("the case has no coverage with this review's payer", path="coverage")


def coverage_resource(coverage: Coverage, full_url: str, patient_url: str, payer_url: str) -> Json:
    """The Coverage: member id (identifier and subscriberId), beneficiary, payer, plan."""
    coverage_json: Json = {
        "resourceType": "Coverage",
        "id": full_url.rsplit(":", 1)[1],
        "identifier": [
            {
                "type": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                            "code": IdentifierKind.MEMBER_ID.value,
                        }
                    ]
                },
                "value": coverage.member_id,
            }
        ],
        "status": "active",
        "subscriberId": coverage.member_id,
        "beneficiary": {"reference": patient_url},
        "payor": [{"reference": payer_url}],
    }
    if coverage.plan is not None:
        coverage_json["class"] = [
            {
                "type": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/coverage-class",
                            "code": "plan",
                        }
                    ]
                },
                "value": coverage.plan,
            }
        ]
    return coverage_json


def _supporting(seq: int, system: str, category: str, **value: Any) -> Json:
    return {
        "sequence": seq,
        "category": {"coding": [{"system": system, "code": category}]},
        **value,
    }


def pas_request_bundle(
    case: Case, review: UtilizationReview, spec: PayerExchange, canonical_base: str
) -> Json:
    """The PAS request Bundle for ``review`` of ``case`` (Claim first), as plain JSON."""
    if review.requester is None:
        raise MappingError("a PAS request needs the requesting provider", path="requester")
    pas = spec.pas
    coverage = _coverage_for(case, review.payer)
    claim_value = local_value(case.id, review.id)
    claim_system = pas.identifier_systems.claim
    claim_url = urn(canonical_base, "Claim", claim_system, claim_value)
    primary = case.patient.primary
    patient_url = urn(canonical_base, "Patient", primary.system, primary.value)
    coverage_url = urn(canonical_base, "Coverage", claim_system, f"{claim_value}.coverage")
    payer_url = urn(canonical_base, review.payer.kind.value, "party", party_key(review.payer))
    req = review.requester
    requester_url = urn(canonical_base, req.kind.value, "party", party_key(req))

    infos: list[Json] = []
    cats = pas.supporting_info
    system = pas.supporting_info_system
    if review.admitted is not None:
        infos.append(_supporting(1, system, cats.admission_date, timingDate=day(review.admitted)))
    if review.requested_level_of_care is not None:
        code = _coding(spec.code_systems.level_of_care, review.requested_level_of_care)
        infos.append(_supporting(0, system, cats.level_of_care, code={"coding": [code]}))
    if review.criteria_set is not None:
        code = _coding(spec.code_systems.criteria_set, review.criteria_set)
        if review.criteria_subset is not None:
            code["display"] = review.criteria_subset
        infos.append(_supporting(0, system, cats.criteria, code={"coding": [code]}))
    if review.clinical_summary is not None:
        infos.append(
            _supporting(0, system, cats.clinical_summary, valueString=review.clinical_summary)
        )
    for seq, info in enumerate(infos, start=1):
        info["sequence"] = seq

    item: Json = {"sequence": 1, "informationSequence": [i["sequence"] for i in infos]}
    if review.requested_level_of_care is not None:
        loc = _coding(spec.code_systems.level_of_care, review.requested_level_of_care)
        item["productOrService"] = {"coding": [loc]}
    else:
        item["productOrService"] = {"text": "level of care not stated"}
    if review.admitted is not None:
        item["servicedDate"] = day(review.admitted)
    if review.requested_quantity is not None:
        ucum, words = UCUM_UNITS[review.unit]
        item["quantity"] = {
            "value": review.requested_quantity,
            "unit": words,
            "system": "http://unitsofmeasure.org",
            "code": ucum,
        }
    if not item["informationSequence"]:
        del item["informationSequence"]

    claim: Json = {
        "resourceType": "Claim",
        "id": claim_url.rsplit(":", 1)[1],
        "meta": {"profile": [pas.profiles.claim]},
        "identifier": [{"system": claim_system, "value": claim_value}],
        "status": "active",
        "type": {"coding": [{"system": CLAIM_TYPE, "code": "institutional"}]},
        "subType": {"coding": [_coding(spec.code_systems.review_type, review.review_type)]},
        "use": "preauthorization",
        "patient": {"reference": patient_url},
        "created": instant(review.requested),
        "insurer": {"reference": payer_url},
        "provider": {"reference": requester_url},
        "priority": {"coding": [{"system": PROCESS_PRIORITY, "code": _PRIORITY[review.urgency]}]},
        "supportingInfo": infos or None,
        "insurance": [{"sequence": 1, "focal": True, "coverage": {"reference": coverage_url}}],
        "item": [item],
    }
    if review.encounter is not None:
        item["encounter"] = [{"identifier": identifier(review.encounter)}]
    patient = {
        "resourceType": "Patient",
        "id": patient_url.rsplit(":", 1)[1],
        "identifier": [identifier(i) for i in case.patient.identifiers],
    }
    coverage_json = coverage_resource(coverage, coverage_url, patient_url, payer_url)
    resources = [
        (claim_url, {k: v for k, v in claim.items() if v is not None}),
        (patient_url, patient),
        (coverage_url, coverage_json),
        (payer_url, party_resource(review.payer, payer_url)),
        (requester_url, party_resource(req, requester_url)),
    ]
    return {
        "resourceType": "Bundle",
        "meta": {"profile": [pas.profiles.request_bundle]},
        "identifier": {"system": claim_system, "value": claim_value},
        "type": "collection",
        "timestamp": instant(review.requested),
        "entry": [{"fullUrl": url, "resource": res} for url, res in resources],
    }


def _coding(system: str, code: str) -> Json:
    return {"system": system, "code": str(code)}


def pas_inquiry_bundle(request: Json, spec: PayerExchange | None = None) -> Json:
    """The ``Claim/$inquire`` Bundle asking where a submitted request stands.

    Its Claim repeats the submitted Claim's identifier, type, patient, provider, insurer,
    priority, insurance and creation time (what a payer matches the request by), without the
    items and supporting information; the entries it refers to (the Patient, the Coverage, the
    parties) go along unchanged. With ``spec``, the Bundle and the Claim are stamped with the PAS
    inquiry profiles and the Bundle gets the request's identifier, ``.inquiry`` appended."""
    entries = request.get("entry") or []
    if not entries or entries[0].get("resource", {}).get("resourceType") != "Claim":
        raise MappingError("a PAS request starts with its Claim", path="Bundle.entry[0]")
    claim = entries[0]["resource"]
    keep: tuple[str, ...] = ("identifier", "status", "type", "use", "patient", "created")
    keep += ("insurer", "provider", "priority", "insurance")
    asked = {"resourceType": "Claim", **{k: claim[k] for k in keep if k in claim}}
    inquiry: Json = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{**entries[0], "resource": asked}, *entries[1:]],
    }
    if "timestamp" in request:
        inquiry["timestamp"] = request["timestamp"]
    ident = request.get("identifier")
    if spec is not None:
        profiles = spec.pas.profiles
        inquiry["meta"] = {"profile": [profiles.inquiry_request_bundle]}
        asked["meta"] = {"profile": [profiles.claim_inquiry]}
        if isinstance(ident, dict) and ident.get("value"):
            inquiry["identifier"] = {**ident, "value": f"{ident['value']}.inquiry"}
    return inquiry
