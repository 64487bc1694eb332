"""One test per mapping rule: concrete FHIR output for a small hand-built case, and bad input."""

from __future__ import annotations

import copy
import json
import uuid
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pydantic
import pytest

from cm_fhir.domain import (
    Assessment,
    AssessmentKind,
    AssessmentStatus,
    CarePlan,
    CareTeam,
    CareTeamMember,
    Case,
    CaseStatus,
    Code,
    DischargeNeedItem,
    DischargePlan,
    Goal,
    GoalTarget,
    Identifier,
    PartyKind,
    PartyRef,
    PatientRef,
    Quantity,
    Range,
    Referral,
    ReferralSource,
    RiskEvaluation,
    RiskLevel,
    StatusChange,
    Task,
    TaskStatus,
)
from cm_fhir.domain.case import FINAL_CASE_STATUSES
from cm_fhir.errors import MappingError
from cm_fhir.fhir import WriteMode, case_from_bundle, map_case
from cm_fhir.fhir.bundle import bundle_resources

ROOT = Path(__file__).resolve().parents[1]

Json = dict[str, Any]
BASE = "http://cm-fhir.org/fhir"
EST = timezone(timedelta(hours=-5))
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=EST)
MRN = Identifier(system="urn:oid:1.2.3.4", value="MRN 7|A", kind="MR")
NURSE = PartyRef(kind=PartyKind.PRACTITIONER, display="Case manager, RN")
HOSPITAL = PartyRef(kind=PartyKind.ORGANIZATION, display="General Hospital")
AGENCY = PartyRef(kind=PartyKind.ORGANIZATION, display="Home health agency")
STROKE = Code(system="http://hl7.org/fhir/sid/icd-10-cm", code="I63.9", display="Stroke")
LOINC_SBP = Code(system="http://loinc.org", code="8480-6", display="Systolic blood pressure")


def _case(status: CaseStatus = CaseStatus.ACTIVE, **update: Any) -> Case:
    history = [StatusChange(status=CaseStatus.REFERRED, start=T0, end=T0 + timedelta(hours=1))]
    closed = None
    if status is not CaseStatus.REFERRED:
        history.append(StatusChange(status=status, start=T0 + timedelta(hours=1)))
        closed = T0 + timedelta(hours=1) if status in FINAL_CASE_STATUSES else None
    else:
        history = [StatusChange(status=status, start=T0)]
    goals = (
        Goal(
            id="g-value",
            description="Walk 50 m",
            category="functional",
            target=GoalTarget(
                measure=LOINC_SBP, value=Quantity(value=Decimal("50"), unit="m", code="m")
            ),
            due=date(2026, 4, 1),
        ),
        Goal(
            id="g-range",
            description="SBP below 130",
            category="clinical",
            target=GoalTarget(measure=LOINC_SBP, range=Range(high=Quantity(value=Decimal("130")))),
            due=date(2026, 6, 1),
        ),
        Goal(
            id="g-text",
            description="Knows warning signs",
            category="self-care",
            target=GoalTarget(measure=LOINC_SBP, text="yes"),
            due=date(2026, 4, 1),
        ),
        Goal(
            id="g-qual",
            description="Feels confident at home",
            category="social",
            qualitative_reason="Self-reported",
            due=date(2026, 5, 1),
        ),
    )
    data: dict[str, Any] = {
        "id": "C-1",
        "patient": PatientRef(identifiers=(MRN,)),
        "programme": "hospital-discharge-planning",
        "models": ("clinical", "intensive"),
        "status": status,
        "status_history": tuple(history),
        "closed": closed,
        "case_manager": NURSE,
        "care_team": CareTeam(
            id="team",
            name="Unit team",
            members=(
                CareTeamMember(
                    role=Code(system="http://snomed.info/sct", code="224535009"), party=NURSE
                ),
            ),
        ),
        "managing_organization": HOSPITAL,
        "referral_source": ReferralSource(party=NURSE, received=T0, reasons=(STROKE,)),
        "reasons": (STROKE,),
        "goals": goals,
        "care_plan": CarePlan(
            id="plan", title="Recovery & rehab <home>", goals=("g-value", "g-range")
        ),
        "discharge_plan": DischargePlan(
            id="dc",
            expected_discharge=date(2026, 3, 10),
            disposition="home-health",
            needs=(DischargeNeedItem(need="home-iv", detail="Ertapenem daily"),),
            barriers=("Not covered",),
            created=T0,
        ),
        "assessments": (
            Assessment(
                id="a1",
                kind=AssessmentKind.FUNCTIONAL,
                status=AssessmentStatus.COMPLETED,
                requested=T0,
                due=T0 + timedelta(days=1),
                performer=NURSE,
                summary="Needs help",
                findings=("Stairs",),
            ),
        ),
        "tasks": (
            Task(
                id="t1",
                kind="follow-up-call",
                description="Call",
                status=TaskStatus.IN_PROGRESS,
                owner=NURSE,
                authored_on=T0,
                due=T0 + timedelta(days=7),
                business_status="Left voicemail",
                care_plan="plan",
                focus_goal="g-range",
            ),
            Task(
                id="t2",
                kind="utilization-review",
                description="Review",
                owner=NURSE,
                authored_on=T0,
                due=T0 + timedelta(days=1),
                care_plan="dc",
            ),
        ),
        "referrals": (
            Referral(
                id="r1",
                type="home-health",
                performer=AGENCY,
                requester=NURSE,
                authored_on=T0,
                due=T0 + timedelta(days=3),
                care_plan="dc",
                fulfilment_status=TaskStatus.ACCEPTED,
                fulfilment_business_status="Booked",
            ),
        ),
        "risk": RiskEvaluation(
            id="risk", evaluated=T0, level=RiskLevel.HIGH, score=Decimal("0.25"), drivers=(STROKE,)
        ),
    }
    data.update(update)
    return Case.model_validate(data)


