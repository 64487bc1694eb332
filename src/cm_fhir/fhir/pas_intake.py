"""A Da Vinci PAS request Bundle, as a payer receives it, -> a pended utilization review. Pure.

It reads Bundles from cm-fhir (:mod:`cm_fhir.fhir.pas_request`) and from other PAS clients: the
Claim is the first entry or, failing that, the only preauthorization Claim; its patient, coverage,
insurer and provider are resolved by ``fullUrl``, by ``Type/id`` or from the reference's logical
identifier. Only what a review needs is read; entries it does not use (ServiceRequest,
DeviceRequest, MedicationRequest, QuestionnaireResponse, Observation, Condition, PractitionerRole,
Location...) are the caller's to keep. The patient's member ids lead its identifiers
(:func:`~cm_fhir.fhir.members.member_patient`). A Bundle without a usable Claim raises
:class:`~cm_fhir.errors.MappingError` whose path names the element at fault; a Claim that is not
valid R4 (checked with the R4B models) raises :class:`~cm_fhir.errors.ValidationError` with its
OperationOutcome.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any, TypeVar

import pydantic

from cm_fhir.domain.codes import (
    CriteriaSet,
    LevelOfCare,
    PartyKind,
    ReviewType,
    ReviewUrgency,
    ServiceUnit,
)
from cm_fhir.domain.common import Code, Identifier, PartyRef, PatientRef
from cm_fhir.domain.review import UtilizationReview
from cm_fhir.errors import MappingError
from cm_fhir.fhir.datatypes import parse_day, parse_identifier, parse_instant
from cm_fhir.fhir.members import member_patient
from cm_fhir.fhir.models import validate_resource
from cm_fhir.fhir.pas_request import UCUM_UNITS
from cm_fhir.mapping.payer_exchange import PayerExchange

Json = dict[str, Any]
_E = TypeVar("_E", LevelOfCare, ReviewType, CriteriaSet)
_MAX_QUANTITY = 366
_VISIT_CODES = {UCUM_UNITS[ServiceUnit.VISIT][0], "visit", "visits"}


@dataclass(frozen=True, slots=True)
class PasRequest:
    """What a payer reads from a PAS request: the pended review and who it is for."""

    review: UtilizationReview
    patient: PatientRef
    member_id: str | None
    diagnoses: tuple[Code, ...]
    claim_entry: int


def _entries(bundle: Any) -> list[Json]:
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise MappingError("the body is not a FHIR Bundle", path="Bundle")
    entries = bundle.get("entry")
    if not isinstance(entries, list) or not entries:
        raise MappingError(
            "the Bundle has no entries; a PAS request starts with a Claim", path="Bundle.entry"
        )
    return [e if isinstance(e, dict) else {} for e in entries]


def _claim(entries: list[Json]) -> tuple[int, Json]:
    def is_claim(entry: Json) -> bool:
        resource = entry.get("resource")
        return isinstance(resource, dict) and resource.get("resourceType") == "Claim"

    if is_claim(entries[0]):
        return 0, entries[0]["resource"]
    preauth = [
        i
        for i, e in enumerate(entries)
        if is_claim(e) and e["resource"].get("use") == "preauthorization"
    ]
    if len(preauth) == 1:
        return preauth[0], entries[preauth[0]]["resource"]
    why = "no Claim" if not preauth else "several preauthorization Claims and none first"
    raise MappingError(
        f"the Bundle has {why}; a PAS request's first entry is the Claim", path="Bundle.entry[0]"
    )


def resolve_reference(entries: list[Json], ref: Any) -> Json | None:
    if not isinstance(ref, dict) or not isinstance(ref.get("reference"), str):
        return None
    target = ref["reference"]
    for entry in entries:
        resource = entry.get("resource")
        if not isinstance(resource, dict):
            continue
        full_url = entry.get("fullUrl")
        typed = f"{resource.get('resourceType')}/{resource.get('id')}"
        if target in (full_url, typed) or (
            isinstance(full_url, str) and full_url.endswith("/" + target)
        ):
            return resource
    return None


def identifiers_of(resource: Json | None, ref: Any, path: str) -> list[Identifier]:
    found: list[Identifier] = []
    raw = list((resource or {}).get("identifier") or [])
    if isinstance(ref, dict) and isinstance(ref.get("identifier"), dict):
        raw.append(ref["identifier"])
    for i, item in enumerate(raw):
        if isinstance(item, dict) and item.get("system") and item.get("value"):
            found.append(parse_identifier(item, f"{path}.identifier[{i}]"))
    return found


def party_of(entries: list[Json], ref: Any, path: str, default: PartyKind) -> PartyRef | None:
    resource = resolve_reference(entries, ref)
    idents = identifiers_of(resource, ref, path)
    kind = default
    rtype = (resource or {}).get("resourceType") or (ref or {}).get("type")
    if rtype in {k.value for k in PartyKind}:
        kind = PartyKind(rtype)
    name = (resource or {}).get("name")
    display = name if isinstance(name, str) else (ref or {}).get("display")
    if isinstance(name, list) and name and isinstance(name[0], dict):
        display = name[0].get("text") or display
    if not idents and not display:
        return None
    return PartyRef(kind=kind, identifier=idents[0] if idents else None, display=display)


def _codes(concept: Any) -> list[tuple[str, str]]:
    if not isinstance(concept, dict):
        return []
    return [
        (str(c.get("system")), str(c.get("code")))
        for c in concept.get("coding") or []
        if isinstance(c, dict) and c.get("code")
    ]


def _code_in(concept: Any, system: str) -> str | None:
    return next((code for sys, code in _codes(concept) if sys == system), None)


def _enum(kind: type[_E], code: str | None) -> _E | None:
    if code is None:
        return None
    try:
        return kind(code)
    except ValueError:
        return None


@dataclass(slots=True)
class _Info:
    admitted: date | None = None
    level: LevelOfCare | None = None
    criteria: CriteriaSet | None = None
    criteria_subset: str | None = None
    summary: list[str] | None = None


def _supporting_info(claim: Json, spec: PayerExchange) -> _Info:
    info = _Info(summary=[])
    cats = spec.pas.supporting_info
    for i, item in enumerate(claim.get("supportingInfo") or []):
        if not isinstance(item, dict):
            continue
        path = f"Claim.supportingInfo[{i}]"
        category = _code_in(item.get("category"), spec.pas.supporting_info_system)
        if category == cats.admission_date:
            when = item.get("timingDate") or (item.get("timingPeriod") or {}).get("start")
            if when is not None:
                info.admitted = parse_day(str(when)[:10], f"{path}.timing")
        level = _enum(LevelOfCare, _code_in(item.get("code"), spec.code_systems.level_of_care))
        info.level = info.level or level
        criteria = _enum(CriteriaSet, _code_in(item.get("code"), spec.code_systems.criteria_set))
        if criteria is not None:
            info.criteria = criteria
            codings = (item.get("code") or {}).get("coding") or []
            info.criteria_subset = next(
                (c.get("display") for c in codings if c.get("display")), None
            )
        text = item.get("valueString")
        if category == cats.clinical_summary and isinstance(text, str) and text.strip():
            assert info.summary is not None
            info.summary.append(text.strip())
    return info


def _quantity(item: Json, path: str) -> tuple[int | None, ServiceUnit]:
    quantity = item.get("quantity")
    if not isinstance(quantity, dict) or quantity.get("value") is None:
        return None, ServiceUnit.DAY
    value = quantity["value"]
    where = f"{path}.quantity.value"
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise MappingError("the requested quantity must be a whole number", path=where)
    if not 1 <= value <= _MAX_QUANTITY:
        raise MappingError(f"the requested quantity must be 1 to {_MAX_QUANTITY}", path=where)
    unit = ServiceUnit.VISIT if quantity.get("code") in _VISIT_CODES else ServiceUnit.DAY
    return int(value), unit


def claim_identifier(bundle: Any) -> Identifier | None:
    """The business identifier of the request's Claim, or None when there is no usable one."""
    try:
        _, claim = _claim(_entries(bundle))
        found = identifiers_of(claim, None, "Claim")
    except MappingError:
        return None
    return found[0] if found else None


