"""ADT message -> AdtEvent: every supported event and version, edge cases, error positions."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from cm_fhir.errors import Hl7ParseError, MappingError, UnsupportedEventError
from cm_fhir.hl7v2.adt import parse_adt
from cm_fhir.hl7v2.events import (
    AdtEvent,
    Location,
    MappedCode,
    PatientIdentifier,
    PersonName,
    UnsupportedMessage,
)
from cm_fhir.mapping.adt_maps import ADT_CONCEPT_MAPS_FILE, AdtConceptMaps, CodeMap
from cm_fhir.mapping.loader import bundled_mappings_dir, load_yaml_model
from hl7v2_samples import (
    ADT_A01_V23,
    ADT_A01_V251,
    ADT_A03_V28,
    ADT_A40_V251,
    BATCH,
    adt_message,
    pid,
    pv1,
)

PLUS_ONE = timezone(timedelta(hours=1))
EVENTS = ["A01", "A02", "A03", "A04", "A05", "A06", "A07", "A08", "A11", "A12", "A13", "A15"]
EVENTS += ["A16", "A25", "A26", "A27", "A38", "A40"]
# HL7 table 0354 as published for v2.5, written out independently of the code under test.
TABLE_0354_V25 = {
    "A01": "ADT_A01", "A04": "ADT_A01", "A08": "ADT_A01", "A13": "ADT_A01", "A02": "ADT_A02",
    "A03": "ADT_A03", "A05": "ADT_A05", "A06": "ADT_A06", "A07": "ADT_A06", "A11": "ADT_A09",
    "A12": "ADT_A12", "A15": "ADT_A15", "A16": "ADT_A16", "A25": "ADT_A21", "A26": "ADT_A21",
    "A27": "ADT_A21", "A38": "ADT_A38", "A40": "ADT_A39",
}  # fmt: skip


@pytest.fixture(scope="module")
def maps() -> AdtConceptMaps:
    return load_yaml_model(bundled_mappings_dir() / ADT_CONCEPT_MAPS_FILE, AdtConceptMaps)


def _event(raw: bytes | str, maps: AdtConceptMaps) -> AdtEvent:
    result = parse_adt(raw, maps)
    assert isinstance(result, AdtEvent)
    return result


@pytest.mark.parametrize("version", ["2.3", "2.5.1", "2.8"])
@pytest.mark.parametrize("event", EVENTS)
def test_every_supported_event_and_version(event: str, version: str, maps: AdtConceptMaps) -> None:
    result = _event(adt_message(event, version), maps)
    assert result.event == event
    assert result.version == version
    assert result.message_control_id == "CTRL-0001"
    assert result.patient.identifiers[0].value == "MRN0001"
    # Before v2.4, A05 used the ADT_A01 structure.
    expected = "ADT_A01" if (event, version) == ("A05", "2.3") else TABLE_0354_V25[event]
    assert result.structure == expected
    assert (result.visit is None) == (event == "A40")


def test_full_a01_extraction(maps: AdtConceptMaps) -> None:
    result = _event(ADT_A01_V251, maps)
    assert result.structure == "ADT_A01"
    assert result.sending_application == "ADTSYS"
    assert result.sending_facility == "NORTHSIDE"
    assert result.message_time == datetime(2024, 3, 5, 10, 15, tzinfo=PLUS_ONE)
    assert result.recorded_time == datetime(2024, 3, 5, 10, 12, tzinfo=PLUS_ONE)
    assert result.occurred_time == datetime(2024, 3, 5, 10, 0, tzinfo=PLUS_ONE)
    assert result.trigger_time == result.occurred_time
    patient = result.patient
    assert patient.identifiers == (
        PatientIdentifier(value="MRN0001", assigning_authority="NSH", type_code="MR"),
        PatientIdentifier(value="ENT5550", assigning_authority="EMPI", type_code="PI"),
    )
    assert patient.name == PersonName(family="TESTPATIENT", given=("ALPHA", "B"))
    assert patient.birth_date == date(1961, 3, 4)
    assert patient.sex == "F"
    visit = result.visit
    assert visit is not None
    assert visit.visit_number == "V100200"
    assert visit.patient_class == MappedCode(source="I", target="IMP", mapped=True)
    assert visit.location == Location(
        point_of_care="4WEST", room="412", bed="B", facility="NORTHSIDE", building="MAIN", floor="4"
    )
    assert visit.prior_location is None
    assert visit.hospital_service == "MED"
    assert [(p.id, p.name) for p in visit.attending] == [
        ("D0042", PersonName(family="CARDIO", given=("CARLA", "M"), prefix="DR"))
    ]
    assert [p.id for p in visit.admitting] == ["D0077"]
    assert visit.admit_time == datetime(2024, 3, 5, 9, 30, tzinfo=PLUS_ONE)
    assert visit.discharge_time is None
    assert visit.discharge_disposition is None
    assert visit.expected_discharge == datetime(2024, 3, 9)
    [diagnosis] = result.diagnoses
    assert (diagnosis.code, diagnosis.system, diagnosis.type) == ("I50.9", "I10", "A")
    assert diagnosis.description == "Heart failure, unspecified"
    [insurance] = result.insurances
    assert (insurance.payer_id, insurance.payer_name) == ("PAYER01", "Example Health Plan")
    assert (insurance.plan_id, insurance.member_id) == ("PLAN-GOLD", "MEM-778")
    assert result.merges == ()
    assert result.cleared == ()


def test_a02_carries_the_prior_location(maps: AdtConceptMaps) -> None:
    visit = _event(adt_message("A02", "2.5.1"), maps).visit
    assert visit is not None
    assert visit.prior_location == Location(
        point_of_care="3EAST", room="301", bed="A", facility="NORTHSIDE"
    )


def test_a03_discharge_fields_and_disposition_map(maps: AdtConceptMaps) -> None:
    visit = _event(ADT_A03_V28, maps).visit
    assert visit is not None
    assert visit.discharge_time == datetime(2024, 3, 9, 14, 15, tzinfo=PLUS_ONE)
    assert visit.discharge_disposition == MappedCode(
        source="03", target="skilled-nursing", mapped=True
    )
    assert visit.discharge_destination == MappedCode(
        source="SNF12", target=None, mapped=False, display="Oak Lodge"
    )


def test_unmapped_disposition_is_reported_not_guessed(maps: AdtConceptMaps) -> None:
    raw = ADT_A03_V28.replace("|03|SNF12", "|ZZ|SNF12")
    visit = _event(raw, maps).visit
    assert visit is not None
    assert visit.discharge_disposition == MappedCode(source="ZZ", target=None, mapped=False)


def test_disposition_error_policy_names_the_field(maps: AdtConceptMaps) -> None:
    strict = maps.model_copy(
        update={"discharge_disposition": CodeMap(map={"01": "home"}, unmapped="error")}
    )
    with pytest.raises(MappingError) as caught:
        parse_adt(ADT_A03_V28, strict)
    assert caught.value.path == "PV1-36"


def test_a40_merge_identifiers(maps: AdtConceptMaps) -> None:
    result = _event(ADT_A40_V251, maps)
    [merge] = result.merges
    assert merge.prior_identifiers == (
        PatientIdentifier(value="MRN0999", assigning_authority="NSH", type_code="MR"),
    )
    assert merge.prior_visit_number == "V099"
    assert merge.surviving_identifiers == result.patient.identifiers


def test_a40_with_two_pid_mrg_pairs(maps: AdtConceptMaps) -> None:
    second = pid("MRN0002") + "\rMRG|MRN0888^^^NSH^MR"
    result = _event(ADT_A40_V251 + "\r" + second, maps)
    assert [
        (m.surviving_identifiers[0].value, m.prior_identifiers[0].value) for m in result.merges
    ] == [
        ("MRN0001", "MRN0999"),
        ("MRN0002", "MRN0888"),
    ]


def test_a40_without_prior_identifier_is_refused(maps: AdtConceptMaps) -> None:
    with pytest.raises(Hl7ParseError) as caught:
        parse_adt(ADT_A40_V251.replace("MRG|MRN0999^^^NSH^MR", "MRG|"), maps)
    assert caught.value.location == "MRG-1"


def test_v23_without_structure_and_with_naive_times(maps: AdtConceptMaps) -> None:
    raw = ADT_A01_V23.replace("20240305093000+0100", "20240305093000")
    result = _event(raw, maps)
    assert result.structure == "ADT_A01"
    assert result.visit is not None
    assert result.visit.admit_time == datetime(2024, 3, 5, 9, 30)
    zoned = parse_adt(raw, maps, default_tz=ZoneInfo("America/New_York"))
    assert isinstance(zoned, AdtEvent)
    assert zoned.visit is not None
    assert zoned.visit.admit_time == datetime(
        2024, 3, 5, 9, 30, tzinfo=ZoneInfo("America/New_York")
    )


@pytest.mark.parametrize(
    ("event", "version", "structure"),
    [("A05", "2.3", "ADT_A01"), ("A05", "2.5", "ADT_A05"), ("A12", "2.4", "ADT_A09")],
)
def test_missing_msh_9_3_uses_the_versioned_table(
    event: str, version: str, structure: str, maps: AdtConceptMaps
) -> None:
    assert _event(adt_message(event, version), maps).structure == structure


def test_msh_9_3_given_by_the_sender_wins(maps: AdtConceptMaps) -> None:
    raw = adt_message("A11", "2.8", structure="ADT_A11")
    assert _event(raw, maps).structure == "ADT_A11"


@pytest.mark.parametrize("separator", ["\n", "\r\n"])
def test_lf_and_crlf_messages_keep_every_segment(separator: str, maps: AdtConceptMaps) -> None:
    raw = ("\ufeff" + adt_message("A01", separator=separator) + separator).encode()
    result = _event(raw, maps)
    assert result.visit is not None
    assert result.visit.visit_number == "V100200"
    assert len(result.insurances) == 1


def test_trailing_whitespace_does_not_change_values(maps: AdtConceptMaps) -> None:
    raw = "\n".join(line + "   " for line in ADT_A01_V251.split("\r"))
    assert _event(raw, maps) == _event(ADT_A01_V251, maps)


def test_z_segments_are_ignored(maps: AdtConceptMaps) -> None:
    without = ADT_A01_V251.replace("\rZPV|1|site specific|values^we^ignore", "")
    assert without != ADT_A01_V251
    assert _event(ADT_A01_V251, maps) == _event(without, maps)


def test_explicit_nulls_are_cleared_positions_never_values(maps: AdtConceptMaps) -> None:
    raw = ADT_A03_V28.replace("20240309141500+0100", '""').replace(
        "PV2|||||||||20240309", 'PV2|||||||||""'
    )
    raw = raw.replace("|F\r", '|""\r')
    result = _event(raw, maps)
    assert result.visit is not None
    assert result.visit.discharge_time is None
    assert result.visit.expected_discharge is None
    assert result.patient.sex is None
    assert result.cleared == ("PID-8", "PV1-45", "PV2-9")


def test_batch_messages_parse_one_by_one(maps: AdtConceptMaps) -> None:
    from cm_fhir.hl7v2.normalise import split_batch

    events = [_event(message, maps) for message in split_batch(BATCH)]
    assert [(e.event, e.message_control_id) for e in events] == [
        ("A01", "CTRL-0001"),
        ("A08", "CTRL-0002"),
    ]


def test_unsupported_event_is_a_result_not_an_error(maps: AdtConceptMaps) -> None:
    result = parse_adt(adt_message("A09", "2.5"), maps)
    assert result == UnsupportedMessage(
        message_type="ADT",
        event="A09",
        version="2.5",
        message_control_id="CTRL-0001",
        reason="ADT event not supported",
    )


def test_other_message_types_are_unsupported(maps: AdtConceptMaps) -> None:
    raw = ADT_A01_V251.replace("ADT^A01^ADT_A01", "ORU^R01^ORU_R01")
    result = parse_adt(raw, maps)
    assert isinstance(result, UnsupportedMessage)
    assert (result.message_type, result.event) == ("ORU", "R01")


@pytest.mark.parametrize("version", ["2.1", "2.9", "3.0"])
def test_unsupported_version_raises_at_msh_12(version: str, maps: AdtConceptMaps) -> None:
    with pytest.raises(UnsupportedEventError) as caught:
        parse_adt(adt_message("A01", version), maps)
    assert caught.value.location == "MSH-12"


def test_repeated_pid_3_keeps_every_identifier_in_order(maps: AdtConceptMaps) -> None:
    raw = ADT_A01_V251.replace("~ENT5550^^^EMPI^PI", "~ENT5550^^^EMPI^PI~~X9^^^^SS~^^^EMPTY")
    ids = _event(raw, maps).patient.identifiers
    assert [(i.value, i.assigning_authority, i.type_code) for i in ids] == [
        ("MRN0001", "NSH", "MR"),
        ("ENT5550", "EMPI", "PI"),
        ("X9", None, "SS"),
    ]


@pytest.mark.parametrize(
    ("old", "new", "location"),
    [
        ("20240305093000+0100", "20241305093000+0100", "PV1-44"),
        ("EVN|A01|20240305101200+0100", "EVN|A01|2024030", "EVN-2"),
        ("|19610304|", "|1961-03-04|", "PID-7"),
        ("PV2|||||||||20240309", "PV2|||||||||20240230", "PV2-9"),
    ],
)
def test_bad_dates_name_their_position_without_the_value(
    old: str, new: str, location: str, maps: AdtConceptMaps
) -> None:
    raw = ADT_A01_V251.replace(old, new)
    assert raw != ADT_A01_V251
    with pytest.raises(Hl7ParseError) as caught:
        parse_adt(raw, maps)
    assert caught.value.location == location
    assert new.strip("|").split("|")[-1] not in str(caught.value)


@pytest.mark.parametrize(
    ("raw", "location"),
    [
        (ADT_A01_V251.replace("\r" + pid(), ""), "PID"),
        (ADT_A01_V251.replace("MRN0001^^^NSH^MR~ENT5550^^^EMPI^PI", '""'), "PID-3"),
        (ADT_A01_V251.replace("|CTRL-0001|", "||"), "MSH-10"),
        (ADT_A01_V251.replace("|ADT^A01^ADT_A01|", "||"), "MSH-9"),
        (ADT_A01_V251.replace("|P|2.5.1", "|P|"), "MSH-12"),
        (b"not hl7 at all", "MSH"),
    ],
    ids=["missing-pid", "empty-pid-3", "no-control-id", "no-type", "no-version", "not-hl7"],
)
def test_broken_messages_name_the_position(
    raw: str | bytes, location: str, maps: AdtConceptMaps
) -> None:
    with pytest.raises(Hl7ParseError) as caught:
        parse_adt(raw, maps)
    assert caught.value.location == location
    assert "TESTPATIENT" not in str(caught.value)


def test_event_falls_back_to_evn_1_when_msh_9_2_is_empty(maps: AdtConceptMaps) -> None:
    raw = ADT_A01_V251.replace("ADT^A01^ADT_A01", "ADT")
    assert _event(raw, maps).event == "A01"


def test_patient_class_maps_through_the_concept_map(maps: AdtConceptMaps) -> None:
    for code, target in [("E", "EMER"), ("O", "AMB"), ("i", "IMP")]:
        raw = ADT_A01_V251.replace(pv1(), pv1(code))
        visit = _event(raw, maps).visit
        assert visit is not None
        assert visit.patient_class == MappedCode(source=code, target=target, mapped=True)


def test_events_are_frozen(maps: AdtConceptMaps) -> None:
    result = _event(ADT_A01_V251, maps)
    with pytest.raises(ValueError, match="frozen"):
        result.event = "A02"  # type: ignore[misc]