def _resources(bundle: Json) -> dict[tuple[str, str], Json]:
    """The resources (ids restored from the fullUrls) by type and business identifier value."""
    return {(r["resourceType"], r["identifier"][0]["value"]): r for r in bundle_resources(bundle)}


def _bodies(bundle: Json) -> dict[tuple[str, str], Json]:
    """The entry bodies themselves, to break them in place."""
    return {
        (e["resource"]["resourceType"], e["resource"]["identifier"][0]["value"]): e["resource"]
        for e in bundle["entry"]
    }


def _recipe_id(resource_type: str, system: str, value: str) -> str:
    namespace = uuid.uuid5(uuid.NAMESPACE_URL, BASE)
    return str(uuid.uuid5(namespace, f"{resource_type}|{system}|{value}"))


def _urn(resource: Json) -> str:
    return f"urn:uuid:{resource['id']}"


@pytest.fixture(scope="module")
def out() -> dict[tuple[str, str], Json]:
    return _resources(map_case(_case()))


# ---------------------------------------------------------------- EpisodeOfCare


@pytest.mark.parametrize(
    ("status", "fhir_status"),
    [
        (CaseStatus.REFERRED, "planned"),
        (CaseStatus.SCREENING, "waitlist"),
        (CaseStatus.ACTIVE, "active"),
        (CaseStatus.ON_HOLD, "onhold"),
        (CaseStatus.TRANSITION, "active"),
        (CaseStatus.CLOSED, "finished"),
        (CaseStatus.CANCELLED, "cancelled"),
    ],
)
def test_episode_status_map_keeps_the_case_status_in_an_extension(
    status: CaseStatus, fhir_status: str
) -> None:
    eoc = _resources(map_case(_case(status)))[("EpisodeOfCare", "C-1")]
    assert eoc["status"] == fhir_status
    assert {"url": f"{BASE}/StructureDefinition/cm-case-status", "valueCode": status.value} in eoc[
        "extension"
    ]
    assert case_from_bundle(map_case(_case(status))).status is status


def test_episode_status_history_and_period() -> None:
    eoc = _resources(map_case(_case(CaseStatus.CLOSED)))[("EpisodeOfCare", "C-1")]
    first, last = eoc["statusHistory"]
    assert first["status"] == "planned"
    assert first["period"] == {
        "start": "2026-03-02T09:00:00-05:00",
        "end": "2026-03-02T10:00:00-05:00",
    }
    assert first["extension"][0]["valueCode"] == "referred"
    assert last == {
        "extension": [{"url": f"{BASE}/StructureDefinition/cm-case-status", "valueCode": "closed"}],
        "status": "finished",
        "period": {"start": "2026-03-02T10:00:00-05:00"},
    }
    assert eoc["period"] == {
        "start": "2026-03-02T09:00:00-05:00",
        "end": "2026-03-02T10:00:00-05:00",
    }


