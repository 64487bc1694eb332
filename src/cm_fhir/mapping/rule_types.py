"""The building blocks of the rules files: durations, names, teams and organisations, and the
task and referral a rule creates. Pure; every value is checked when a rules file is loaded."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Final, Literal, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, StringConstraints, model_validator

from cm_fhir.domain.codes import PartyKind, Priority, ReferralTypeCode, TaskKind

__all__ = [
    "AtDischarge",
    "Duration",
    "IdentifierSpec",
    "NoSpace",
    "PartySpec",
    "ReferralRule",
    "RuleName",
    "Rules",
    "TaskRule",
    "TeamName",
    "Text",
    "parse_duration",
]

_DURATION = re.compile(r"^\s*(\d{1,5})\s*([mhdw])\s*$")
_UNITS: Final[dict[str, str]] = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(value: object) -> timedelta:
    """``"90m"``, ``"24h"``, ``"7d"`` or ``"2w"`` as a timedelta; anything else is refused."""
    if isinstance(value, timedelta):
        return value
    match = _DURATION.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError("a duration is a whole number and a unit: m, h, d or w (e.g. 24h, 7d)")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


#: A positive duration written ``24h``, ``7d``...
Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
#: A rule name: it becomes part of task ids, so it is short and id-safe.
RuleName = Annotated[
    str, StringConstraints(pattern=r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$", max_length=32)
]
TeamName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
NoSpace = Annotated[str, StringConstraints(pattern=r"^\S+$")]


class Rules(BaseModel):
    """A part of a rules file: frozen, and no key it does not know."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class IdentifierSpec(Rules):
    """A business identifier of a team or organisation: its system and value."""

    system: NoSpace
    value: Annotated[str, StringConstraints(pattern=r"^\S(.*\S)?$")]


class PartySpec(Rules):
    """A team or organisation: a CareTeam or Organization with a display and/or an identifier."""

    kind: Literal[PartyKind.CARE_TEAM, PartyKind.ORGANIZATION]
    display: Text | None = None
    identifier: IdentifierSpec | None = None

    @model_validator(mode="after")
    def _named(self) -> Self:
        if self.display is None and self.identifier is None:
            raise ValueError("a team or organisation needs a display or an identifier")
        return self


#: What A03 does with a pre-discharge task still open: cancel it, flag it, or keep it silently.
AtDischarge = Literal["cancel", "flag", "keep"]


class TaskRule(Rules):
    """One task a rule creates: its kind (a task code), text, due date and priority.

    ``due`` (and ``not_before``, the start of a window) count from the event time;
    ``before_discharge`` (planning work only) brings the due date forward to that long before the
    start of the expected discharge day, when one is known.
    ``at_discharge`` (``pending_discharge`` tasks only) says what A03 does if the task is open.
    """

    kind: TaskKind
    description: Text
    due: Duration
    not_before: Duration | None = None
    before_discharge: Duration | None = None
    priority: Priority = Priority.ROUTINE
    at_discharge: AtDischarge = "flag"

    @model_validator(mode="after")
    def _window(self) -> Self:
        if self.not_before is not None and self.not_before > self.due:
            raise ValueError("not_before is later than due")
        if self.not_before is not None and self.before_discharge is not None:
            raise ValueError("a task has not_before or before_discharge, not both")
        return self


class ReferralRule(Rules):
    """A post-acute referral: the service type, who performs it and when it is due."""

    type: ReferralTypeCode
    performer: PartySpec
    due: Duration
    before_discharge: Duration | None = None
    note: Text | None = None
    priority: Priority = Priority.ROUTINE