def parse_pas_request(bundle: Any, spec: PayerExchange, review_id: str) -> PasRequest:
    """The pended review a PAS request Bundle asks for; MappingError naming what is unusable."""
    entries = _entries(bundle)
    index, claim = _claim(entries)
    if claim.get("use") != "preauthorization":
        raise MappingError("the Claim's use must be 'preauthorization'", path="Claim.use")
    claim_ids = identifiers_of(claim, None, "Claim")
    if not claim_ids:
        raise MappingError(
            "the Claim needs a business identifier (system and value)", path="Claim.identifier"
        )
    patient_ref = claim.get("patient")
    patient_ids = identifiers_of(
        resolve_reference(entries, patient_ref), patient_ref, "Claim.patient"
    )
    if not patient_ids:
        raise MappingError(
            "the Claim's patient has no identifier with a system", path="Claim.patient"
        )
    payer = party_of(entries, claim.get("insurer"), "Claim.insurer", PartyKind.ORGANIZATION)
    if payer is None:
        raise MappingError(
            "the Claim names no insurer with an identifier or name", path="Claim.insurer"
        )
    requester = party_of(entries, claim.get("provider"), "Claim.provider", PartyKind.ORGANIZATION)
    if "created" not in claim:
        raise MappingError("the Claim has no 'created' time", path="Claim.created")
    created = parse_instant(claim["created"], "Claim.created")
    items = [i for i in claim.get("item") or [] if isinstance(i, dict)]
    item = items[0] if items else {}
    info = _supporting_info(claim, spec)
    level = info.level or _enum(
        LevelOfCare, _code_in(item.get("productOrService"), spec.code_systems.level_of_care)
    )
    quantity, unit = _quantity(item, "Claim.item[0]")
    encounters = [e for e in item.get("encounter") or [] if isinstance(e, dict)]
    encounter = (
        identifiers_of(None, encounters[0], "Claim.item[0].encounter[0]") if encounters else []
    )
    priority = _codes(claim.get("priority"))
    urgent = any(code == "stat" for _, code in priority)
    review_type = _enum(ReviewType, _code_in(claim.get("subType"), spec.code_systems.review_type))
    member_id = _member_id(entries, claim)
    diagnoses = tuple(
        Code(system=sys, code=code)
        for d in claim.get("diagnosis") or []
        if isinstance(d, dict)
        for sys, code in _codes(d.get("diagnosisCodeableConcept"))
        if sys != "None"
    )
    validate_resource(claim)  # what we did not read must still be R4 (ValidationError if not)
    try:
        review = UtilizationReview(
            id=review_id,
            # A preauthorization without a stated type is asked before the care: prospective.
            review_type=review_type or ReviewType.ADMISSION,
            urgency=ReviewUrgency.EXPEDITED if urgent else ReviewUrgency.STANDARD,
            requested=created,
            payer=payer,
            requester=requester,
            request_identifier=claim_ids[0],
            encounter=encounter[0] if encounter else None,
            admitted=info.admitted,
            requested_level_of_care=level,
            requested_quantity=quantity,
            unit=unit,
            clinical_summary="\n\n".join(info.summary or []) or None,
            criteria_set=info.criteria,
            criteria_subset=info.criteria_subset,
        )
    except ValueError as exc:  # pydantic's ValidationError: name the first field, not the input
        first = exc.errors()[0] if isinstance(exc, pydantic.ValidationError) else None
        field = ".".join(str(p) for p in first["loc"]) if first else "?"
        raise MappingError(f"the Claim cannot be read as a review ({field})", path="Claim") from exc
    patient = member_patient(patient_ids, member_id, spec)
    return PasRequest(review, patient, member_id, diagnoses, index)