def test_episode_type_codes_programme_then_models(out: dict[tuple[str, str], Json]) -> None:
    eoc = out[("EpisodeOfCare", "C-1")]
    assert [t["coding"][0]["system"] for t in eoc["type"]] == [
        f"{BASE}/CodeSystem/cm-programme",
        f"{BASE}/CodeSystem/cm-model",
        f"{BASE}/CodeSystem/cm-model",
    ]
    assert [t["coding"][0]["code"] for t in eoc["type"]] == [
        "hospital-discharge-planning",
        "clinical",
        "intensive",
    ]
    assert eoc["type"][0]["coding"][0]["display"] == "Hospital discharge planning"


def test_episode_diagnosis_is_a_contained_condition(out: dict[tuple[str, str], Json]) -> None:
    eoc = out[("EpisodeOfCare", "C-1")]
    assert eoc["diagnosis"] == [{"condition": {"reference": "#dx-1"}, "rank": 1}]
    (condition,) = eoc["contained"]
    assert condition["resourceType"] == "Condition"
    assert condition["id"] == "dx-1"
    assert condition["code"] == {
        "coding": [
            {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "I63.9", "display": "Stroke"}
        ]
    }


def test_episode_links_manager_team_organisation_and_intake(
    out: dict[tuple[str, str], Json],
) -> None:
    eoc = out[("EpisodeOfCare", "C-1")]
    assert eoc["careManager"] == {"type": "Practitioner", "display": "Case manager, RN"}
    assert eoc["managingOrganization"] == {"type": "Organization", "display": "General Hospital"}
    assert eoc["team"] == [{"reference": _urn(out[("CareTeam", "C-1.team")])}]
    assert eoc["referralRequest"] == [{"reference": _urn(out[("ServiceRequest", "C-1")])}]
    assert eoc["patient"]["identifier"]["value"] == "MRN 7|A"
    intake = out[("ServiceRequest", "C-1")]
    assert intake["status"] == "completed"  # the case is past screening
    assert intake["category"][0]["coding"][0]["code"] == "case-management"


# ---------------------------------------------------------------- CarePlan


def test_care_plan_activities_are_references_only(out: dict[tuple[str, str], Json]) -> None:
    plan = out[("CarePlan", "C-1.plan")]
    discharge = out[("CarePlan", "C-1.dc")]
    assert plan["activity"] == [{"reference": {"reference": _urn(out[("Task", "C-1.t1")])}}]
    assert discharge["activity"] == [
        {"reference": {"reference": _urn(out[("Task", "C-1.t2")])}},
        {"reference": {"reference": _urn(out[("ServiceRequest", "C-1.r1")])}},
    ]
    for activity in plan["activity"] + discharge["activity"]:
        assert "detail" not in activity


def test_care_plan_category_narrative_and_goals(out: dict[tuple[str, str], Json]) -> None:
    plan = out[("CarePlan", "C-1.plan")]
    assert {
        "system": "http://hl7.org/fhir/us/core/CodeSystem/careplan-category",
        "code": "assess-plan",
    } in [c["coding"][0] for c in plan["category"]]
    assert plan["category"][0]["coding"][0]["code"] == "case-management"
    assert plan["text"]["status"] == "generated"
    assert "Recovery &amp; rehab &lt;home&gt;" in plan["text"]["div"]
    assert plan["text"]["div"].startswith('<div xmlns="http://www.w3.org/1999/xhtml">')
    assert plan["goal"] == [
        {"reference": _urn(out[("Goal", "C-1.g-value")])},
        {"reference": _urn(out[("Goal", "C-1.g-range")])},
    ]
    assert plan["intent"] == "plan"


