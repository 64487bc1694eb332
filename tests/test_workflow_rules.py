"""The discharge-rules file: bundled defaults, site overrides, bad values, screening logic."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from cm_fhir.domain import CaseStatus, Code
from cm_fhir.errors import MappingSpecError
from cm_fhir.hl7v2.adt import parse_adt
from cm_fhir.hl7v2.events import AdtEvent
from cm_fhir.mapping.catalog import MAPPING_FILES, check_mappings
from cm_fhir.mapping.loader import bundled_mappings_dir, read_yaml
from cm_fhir.mapping.rule_types import parse_duration
from cm_fhir.mapping.rules import DISCHARGE_RULES_FILE, DischargeRules, load_discharge_rules
from cm_fhir.workflow import PatientState, ScreeningFacts, apply_event, screen
from workflow_messages import NOW, Visit, hours, maps, run


def site(folder: Path, text: str) -> Path:
    (folder / DISCHARGE_RULES_FILE).write_text(text, encoding="utf-8")
    return folder


def test_bundled_rules_load_with_the_documented_defaults() -> None:
    rules = load_discharge_rules()
    assert rules.admission.initial_assessment.due == timedelta(hours=24)
    assert rules.admission.initial_assessment.kind == "initial-assessment"
    follow_up = rules.pending_discharge.tasks["follow-up"]  # booked before the discharge
    assert follow_up.kind == "follow-up-appointment"
    assert follow_up.before_discharge == timedelta(0)
    assert follow_up.at_discharge == "keep"
    assert rules.discharge.catch_up == ["follow-up"]
    assert rules.discharge.tasks["med-rec"].due == timedelta(days=2)
    assert rules.discharge.tasks["follow-up-call"].due == timedelta(hours=72)
    assert rules.death.tasks == {}
    assert rules.class_change.not_qualified == "close"
    assert DISCHARGE_RULES_FILE in MAPPING_FILES
    assert check_mappings().ok


@pytest.mark.parametrize(
    ("text", "expected"),
    [("90m", timedelta(minutes=90)), ("24h", timedelta(days=1)), (" 2w", timedelta(days=14))],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("override", "key", "reason"),
    [
        ("discharge:\n  close_after: soon\n", "discharge.close_after", "duration"),
        (
            "discharge:\n  tasks:\n    med-rec:\n      due: 7 days\n",
            "discharge.tasks.med-rec.due",
            "duration",
        ),
        ("location_teams:\n  6SOUTH: cm-nowhere\n", "location_teams", "6SOUTH"),
        ("default_team: cm-nowhere\n", "default_team", "unknown team"),
        ("screening:\n  any:\n    - age: {min: 70}\n      payer: [X]\n", "screening.any", "one"),
        ("screening:\n  patient_class: [INPATIENT]\n", "screening.patient_class", "INPATIENT"),
        ("teams:\n  cm-general: {kind: Patient, display: X}\n", "teams.cm-general.kind", ""),
        ("timezone: Mars/Olympus\n", "timezone", "time zone"),
        ("admission:\n  surprise: true\n", "admission.surprise", "unknown key"),
    ],
)
def test_bad_rules_name_file_key_and_reason(
    tmp_path: Path, override: str, key: str, reason: str
) -> None:
    with pytest.raises(MappingSpecError) as info:
        load_discharge_rules(site(tmp_path, override))
    err = info.value
    assert err.file.endswith(f"{DISCHARGE_RULES_FILE} (over {DISCHARGE_RULES_FILE})")
    assert err.key.startswith(key)
    assert reason in err.reason
    report = check_mappings(tmp_path)
    assert [p.key for p in report.problems] == [err.key]


@pytest.mark.parametrize(
    ("override", "key", "code"),
    [
        (
            "admission:\n  initial_assessment:\n    kind: tea-break\n",
            "admission.initial_assessment.kind",
            "tea-break",
        ),
        (
            "discharge:\n  referrals:\n    moon-base:\n      type: home-health\n"
            "      performer: {kind: Organization, display: X}\n      due: 1d\n",
            "discharge.referrals.moon-base",
            "moon-base",
        ),
        (
            "discharge:\n  referrals:\n    hospice:\n      type: astrology\n",
            "discharge.referrals.hospice.type",
            "astrology",
        ),
        ("programme: space-medicine\n", "programme", "space-medicine"),
    ],
)
def test_a_rule_naming_an_unlisted_code_names_file_key_and_code(
    tmp_path: Path, override: str, key: str, code: str
) -> None:
    load_discharge_rules(site(tmp_path, override))  # well formed: the codes are the site's data
    [problem] = check_mappings(tmp_path).problems
    assert problem.file == f"{tmp_path / DISCHARGE_RULES_FILE} (over {DISCHARGE_RULES_FILE})"
    assert problem.key == key
    assert f"unknown code '{code}'" in problem.reason


def test_site_override_is_deep_merged_and_drives_the_workflow(tmp_path: Path) -> None:
    rules = load_discharge_rules(
        site(
            tmp_path,
            "location_teams:\n  4WEST: cm-surgery\n"
            "discharge:\n  tasks:\n    follow-up-call:\n"
            "      description: Call the patient at home\n      due: 3d\n",
        )
    )
    bundled = DischargeRules.model_validate(read_yaml(_bundled()))
    assert rules.location_teams["3EAST"] == bundled.location_teams["3EAST"]  # merged, not replaced
    # mappings merge key by key: the bundled med-rec task stays, the call is replaced field-wise
    assert set(rules.discharge.tasks) == set(bundled.discharge.tasks)
    assert rules.discharge.tasks["med-rec"] == bundled.discharge.tasks["med-rec"]
    assert rules.discharge.tasks["follow-up-call"].due == timedelta(days=3)
    visit = Visit()
    state = PatientState()
    for event in (
        visit.adt("A01", "S1", hours(0)),
        visit.adt("A03", "S2", hours(10), discharge=hours(10)),
    ):
        state = apply_event(event, state, rules, now=NOW).state
    (case,) = state.cases
    task = case.task("follow-up-call-d1")
    assert task.kind == "follow-up-call"
    assert task.description == "Call the patient at home"
    assert task.due == hours(10) + timedelta(days=3)
    assert task.owner.display == rules.teams["cm-surgery"].display
    assert case.status == CaseStatus.TRANSITION


def _bundled() -> Path:
    return bundled_mappings_dir() / DISCHARGE_RULES_FILE


def _rules(screening: str) -> DischargeRules:
    data = read_yaml(_bundled())
    data["screening"] = yaml.safe_load(screening)
    return DischargeRules.model_validate(data)


AT = datetime(2024, 3, 5, tzinfo=UTC)
ICD10 = "http://hl7.org/fhir/sid/icd-10"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
ICD9CM = "http://hl7.org/fhir/sid/icd-9-cm"


def CM(code: str, system: str = ICD10CM) -> Code:
    return Code(system=system, code=code)


@pytest.mark.parametrize(
    ("facts", "eligible", "matched"),
    [
        (ScreeningFacts(at=AT, patient_class="IMP", birth_date=date(1950, 1, 1)), True, ["age"]),
        (ScreeningFacts(at=AT, patient_class="IMP", birth_date=date(1990, 1, 1)), False, []),
        (ScreeningFacts(at=AT, patient_class="EMER", birth_date=date(1930, 1, 1)), False, []),
        (
            ScreeningFacts(
                at=AT, patient_class="IMP", diagnoses=(CM("n18.4"),), payers=("MEDICARE",)
            ),
            True,
            ["diagnosis", "payer"],
        ),
        (
            ScreeningFacts(at=AT, patient_class="IMP", last_discharge=AT - timedelta(days=29)),
            True,
            ["readmission-within"],
        ),
        (
            ScreeningFacts(at=AT, patient_class="IMP", last_discharge=AT - timedelta(days=31)),
            False,
            [],
        ),
    ],
)
def test_bundled_screening(facts: ScreeningFacts, eligible: bool, matched: list[str]) -> None:
    result = screen(facts, load_discharge_rules())
    assert result.eligible is eligible
    assert [m for m in result.matched if m != "patient-class"] == matched


def test_nested_screening_criteria() -> None:
    rules = _rules(
        "any:\n"
        "  - all:\n"
        "      - location: [ICU]\n"
        "      - age: {max: 17}\n"
        "  - hospital_service: [ONC]\n"
        "  - diagnosis: {sets: {http://hl7.org/fhir/sid/icd-10-cm: [Z99.11]}}\n"
    )
    child_in_icu = ScreeningFacts(at=AT, location="ICU", birth_date=date(2015, 5, 1))
    adult_in_icu = ScreeningFacts(at=AT, location="ICU", birth_date=date(1980, 5, 1))
    oncology = ScreeningFacts(at=AT, hospital_service="ONC", location="ICU")
    ventilator = ScreeningFacts(at=AT, diagnoses=(CM("Z99.11"),))
    near_miss = ScreeningFacts(at=AT, diagnoses=(CM("Z99.1"),))
    assert screen(child_in_icu, rules).matched == ("location", "age")
    assert not screen(adult_in_icu, rules).eligible
    assert screen(oncology, rules).matched == ("hospital-service",)
    assert screen(ventilator, rules).eligible
    assert not screen(near_miss, rules).eligible


@pytest.mark.parametrize(
    ("diagnosis", "eligible"),
    [
        (CM("I50.9"), True),  # ICD-10-CM heart failure
        (CM("I50.9", ICD10), True),  # the same code in WHO ICD-10 has its own set
        (CM("428.0", ICD9CM), True),  # ICD-9-CM heart failure, as sent
        (CM("4280", ICD9CM), True),  # ... and without its dot
        (CM("434.91", ICD9CM), True),  # stroke with infarction
        (CM("434.90", ICD9CM), False),  # without infarction
        (CM("I50.9", ICD9CM), False),  # an ICD-10 code under the ICD-9 system is not a match
        (CM("428.0", ICD10CM), False),  # nor an ICD-9 code under ICD-10-CM
        (CM("I50.9", "http://snomed.info/sct"), False),  # a system without a set never matches
    ],
)
def test_diagnosis_sets_match_per_code_system(diagnosis: Code, eligible: bool) -> None:
    young = ScreeningFacts(
        at=AT, patient_class="IMP", birth_date=date(1990, 1, 1), diagnoses=(diagnosis,)
    )
    result = screen(young, load_discharge_rules())
    assert result.eligible is eligible
    assert ("diagnosis" in result.matched) is eligible


def test_non_icd_systems_match_exact_codes_only() -> None:
    rules = _rules("diagnosis: {sets: {http://snomed.info/sct: ['84114007']}}\n")
    sct = "http://snomed.info/sct"
    assert screen(ScreeningFacts(at=AT, diagnoses=(CM("84114007", sct),)), rules).eligible
    assert not screen(ScreeningFacts(at=AT, diagnoses=(CM("8411400", sct),)), rules).eligible


@pytest.mark.parametrize(
    "screening",
    [
        "diagnosis: {prefixes: [I50]}\n",  # the old shape: sets per system now
        "diagnosis: {sets: {}}\n",
        "diagnosis: {sets: {http://hl7.org/fhir/sid/icd-10-cm: []}}\n",
        "diagnosis: {sets: {I10: [I50]}}\n",  # a table 0396 name, not a code system URL
    ],
)
def test_bad_diagnosis_criteria_are_refused(screening: str) -> None:
    with pytest.raises(ValueError, match="diagnosis"):
        _rules(screening)


@pytest.mark.parametrize(
    ("coding_system", "url"),
    [
        ("I10", ICD10),
        ("i10", ICD10),
        ("I10C", ICD10CM),
        ("ICD10CM", ICD10CM),
        ("I9", ICD9CM),
        ("I9C", ICD9CM),
        ("XYZ", "http://cm-fhir.org/fhir/CodeSystem/cm-hl7v2-diagnosis"),
    ],
)
def test_table_0396_names_map_to_their_code_systems(coding_system: str, url: str) -> None:
    raw = Visit(diagnosis="428.0").raw("A01", "M1", hours(0))
    raw = raw.replace("^Heart failure^I10", f"^Heart failure^{coding_system}")
    event = parse_adt(raw, maps())
    assert isinstance(event, AdtEvent)
    state, _ = run([event])
    (case,) = state.cases
    assert [(c.system, c.code) for c in case.reasons] == [(url, "428.0")]  # the code as sent


def test_a_diagnosis_set_for_a_system_no_dg1_name_maps_to_is_refused(tmp_path: Path) -> None:
    folder = site(
        tmp_path,
        "screening:\n  all:\n    - diagnosis: {sets: {http://hl7.org/fhir/sid/icd-11: [BD10]}}\n",
    )
    with pytest.raises(MappingSpecError, match="icd-11"):
        load_discharge_rules(folder)
    mapped = site(
        tmp_path,
        "identity:\n"
        "  diagnosis_systems: {I11: http://hl7.org/fhir/sid/icd-11}\n"
        "screening:\n"
        "  all:\n"
        "    - diagnosis: {sets: {http://hl7.org/fhir/sid/icd-11: [BD10]}}\n",
    )
    assert load_discharge_rules(mapped).identity.diagnosis_systems["I11"].endswith("icd-11")