def _member_id(entries: list[Json], claim: Json) -> str | None:
    insurance = [i for i in claim.get("insurance") or [] if isinstance(i, dict)]
    focal = next(
        (i for i in insurance if i.get("focal") is True), insurance[0] if insurance else None
    )
    coverage = resolve_reference(entries, (focal or {}).get("coverage"))
    if coverage is None:
        return None
    subscriber = coverage.get("subscriberId")
    if isinstance(subscriber, str) and subscriber.strip():
        return subscriber.strip()
    for ident in coverage.get("identifier") or []:
        if isinstance(ident, dict) and isinstance(ident.get("value"), str):
            return str(ident["value"])
    return None


@dataclass(frozen=True, slots=True)
class PasInquiry:
    """What a PAS inquiry (``Claim/$inquire``) asks about: the request and its patient."""

    request: Identifier
    patient: PatientRef


def parse_pas_inquiry(bundle: Any, spec: PayerExchange) -> PasInquiry:
    """The request a PAS inquiry Bundle asks about; MappingError naming what is unusable.

    The inquiry's Claim carries the identifier of the Claim first submitted and names its patient
    (in the Bundle or by a logical identifier), member ids first as for a request; the Claim must
    be valid R4 (ValidationError)."""
    entries = _entries(bundle)
    _, claim = _claim(entries)
    claim_ids = identifiers_of(claim, None, "Claim")
    if not claim_ids:
        raise MappingError(
            "the inquiry's Claim needs the identifier of the request asked about",
            path="Claim.identifier",
        )
    patient_ref = claim.get("patient")
    patient_ids = identifiers_of(
        resolve_reference(entries, patient_ref), patient_ref, "Claim.patient"
    )
    if not patient_ids:
        raise MappingError(
            "the Claim's patient has no identifier with a system", path="Claim.patient"
        )
    validate_resource(claim)
    patient = member_patient(patient_ids, _member_id(entries, claim), spec)
    return PasInquiry(claim_ids[0], patient)
