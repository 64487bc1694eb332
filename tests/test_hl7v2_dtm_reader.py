"""The direct DTM reader agrees with hl7apy's DTM rules, value for value and error for error.

:func:`~cm_fhir.hl7v2.parse.parse_dtm` reads the usual ``YYYYMMDD[HH[MM[SS[.S]]]][+/-ZZZZ]``
shape itself and leaves every other value to hl7apy; these tests hold both paths to hl7apy's
result (date/time and offset) or to its refusal.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hl7apy.utils import get_datetime_info
from hypothesis import given, settings
from hypothesis import strategies as st

from cm_fhir.errors import Hl7ParseError
from cm_fhir.hl7v2.parse import parse_dtm


def _by_hl7apy(value: str) -> datetime | None:
    """What hl7apy makes of ``value`` (None when it refuses), with the offset attached."""
    try:
        moment, _fmt, offset, _precision = get_datetime_info(value)
    except (ValueError, TypeError, IndexError):
        return None
    if not offset:
        return moment  # type: ignore[no-any-return]
    hours, minutes = int(offset[1:3]), int(offset[3:5])
    if hours > 14 or minutes > 59:
        return None
    sign = -1 if offset[0] == "-" else 1
    zone = timezone(sign * timedelta(hours=hours, minutes=minutes))
    return moment.replace(tzinfo=zone)  # type: ignore[no-any-return]


def _two(low: int, high: int) -> st.SearchStrategy[str]:
    return st.integers(low, high).map(lambda n: f"{n:02d}")


_shaped = st.tuples(
    st.integers(0, 9999).map(lambda n: f"{n:04d}"),
    _two(0, 13),
    _two(0, 32),
    st.lists(_two(0, 61), max_size=3).map("".join),
    st.sampled_from(["", "."]).flatmap(
        lambda dot: st.just("") if not dot else st.text("0123456789", max_size=6).map(dot.__add__)
    ),
    st.sampled_from(["", "+", "-"]).flatmap(
        lambda sign: (
            st.just("")
            if not sign
            else st.tuples(_two(0, 16), _two(0, 61)).map(lambda p: sign + "".join(p))
        )
    ),
).map("".join)


def _check(value: str) -> None:
    expected = _by_hl7apy(value.strip())  # parse_dtm trims, as it always has
    if expected is None:
        with pytest.raises(Hl7ParseError) as caught:
            parse_dtm(value, "PV1-44")
        assert caught.value.location == "PV1-44"
    else:
        found = parse_dtm(value, "PV1-44")
        assert (found, found.utcoffset()) == (expected, expected.utcoffset())


_DIGITS_AND_SIGNS = st.text("0123456789+-. ", min_size=4, max_size=24)


@settings(max_examples=300, deadline=None)
@given(_shaped)
def test_dtm_shaped_values_read_as_hl7apy_reads_them(value: str) -> None:
    _check(value)


@settings(max_examples=200, deadline=None)
@given(_DIGITS_AND_SIGNS)
def test_any_digits_and_signs_read_as_hl7apy_reads_them(value: str) -> None:
    _check(value)


@pytest.mark.slow
@settings(max_examples=5000, deadline=None)
@given(st.one_of(_shaped, _DIGITS_AND_SIGNS))
def test_dtm_values_read_as_hl7apy_reads_them_soak(value: str) -> None:
    _check(value)


@pytest.mark.parametrize(
    "value",
    ["2024", "202403", "20240305+0100", "2024030509-1200", "20240305093000.1+1400", "19480304"],
)
def test_precisions_and_offsets_read_as_hl7apy_reads_them(value: str) -> None:
    _check(value)
