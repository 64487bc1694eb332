"""FHIR search date values: a prefix and a date of some precision, read as a range. Pure.

A search date such as ``2026-03`` stands for the whole month: the range ``[2026-03-01T00:00Z,
2026-04-01T00:00Z)``. The comparison prefixes then apply to that range the way FHIR R4 defines
them for a target that is a single instant (``meta.lastUpdated``):

==========  ===============================
``eq``      ``low <= instant < high``
``gt``      ``instant >= high``
``ge``      ``instant >= low``
``lt``      ``instant < low``
``le``      ``instant < high``
==========  ===============================

Values without a timezone are read as UTC; the range is kept in UTC, and a range that leaves the
calendar's years 0001 to 9999 (``gt9999-12-31``, ``0001-01-01T00:00+14:00``) is refused. Other
prefixes (``ne``, ``sa``, ``eb``, ``ap``) are
refused with :class:`~cm_fhir.errors.SearchParameterError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum

from cm_fhir.errors import SearchParameterError

__all__ = ["DateBound", "DatePrefix", "parse_date_bound"]


class DatePrefix(StrEnum):
    """The comparison prefixes the facade supports for dates."""

    EQ = "eq"
    GT = "gt"
    GE = "ge"
    LT = "lt"
    LE = "le"


_KNOWN_PREFIXES = frozenset({"eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"})
_SUPPORTED = frozenset(p.value for p in DatePrefix)

_DATE = re.compile(
    r"^(?P<year>\d{4})"
    r"(?:-(?P<month>\d{2})"
    r"(?:-(?P<day>\d{2})"
    r"(?:T(?P<hour>\d{2}):(?P<minute>\d{2})"
    r"(?::(?P<second>\d{2})(?:\.(?P<fraction>\d{1,9}))?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?"
    r")?)?)?$"
)


@dataclass(frozen=True, slots=True)
class DateBound:
    """One date criterion: instants ``t`` with ``lower <= t < upper`` match (None = open)."""

    prefix: DatePrefix
    low: datetime
    high: datetime

    @property
    def lower(self) -> datetime | None:
        """The inclusive lower limit on the matching instants, if any."""
        if self.prefix in (DatePrefix.EQ, DatePrefix.GE):
            return self.low
        if self.prefix is DatePrefix.GT:
            return self.high
        return None

    @property
    def upper(self) -> datetime | None:
        """The exclusive upper limit on the matching instants, if any."""
        if self.prefix in (DatePrefix.EQ, DatePrefix.LE):
            return self.high
        if self.prefix is DatePrefix.LT:
            return self.low
        return None

    def matches(self, instant: datetime) -> bool:
        """Whether an (aware) instant satisfies this criterion."""
        lower, upper = self.lower, self.upper
        return (lower is None or instant >= lower) and (upper is None or instant < upper)


def _split_prefix(text: str) -> tuple[str, str]:
    if len(text) >= 2 and text[:2].isalpha():
        return text[:2], text[2:]
    return "eq", text


def _zone(tz: str | None) -> timezone:
    if tz is None or tz == "Z":
        return UTC
    sign = 1 if tz[0] == "+" else -1
    hours, minutes = int(tz[1:3]), int(tz[4:6])
    if hours > 14 or minutes > 59:
        raise ValueError("timezone offset out of range")
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def _next_month(year: int, month: int) -> tuple[int, int]:
    return (year + 1, 1) if month == 12 else (year, month + 1)


def _range(match: re.Match[str]) -> tuple[datetime, datetime]:
    g = match.groupdict()
    year = int(g["year"])
    zone = _zone(g["tz"])
    if g["month"] is None:
        return datetime(year, 1, 1, tzinfo=zone), datetime(year + 1, 1, 1, tzinfo=zone)
    month = int(g["month"])
    if g["day"] is None:
        low = datetime(year, month, 1, tzinfo=zone)
        next_year, next_month = _next_month(year, month)
        return low, datetime(next_year, next_month, 1, tzinfo=zone)
    day = int(g["day"])
    if g["hour"] is None:
        low = datetime(year, month, day, tzinfo=zone)
        return low, low + timedelta(days=1)
    hour, minute = int(g["hour"]), int(g["minute"])
    if g["second"] is None:
        low = datetime(year, month, day, hour, minute, tzinfo=zone)
        return low, low + timedelta(minutes=1)
    fraction = g["fraction"] or ""
    micro = int((fraction + "000000")[:6]) if fraction else 0
    low = datetime(year, month, day, hour, minute, int(g["second"]), micro, tzinfo=zone)
    # The value names a span as wide as its last digit (at least one microsecond).
    step = timedelta(microseconds=max(1, 10 ** (6 - len(fraction)))) if fraction else None
    return low, low + (step or timedelta(seconds=1))


def parse_date_bound(parameter: str, text: str) -> DateBound:
    """Read one search date value such as ``ge2026-03-01`` (SearchParameterError if bad)."""
    prefix, value = _split_prefix(text.strip())
    if prefix not in _KNOWN_PREFIXES:
        raise SearchParameterError(parameter, f"unknown prefix '{prefix}'")
    if prefix not in _SUPPORTED:
        supported = ", ".join(p.value for p in DatePrefix)
        raise SearchParameterError(
            parameter, f"prefix '{prefix}' is not supported (supported: {supported})"
        )
    match = _DATE.match(value)
    if match is None:
        raise SearchParameterError(
            parameter, "expected a date such as 2026-03-01 or 2026-03-01T08:00:00Z"
        )
    try:
        low, high = _range(match)
        # In UTC here, so no later comparison or query can overflow the calendar.
        low, high = low.astimezone(UTC), high.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise SearchParameterError(
            parameter, "the date is out of range (it must fall within the years 0001 to 9999)"
        ) from exc
    return DateBound(DatePrefix(prefix), low, high)