def test_discharge_plan_extension(out: dict[tuple[str, str], Json]) -> None:
    discharge = out[("CarePlan", "C-1.dc")]
    assert discharge["category"][0]["coding"][0]["code"] == "discharge-plan"
    (ext,) = [e for e in discharge["extension"] if e["url"].endswith("cm-discharge-plan")]
    parts = {(e["url"], next(k for k in e if k.startswith("value"))) for e in ext["extension"]}
    assert parts == {
        ("expectedDate", "valueDate"),
        ("disposition", "valueCoding"),
        ("need", "valueCodeableConcept"),
        ("barrier", "valueString"),
    }
    need = next(e for e in ext["extension"] if e["url"] == "need")["valueCodeableConcept"]
    assert need == {
        "coding": [
            {
                "system": f"{BASE}/CodeSystem/cm-discharge-need",
                "code": "home-iv",
                "display": "Home IV therapy",
            }
        ],
        "text": "Ertapenem daily",
    }


# ---------------------------------------------------------------- Goal


@pytest.mark.parametrize(
    ("goal_id", "detail"),
    [("g-value", "detailQuantity"), ("g-range", "detailRange"), ("g-text", "detailString")],
)
def test_goal_target_measure_is_present_with_every_detail(
    out: dict[tuple[str, str], Json], goal_id: str, detail: str
) -> None:
    (target,) = out[("Goal", f"C-1.{goal_id}")]["target"]
    assert target["measure"]["coding"][0]["code"] == "8480-6"  # gol-1
    assert detail in target
    assert [k for k in target if k.startswith("detail")] == [detail]


def test_goal_due_date_and_target_values(out: dict[tuple[str, str], Json]) -> None:
    value = out[("Goal", "C-1.g-value")]["target"][0]
    assert value["dueDate"] == "2026-04-01"
    assert value["detailQuantity"] == {
        "value": 50,
        "unit": "m",
        "system": "http://unitsofmeasure.org",
        "code": "m",
    }
    assert out[("Goal", "C-1.g-range")]["target"][0]["detailRange"]["high"]["value"] == 130


def test_qualitative_goal_has_reason_extension_and_no_measure(
    out: dict[tuple[str, str], Json],
) -> None:
    goal = out[("Goal", "C-1.g-qual")]
    assert goal["extension"] == [
        {
            "url": f"{BASE}/StructureDefinition/cm-goal-qualitative-reason",
            "valueString": "Self-reported",
        }
    ]
    assert goal["target"] == [{"dueDate": "2026-05-01"}]


# ---------------------------------------------------------------- Task


def test_task_links_plan_goal_patient_owner_and_episode(out: dict[tuple[str, str], Json]) -> None:
    task = out[("Task", "C-1.t1")]
    assert task["basedOn"] == [{"reference": _urn(out[("CarePlan", "C-1.plan")])}]
    assert task["focus"] == {"reference": _urn(out[("Goal", "C-1.g-range")])}
    assert task["for"] == {
        "type": "Patient",
        "identifier": {
            "type": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}
                ]
            },
            "system": "urn:oid:1.2.3.4",
            "value": "MRN 7|A",
        },
    }
    assert task["owner"] == {"type": "Practitioner", "display": "Case manager, RN"}
    assert task["restriction"] == {"period": {"end": "2026-03-09T09:00:00-05:00"}}
    assert task["businessStatus"] == {"text": "Left voicemail"}
    assert task["status"] == "in-progress"
    assert task["code"]["coding"][0] == {
        "system": f"{BASE}/CodeSystem/cm-task-code",
        "code": "follow-up-call",
        "display": "Follow-up call",
    }
    assert task["extension"] == [
        {
            "url": "http://hl7.org/fhir/StructureDefinition/workflow-episodeOfCare",
            "valueReference": {"reference": _urn(out[("EpisodeOfCare", "C-1")])},
        }
    ]


def test_assessment_is_a_task_with_outputs(out: dict[tuple[str, str], Json]) -> None:
    task = out[("Task", "C-1.a1")]
    assert task["identifier"][0]["system"] == f"{BASE}/sid/assessment"
    assert task["code"]["coding"][0]["code"] == "functional-assessment"
    assert task["status"] == "completed"
    assert task["output"] == [
        {"type": {"text": "summary"}, "valueString": "Needs help"},
        {"type": {"text": "finding"}, "valueString": "Stairs"},
    ]


