"""The facade's search-parameter parser and search dates: plain values in, criteria out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cm_fhir.errors import SearchParameterError
from cm_fhir.facade import (
    RESOURCE_TYPES,
    SEARCH_PARAMETERS,
    DateCriterion,
    DatePrefix,
    Direction,
    Field,
    IdCriterion,
    ReferenceCriterion,
    Token,
    TokenCriterion,
    parse_date_bound,
    parse_search,
)
from cm_fhir.facade.search import MAX_PARAMETERS, MAX_VALUE_LENGTH, MAX_VALUES, split_token


def test_token_forms() -> None:
    assert split_token("urn:sys|V1") == Token("urn:sys", "V1")
    assert split_token("|V1") == Token("", "V1")
    assert split_token("urn:sys|") == Token("urn:sys", None)
    assert split_token("V1") == Token(None, "V1")
    assert split_token(r"urn:a\|b|c\,d") == Token("urn:a|b", "c,d")


def test_repeated_parameters_and_comma_alternatives() -> None:
    query = parse_search(
        "Task",
        [("status", "requested,in-progress"), ("status", "requested"), ("_id", "a-1,b-2")],
    )
    assert query.criteria == (
        TokenCriterion(Field.STATUS, (Token(None, "requested"), Token(None, "in-progress"))),
        TokenCriterion(Field.STATUS, (Token(None, "requested"),)),
        IdCriterion(("a-1", "b-2")),
    )


def test_patient_forms() -> None:
    by_modifier = parse_search("EpisodeOfCare", [("patient:identifier", "urn:mrn|M1")])
    by_plain = parse_search("EpisodeOfCare", [("patient", "urn:mrn|M1")])
    any_system = parse_search("EpisodeOfCare", [("patient:identifier", "M1")])
    assert by_modifier.criteria == by_plain.criteria
    assert by_plain.criteria == (TokenCriterion(Field.PATIENT, (Token("urn:mrn", "M1"),)),)
    assert any_system.criteria == (TokenCriterion(Field.PATIENT, (Token(None, "M1"),)),)


@pytest.mark.parametrize("value", ["Patient/123", "123", "http://ehr/fhir/Patient/1"])
def test_patient_by_id_is_refused_with_a_hint(value: str) -> None:
    with pytest.raises(SearchParameterError, match="patient:identifier") as info:
        parse_search("Goal", [("patient", value)])
    assert value not in str(info.value)


def test_provenance_target() -> None:
    query = parse_search("Provenance", [("target", "Task/abc-1,CarePlan/x")])
    assert query.criteria == (
        ReferenceCriterion(Field.TARGET, (("Task", "abc-1"), ("CarePlan", "x"))),
    )
    with pytest.raises(SearchParameterError, match="target"):
        parse_search("Provenance", [("target", "abc")])


@pytest.mark.parametrize(
    ("resource_type", "key"),
    [
        ("Task", "subject"),
        ("Task", "_sort"),
        ("Goal", "status"),  # Goal searches by lifecycle-status
        ("Provenance", "identifier"),
        ("Task", "status:not"),
        ("Task", "identifier:of-type"),
        ("EpisodeOfCare", "patient:missing"),
        ("CarePlan", "_summary"),
    ],
)
def test_unknown_parameter_or_modifier_is_ignored_or_refused_when_strict(
    resource_type: str, key: str
) -> None:
    with pytest.raises(SearchParameterError) as info:
        parse_search(resource_type, [(key, "x")], strict=True)
    assert info.value.parameter in (key, key.partition(":")[0])
    lenient = parse_search(resource_type, [(key, "x"), ("_id", "abc-1")])
    assert lenient.ignored == (key.partition(":")[0] if ":" not in key else key,)
    assert lenient.params == (("_id", "abc-1"),)
    assert lenient.criteria == (IdCriterion(("abc-1",)),)


def test_result_parameters() -> None:
    query = parse_search(
        "Task",
        [
            ("_summary", "count"),
            ("_total", "accurate"),
            ("_elements", "status,for"),
            ("_totalMethod", "count"),
        ],
    )
    assert query.summary_count
    assert query.elements == ("status", "for")
    assert query.ignored == ("_totalMethod",)
    assert dict(query.params) == {
        "_summary": "count",
        "_total": "accurate",
        "_elements": "status,for",
    }
    assert not parse_search("Task", [("_summary", "false")]).summary_count
    assert parse_search("Task", [("_summary", "text")]).ignored == ("_summary",)
    with pytest.raises(SearchParameterError, match="_summary"):
        parse_search("Task", [("_summary", "text")], strict=True)
    with pytest.raises(SearchParameterError, match="_elements"):
        parse_search("Task", [("_elements", "status,for.reference")])
    with pytest.raises(SearchParameterError, match="_total"):
        parse_search("Task", [("_total", "all")], strict=True)


def test_unknown_type_is_refused() -> None:
    with pytest.raises(SearchParameterError, match="Patient"):
        parse_search("Patient", [])


def test_count_and_page() -> None:
    query = parse_search("CareTeam", [("_count", "5"), ("_page", "after.abc-1")])
    assert query.count == 5
    assert query.cursor is not None
    assert query.cursor.direction is Direction.AFTER
    assert query.cursor.id == "abc-1"
    assert parse_search("CareTeam", [("_count", "1000")], max_count=100).count == 100
    assert parse_search("CareTeam", [], default_count=7).count == 7
    assert parse_search("CareTeam", [("_count", "0")]).count == 0


@pytest.mark.parametrize(
    "items",
    [
        [("_count", "-1")],
        [("_count", "ten")],
        [("_count", "1"), ("_count", "2")],
        [("_page", "3")],
        [("_page", "after.")],
        [("_page", "sideways.abc")],
        [("_format", "xml")],
        [("_id", "not an id")],
        [("status", "http://hl7.org/fhir/task-status|")],
    ],
)
def test_bad_values_are_refused(items: list[tuple[str, str]]) -> None:
    with pytest.raises(SearchParameterError):
        parse_search("Task", items)


def test_empty_values_are_ignored_and_links_use_a_stable_order() -> None:
    query = parse_search("Task", [("status", "ready"), ("identifier", ""), ("_id", "b")])
    assert [type(c) for c in query.criteria] == [TokenCriterion, IdCriterion]
    assert query.params == (("_id", "b"), ("status", "ready"))


def test_every_type_has_the_common_parameters() -> None:
    assert set(RESOURCE_TYPES) == {
        "EpisodeOfCare",
        "CarePlan",
        "Goal",
        "Task",
        "CareTeam",
        "ServiceRequest",
        "Provenance",
    }
    for resource_type, params in SEARCH_PARAMETERS.items():
        names = {p.name for p in params}
        assert {"_id", "_lastUpdated", "patient"} <= names, resource_type


# -- dates --------------------------------------------------------------------------------------


def test_date_precision_becomes_a_range() -> None:
    year = parse_date_bound("_lastUpdated", "2026")
    assert (year.low, year.high) == (
        datetime(2026, 1, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )
    december = parse_date_bound("_lastUpdated", "2025-12")
    assert december.high == datetime(2026, 1, 1, tzinfo=UTC)
    leap = parse_date_bound("_lastUpdated", "2028-02-29")
    assert leap.high - leap.low == timedelta(days=1)
    minute = parse_date_bound("_lastUpdated", "2026-03-01T08:30+02:00")
    assert minute.low == datetime(2026, 3, 1, 6, 30, tzinfo=UTC)
    assert minute.high - minute.low == timedelta(minutes=1)
    fraction = parse_date_bound("_lastUpdated", "2026-03-01T08:30:00.25Z")
    assert fraction.low.microsecond == 250_000
    assert fraction.high - fraction.low == timedelta(milliseconds=10)


def test_prefixes_against_an_instant() -> None:
    inside = datetime(2026, 3, 1, 12, tzinfo=UTC)
    before = datetime(2026, 2, 28, 23, 59, tzinfo=UTC)
    after = datetime(2026, 3, 2, tzinfo=UTC)
    day = "2026-03-01"
    expected = {
        "eq": (False, True, False),
        "ge": (False, True, True),
        "gt": (False, False, True),
        "le": (True, True, False),
        "lt": (True, False, False),
    }
    for prefix, wanted in expected.items():
        bound = parse_date_bound("_lastUpdated", prefix + day)
        assert bound.prefix is DatePrefix(prefix)
        got = tuple(bound.matches(t) for t in (before, inside, after))
        assert got == wanted, prefix


def test_offset_is_honoured_and_missing_offset_is_utc() -> None:
    local = parse_date_bound("_lastUpdated", "2026-03-01T08:00:00-05:00")
    assert local.low == datetime(2026, 3, 1, 8, tzinfo=timezone(timedelta(hours=-5)))
    naive = parse_date_bound("_lastUpdated", "2026-03-01T08:00:00")
    assert naive.low == datetime(2026, 3, 1, 8, tzinfo=UTC)


@pytest.mark.parametrize(
    "text",
    [
        "ne2026",
        "sa2026",
        "ap2026",
        "zz2026",
        "2026-13",
        "2026-02-30",
        "26-01-01",
        "2026-01-01T25:00Z",
        "",
    ],
)
def test_bad_dates_are_refused(text: str) -> None:
    with pytest.raises(SearchParameterError):
        parse_date_bound("_lastUpdated", text)


def test_date_criterion_from_the_parser() -> None:
    query = parse_search("Goal", [("_lastUpdated", "gt2026-03-01"), ("_lastUpdated", "lt2026-04")])
    lower, upper = query.criteria
    assert isinstance(lower, DateCriterion)
    assert isinstance(upper, DateCriterion)
    assert lower.bound.lower == datetime(2026, 3, 2, tzinfo=UTC)
    assert upper.bound.upper == datetime(2026, 4, 1, tzinfo=UTC)


@given(
    st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31), timezones=st.just(UTC)
    ),
    st.sampled_from(["%Y", "%Y-%m", "%Y-%m-%d", "%Y-%m-%dT%H:%MZ", "%Y-%m-%dT%H:%M:%SZ"]),
)
def test_every_instant_falls_in_its_own_date(instant: datetime, pattern: str) -> None:
    bound = parse_date_bound("_lastUpdated", instant.strftime(pattern))
    assert bound.matches(instant)
    assert not bound.matches(bound.high)
    assert not bound.matches(bound.low - timedelta(microseconds=1))


@pytest.mark.parametrize(
    "text",
    ["gt9999-12-31", "le9999-12-31", "10000-01-01", "lt0001-01-01T00:00+14:00", "0000-06"],
)
def test_dates_past_the_calendar_are_refused(text: str) -> None:
    with pytest.raises(SearchParameterError) as refused:
        parse_date_bound("_lastUpdated", text)
    assert refused.value.parameter == "_lastUpdated"


def test_date_ranges_are_kept_in_utc() -> None:
    bound = parse_date_bound("_lastUpdated", "ge0001-01-01T00:00-05:00")
    assert bound.low == datetime(1, 1, 1, 5, 0, tzinfo=UTC)
    assert parse_date_bound("_lastUpdated", "gt9999-12-30").lower == datetime(
        9999, 12, 31, tzinfo=UTC
    )


def test_searches_are_bounded_and_the_error_names_the_parameter() -> None:
    values = ",".join(f"s|v{i}" for i in range(MAX_VALUES))
    criterion = parse_search("Task", [("identifier", values)]).criteria[0]
    assert isinstance(criterion, TokenCriterion)
    assert len(criterion.any_of) == MAX_VALUES
    with pytest.raises(SearchParameterError) as many:
        parse_search("Task", [("_id", "a"), ("identifier", values)])
    assert many.value.parameter == "identifier"
    with pytest.raises(SearchParameterError) as repeated:
        parse_search("Task", [("status", "ready")] * MAX_PARAMETERS + [("_count", "5")])
    assert repeated.value.parameter == "_count"
    with pytest.raises(SearchParameterError) as long:
        parse_search("Goal", [("_id", "a" * (MAX_VALUE_LENGTH + 1))])
    assert long.value.parameter == "_id"
