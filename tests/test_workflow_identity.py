"""Case identity: a case belongs to one patient and one visit, each with its assigning authority."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cm_fhir.domain import Case
from cm_fhir.errors import MappingSpecError
from cm_fhir.fhir import map_case
from cm_fhir.mapping.rules import DISCHARGE_RULES_FILE, DischargeRules, load_discharge_rules
from cm_fhir.workflow import Flag, PatientState, apply_event
from workflow_messages import NOW, Visit, hours, maps, rules, run

FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")

NORTH = Visit(mrn="MRN-N1", visit="V500", facility="NORTHSIDE")
SOUTH = Visit(mrn="MRN-S1", visit="V500", facility="SOUTHSIDE")


def only_case(state: PatientState) -> Case:
    (case,) = state.cases
    return case


def episode(case: Case) -> dict[str, object]:
    bundle = map_case(case)
    (eoc,) = [
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "EpisodeOfCare"
    ]
    return eoc


def admitted(visit: Visit, control_id: str = "M1") -> Case:
    state, _ = run([visit.adt("A01", control_id, hours(0))])
    return only_case(state)


def test_same_visit_number_at_two_facilities_gives_two_cases() -> None:
    north, south = admitted(NORTH), admitted(SOUTH)
    assert north.id != south.id
    assert north.patient != south.patient
    for case in (north, south):
        assert FHIR_ID.match(case.id)
        assert "V500" in case.id  # still readable
    north_eoc, south_eoc = episode(north), episode(south)
    assert north_eoc["identifier"] != south_eoc["identifier"]
    north_ids = {e["fullUrl"] for e in map_case(north)["entry"]}
    south_ids = {e["fullUrl"] for e in map_case(south)["entry"]}
    assert north_ids.isdisjoint(south_ids)  # no resource of one overwrites the other's
    (north_enc,), (south_enc,) = north.encounters, south.encounters
    assert north_enc.value == south_enc.value == "V500"
    assert (north_enc.system, north_enc.assigner) != (south_enc.system, south_enc.assigner)
    assert north_enc.assigner == "NORTHSIDE"


def test_same_visit_number_and_facility_for_two_patients_gives_two_cases() -> None:
    other = Visit(mrn="MRN-N2", visit=NORTH.visit, facility=NORTH.facility)
    assert admitted(NORTH).id != admitted(other).id


def test_pv1_19_authority_wins_over_the_sending_facility() -> None:
    east = Visit(mrn=NORTH.mrn, visit=NORTH.visit, facility=NORTH.facility, authority="EASTWING")
    case = admitted(east)
    assert case.id != admitted(NORTH).id
    assert case.encounters[0].assigner == "EASTWING"
    assert case.encounters[0].system.endswith(":EASTWING")


def test_a_configured_system_names_the_authoritys_visits() -> None:
    custom = rules().model_copy(
        update={
            "identity": rules().identity.model_copy(
                update={"visit_systems": {"NORTHSIDE": "urn:oid:2.16.840.1.113883.19.5"}}
            )
        }
    )
    outcome = apply_event(NORTH.adt("A01", "M1", hours(0)), PatientState(), custom, now=NOW)
    (case,) = outcome.state.cases
    assert case.encounters[0].system == "urn:oid:2.16.840.1.113883.19.5"


def test_the_patient_and_visit_authorities_survive_a_long_visit_number() -> None:
    long = Visit(visit="VISIT/2024/000000001234567890", facility="A REALLY LONG FACILITY NAME")
    case = admitted(long)
    assert FHIR_ID.match(case.id)
    assert case.id.startswith(f"{rules().case_id_prefix}-x-")
    assert case.encounters[0].value == long.visit


def test_the_account_number_names_the_visit_when_pv1_19_is_empty() -> None:
    no_visit = Visit(visit="", account="ACC-77^^^BILLING")
    case = admitted(no_visit)
    assert case.encounters[0].value == "ACC-77"
    assert case.encounters[0].assigner == "BILLING"


def _site_rules(tmp_path: Path, text: str) -> DischargeRules:
    (tmp_path / DISCHARGE_RULES_FILE).write_text(text, encoding="utf-8")
    return load_discharge_rules(tmp_path)


def test_a_site_names_the_visit_fields(tmp_path: Path) -> None:
    site = _site_rules(tmp_path, "identity:\n  visit_number_fields: [PV1-50]\n")
    event = NORTH.adt("A01", "M1", hours(0), alternate="ALT-9^^^REGISTRY")
    (case,) = apply_event(event, PatientState(), site, now=NOW).state.cases
    assert case.encounters[0].value == "ALT-9"
    # PV1-19 alone is no visit identity under this site's rule
    outcome = apply_event(NORTH.adt("A01", "M2", hours(0)), PatientState(), site, now=NOW)
    assert outcome.flags == {Flag.NO_VISIT_NUMBER}
    assert outcome.state.cases == ()
    assert outcome.state.visits == ()
    assert outcome.changed_cases == ()


def test_an_unknown_visit_field_fails_at_load(tmp_path: Path) -> None:
    with pytest.raises(MappingSpecError) as info:
        _site_rules(tmp_path, "identity:\n  visit_number_fields: [PV1-99]\n")
    assert "identity.visit_number_fields" in str(info.value)


def test_no_visit_identity_changes_nothing() -> None:
    state, _ = run([NORTH.adt("A01", "M1", hours(0))])
    nothing = Visit(mrn=NORTH.mrn, visit="", facility=NORTH.facility)
    after, outcomes = run([nothing.adt("A03", "M2", hours(5), discharge=hours(5))], state)
    assert outcomes[0].flags == {Flag.NO_VISIT_NUMBER}
    assert outcomes[0].changed_cases == ()
    assert after.cases == state.cases
    assert after.visits == state.visits


def test_the_parser_reads_the_visit_identity_fields() -> None:
    from cm_fhir.hl7v2.adt import parse_adt
    from cm_fhir.hl7v2.events import AdtEvent

    raw = Visit(authority="EASTWING", account="ACC-1^^^&1.2.3&ISO").raw(
        "A01", "P1", hours(0), alternate="ALT-1"
    )
    event = parse_adt(raw, maps())
    assert isinstance(event, AdtEvent)
    assert event.visit is not None
    assert (event.visit.visit_number, event.visit.visit_authority) == ("V100200", "EASTWING")
    assert event.visit.alternate_visit_id is not None
    assert event.visit.alternate_visit_id.value == "ALT-1"
    assert event.patient.account_number is not None
    # an HD with only a universal id: that id is the authority
    assert event.patient.account_number.assigning_authority == "1.2.3"