def test_referral_is_a_gravity_request_and_fulfilment_task(
    out: dict[tuple[str, str], Json],
) -> None:
    request = out[("ServiceRequest", "C-1.r1")]
    fulfil = out[("Task", "C-1.r1.fulfilment")]
    assert request["intent"] == "order"
    assert request["status"] == "active"
    assert request["category"][0]["coding"][0]["code"] == "home-health"
    assert request["performer"] == [{"type": "Organization", "display": "Home health agency"}]
    assert fulfil["intent"] == "order"
    assert fulfil["code"] == {
        "coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}]
    }
    assert fulfil["focus"] == {"reference": _urn(request)}
    assert fulfil["owner"] == request["performer"][0]
    assert fulfil["status"] == "accepted"
    assert fulfil["businessStatus"] == {"text": "Booked"}


def test_care_team_members_and_status() -> None:
    active = _resources(map_case(_case()))[("CareTeam", "C-1.team")]
    closed = _resources(map_case(_case(CaseStatus.CLOSED)))[("CareTeam", "C-1.team")]
    assert active["status"] == "active"
    assert closed["status"] == "inactive"
    assert active["name"] == "Unit team"
    assert active["participant"] == [
        {
            "role": [{"coding": [{"system": "http://snomed.info/sct", "code": "224535009"}]}],
            "member": {"type": "Practitioner", "display": "Case manager, RN"},
        }
    ]


def test_risk_assessment(out: dict[tuple[str, str], Json]) -> None:
    risk = out[("RiskAssessment", "C-1.risk")]
    assert risk["status"] == "final"
    assert risk["occurrenceDateTime"] == "2026-03-02T09:00:00-05:00"
    assert risk["prediction"] == [
        {
            "qualitativeRisk": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/risk-probability",
                        "code": "high",
                    }
                ]
            },
            "probabilityDecimal": 0.25,
        }
    ]
    assert risk["reasonCode"][0]["coding"][0]["code"] == "I63.9"


# ---------------------------------------------------------------- Bundle and profiles

PROFILES = {
    ("EpisodeOfCare", False): "cm-episodeofcare",
    ("CarePlan", False): "cm-careplan",
    ("Goal", False): "cm-goal",
    ("Task", False): "cm-task",
    ("Task", True): "cm-referral-task",
    ("ServiceRequest", False): "cm-referral-servicerequest",
    ("CareTeam", False): "cm-careteam",
    ("RiskAssessment", False): "cm-riskassessment",
}


def test_bundle_entries_are_conditional_updates() -> None:
    bundle = map_case(_case())
    assert bundle["type"] == "transaction"
    for entry in bundle["entry"]:
        resource = entry["resource"]
        rtype, ident = resource["resourceType"], resource["identifier"][0]
        assert entry["fullUrl"] == f"urn:uuid:{_recipe_id(rtype, ident['system'], ident['value'])}"
        assert "id" not in resource  # a conditional update body carries no id
        assert entry["request"] == {
            "method": "PUT",
            "url": f"{rtype}?identifier={ident['system']}|{ident['value']}",
        }


def test_bundle_conditional_create_mode() -> None:
    bundle = map_case(_case(), mode=WriteMode.CONDITIONAL_CREATE)
    for entry in bundle["entry"]:
        resource = entry["resource"]
        ident = resource["identifier"][0]
        assert "id" not in resource
        assert entry["request"] == {
            "method": "POST",
            "url": resource["resourceType"],
            "ifNoneExist": f"identifier={ident['system']}|{ident['value']}",
        }


def test_bundle_update_mode_puts_by_deterministic_id() -> None:
    bundle = map_case(_case(), mode=WriteMode.UPDATE)
    for entry in bundle["entry"]:
        resource = entry["resource"]
        assert entry["fullUrl"] == f"urn:uuid:{resource['id']}"
        assert entry["request"] == {
            "method": "PUT",
            "url": f"{resource['resourceType']}/{resource['id']}",
        }
    assert case_from_bundle(bundle) == _case()


def test_identifier_query_escapes_the_separator() -> None:
    bundle = map_case(_case(id="C-1"), mode=WriteMode.CONDITIONAL_CREATE)
    urls = [e["request"]["ifNoneExist"] for e in bundle["entry"]]
    assert "identifier=http://cm-fhir.org/fhir/sid/case|C-1" in urls
    # Values with '|' or spaces never reach a URL unescaped: only case-local values are used.
    assert all(u.count("|") == 1 for u in urls)


def test_every_resource_has_its_profile(out: dict[tuple[str, str], Json]) -> None:
    seen = set()
    for (rtype, value), resource in out.items():
        key = (rtype, value.endswith(".fulfilment"))
        assert resource["meta"]["profile"] == [f"{BASE}/StructureDefinition/{PROFILES[key]}"]
        seen.add(key)
    assert seen == set(PROFILES)


# ---------------------------------------------------------------- bad input


def _broken(mutate: Any) -> Json:
    bundle = copy.deepcopy(map_case(_case()))
    mutate(_bodies(bundle))
    return bundle


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda r: r[("Goal", "C-1.g-value")].pop("category"), "Goal/"),
        (
            lambda r: r[("Goal", "C-1.g-value")]["target"][0].pop("dueDate"),
            "Goal[g-value].target.dueDate",
        ),
        (lambda r: r[("Task", "C-1.t1")].__setitem__("status", "bogus"), "Task/"),
        (lambda r: r[("Task", "C-1.t1")].pop("restriction"), "Task[t1].restriction.period.end"),
        (lambda r: r[("Task", "C-1.a1")]["code"]["coding"][0].__setitem__("code", "x"), "Task/"),
        (lambda r: r[("ServiceRequest", "C-1.r1")].pop("performer"), "ServiceRequest/"),
        (lambda r: r[("EpisodeOfCare", "C-1")].pop("patient"), "EpisodeOfCare/"),
        (
            lambda r: r[("EpisodeOfCare", "C-1")]["statusHistory"][0]["period"].pop("start"),
            "EpisodeOfCare.statusHistory[0].period.start",
        ),
        (
            lambda r: r[("EpisodeOfCare", "C-1")]["diagnosis"][0]["condition"].__setitem__(
                "reference", "#x"
            ),
            "EpisodeOfCare.diagnosis[0]",
        ),
        (
            lambda r: r[("Goal", "C-1.g-text")]["identifier"][0].__setitem__("value", "C-2.g"),
            "Goal/",
        ),
        (lambda r: r[("CareTeam", "C-1.team")]["participant"][0]["member"].pop("type"), "CareTeam"),
    ],
)
def test_broken_resources_give_mapping_errors_with_a_path(mutate: Any, path: str) -> None:
    with pytest.raises(MappingError) as caught:
        case_from_bundle(_broken(mutate))
    assert caught.value.path is not None
    assert caught.value.path.startswith(path)


def test_bundle_without_episode_is_refused() -> None:
    bundle = map_case(_case())
    bundle["entry"] = [
        e for e in bundle["entry"] if e["resource"]["resourceType"] != "EpisodeOfCare"
    ]
    with pytest.raises(MappingError, match="expected one EpisodeOfCare, found 0"):
        case_from_bundle(bundle)


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.pop("programme"), ("programme",)),
        (lambda d: d.__setitem__("status", "open"), ("status",)),
        (lambda d: d["tasks"][0].__setitem__("due", "2026-03-09T09:00:00"), ("tasks", 0, "due")),
        (lambda d: d["goals"][0].__setitem__("colour", "red"), ("goals", 0, "colour")),
        (lambda d: d["patient"].__setitem__("identifiers", []), ("patient", "identifiers")),
        (lambda d: d["referrals"][0].__setitem__("note", "  "), ("referrals", 0, "note")),
    ],
)
def test_bad_documents_name_the_field(mutate: Any, field: tuple[Any, ...]) -> None:
    document = _case().model_dump(mode="json")
    mutate(document)
    with pytest.raises(pydantic.ValidationError) as caught:
        Case.model_validate(document)
    assert caught.value.errors()[0]["loc"][: len(field)] == field


def test_discharge_need_detail_equal_to_the_standard_display_survives() -> None:
    """A detail that repeats the code's display is still the case manager's text: kept as such."""
    doc = json.loads((ROOT / "examples" / "stroke-inpatient-rehab.json").read_text())
    doc["discharge_plan"]["needs"] = [{"need": "oxygen", "detail": "Home oxygen"}, {"need": "dme"}]
    case = Case.model_validate(doc)
    assert case_from_bundle(map_case(case)) == case
