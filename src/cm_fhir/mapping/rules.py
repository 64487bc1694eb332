"""The typed spec of ``mappings/discharge-rules.yaml``: discharge-planning rules as data.

Pure apart from reading the file once in :func:`load_discharge_rules`. The file says who is
screened into a case (criteria combined with ``any``/``all``, nestable), which case-management team
owns the work on each unit, and which tasks, referrals and due dates each ADT event creates: before
admission, at admission, before and at discharge, and at death. Every value is checked at load:
encounter classes must be v3 codes, durations must read like ``24h``/``7d``, and a unit may only
name a team the file declares. A bad file fails with :class:`~cm_fhir.errors.MappingSpecError`
naming the file and key path. Task kinds, referral types, dispositions and the programme are codes
of ``code-systems.yaml``: :func:`cm_fhir.mapping.vocabulary.check_vocabulary` checks them against
the registry in use. The workflow in :mod:`cm_fhir.workflow` reads nothing else.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Final, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from cm_fhir.domain.codes import (
    DEFAULT_PROGRAMME,
    DispositionCode,
    PartyKind,
    Priority,
    ProgrammeCode,
    ReferralTypeCode,
    TaskKind,
)
from cm_fhir.mapping.adt_maps import ENCOUNTER_CLASSES
from cm_fhir.mapping.loader import load_with_overrides

__all__ = [
    "DISCHARGE_RULES_FILE",
    "PREFIX_SYSTEMS",
    "AdmissionRules",
    "AtDischarge",
    "ClassChangeRules",
    "Criterion",
    "DeathRules",
    "DiagnosisCriterion",
    "DischargeRules",
    "DischargeStepRules",
    "IdentityRules",
    "OutcomeRules",
    "PartySpec",
    "PendingDischargeRules",
    "PostAcuteRule",
    "PreAdmissionRules",
    "ReferralRule",
    "TaskRule",
    "TransferRules",
    "VisitField",
    "load_discharge_rules",
    "parse_duration",
]

DISCHARGE_RULES_FILE: Final = "discharge-rules.yaml"

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
    model_config = ConfigDict(extra="forbid", frozen=True)


class IdentifierSpec(Rules):
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


class AgeRange(Rules):
    min: int | None = Field(default=None, ge=0, le=150)
    max: int | None = Field(default=None, ge=0, le=150)

    @model_validator(mode="after")
    def _bounded(self) -> Self:
        if self.min is None and self.max is None:
            raise ValueError("an age criterion needs min or max")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min is above max")
        return self


#: Code systems whose codes are hierarchical by prefix: a set entry matches the code and every
#: code below it, with dots ignored (``428`` matches ``428.0`` and ``4280``). Other systems match
#: exactly.
PREFIX_SYSTEMS: Final[frozenset[str]] = frozenset(
    {
        "http://hl7.org/fhir/sid/icd-10",
        "http://hl7.org/fhir/sid/icd-10-cm",
        "http://hl7.org/fhir/sid/icd-9-cm",
    }
)


class DiagnosisCriterion(Rules):
    """Diagnosis code sets by code system URL (the systems ``identity.diagnosis_systems`` names).

    A DG1 code matches when its system has a set here and the code is in it: by prefix for the
    ICD systems (:data:`PREFIX_SYSTEMS`), exactly for any other.
    """

    sets: dict[Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9+.-]*:\S+$")], list[NoSpace]]

    @field_validator("sets")
    @classmethod
    def _something(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        if not value or not all(value.values()):
            raise ValueError("a diagnosis criterion needs at least one code system with codes")
        return value

    def matches(self, system: str, code: str) -> bool:
        """Whether the code ``code`` of ``system`` is in this criterion's sets."""
        wanted = self.sets.get(system)
        if not wanted:
            return False
        if system in PREFIX_SYSTEMS:
            given = _icd_form(code)
            return any(given.startswith(_icd_form(prefix)) for prefix in wanted)
        return code in wanted


def _icd_form(code: str) -> str:
    return code.replace(".", "").replace(" ", "").upper()


class Criterion(Rules):
    """One screening criterion; exactly one key. ``any``/``all`` nest further criteria."""

    any: list[Criterion] | None = Field(default=None, min_length=1)
    all: list[Criterion] | None = Field(default=None, min_length=1)
    patient_class: list[str] | None = Field(default=None, min_length=1)
    age: AgeRange | None = None
    diagnosis: DiagnosisCriterion | None = None
    readmission_within: Duration | None = None
    payer: list[NoSpace] | None = Field(default=None, min_length=1)
    location: list[NoSpace] | None = Field(default=None, min_length=1)
    hospital_service: list[NoSpace] | None = Field(default=None, min_length=1)

    @field_validator("patient_class")
    @classmethod
    def _classes(cls, value: list[str] | None) -> list[str] | None:
        unknown = sorted(set(value or ()) - ENCOUNTER_CLASSES)
        if unknown:
            raise ValueError(f"not v3 ActCode encounter classes: {unknown}")
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        given = [name for name in type(self).model_fields if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"a criterion has exactly one key, found {sorted(given) or 'none'}")
        return self

    @property
    def name(self) -> str:
        """The criterion's key (``age``, ``diagnosis``, ``any``...)."""
        return next(n for n in type(self).model_fields if getattr(self, n) is not None)


#: The CX fields that can carry a visit's number: visit number, alternate visit id, account number.
VisitField = Literal["PV1-19", "PV1-50", "PID-18"]
_DEFAULT_VISIT_FIELDS: Final[tuple[VisitField, ...]] = ("PV1-19", "PID-18")


class IdentityRules(Rules):
    """Identifier and code systems for what comes from HL7v2 without one, and which fields name
    a visit (the first of ``visit_number_fields`` that holds a value)."""

    patient_systems: dict[str, NoSpace] = Field(
        default_factory=dict, description="PID-3.4 assigning authority -> identifier system"
    )
    default_patient_system: NoSpace
    visit_number_fields: list[VisitField] = Field(
        default_factory=lambda: list(_DEFAULT_VISIT_FIELDS),
        min_length=1,
        description="Where the visit number is read, in order; its CX.4 (else MSH-4) qualifies it",
    )
    visit_systems: dict[str, NoSpace] = Field(
        default_factory=dict, description="Visit number assigning authority -> identifier system"
    )
    visit_system: NoSpace
    payer_system: NoSpace
    diagnosis_systems: dict[str, NoSpace] = Field(
        default_factory=dict, description="DG1-3.3 coding system -> code system URL"
    )
    default_diagnosis_system: NoSpace
    screening_criterion_system: NoSpace


class PostAcuteRule(Rules):
    """A disposition known from the admission itself: when ``when`` holds, plan ``disposition``."""

    when: Criterion
    disposition: DispositionCode


class AdmissionRules(Rules):
    """A01 (and an A13 that turns a discharge back into a stay): the initial assessment, the
    payer notification, a site's own admission tasks, and post-acute referrals started at
    admission."""

    initial_assessment: TaskRule
    payer_notification: TaskRule | None = None
    tasks: dict[RuleName, TaskRule] = Field(
        default_factory=dict, description="More tasks every admission creates, by rule name"
    )
    post_acute: list[PostAcuteRule] = Field(
        default_factory=list, description="First match starts the disposition's referral"
    )


class TransferRules(Rules):
    """A02: whether open tasks follow the patient to the new unit's team."""

    move_open_tasks: bool = True


class PreAdmissionRules(Rules):
    """A05 pre-admit / A14 pending admit: a planned case, screened as ``screen_as``."""

    screen_as: str = Field(default="IMP", description="Encounter class a pre-admit screens as")
    tasks: dict[RuleName, TaskRule] = Field(default_factory=dict)

    @field_validator("screen_as")
    @classmethod
    def _class(cls, value: str) -> str:
        if value not in ENCOUNTER_CLASSES:
            raise ValueError(f"not a v3 ActCode encounter class: {value}")
        return value


class ClassChangeRules(Rules):
    """A07, or an A02/A08 that changes PV1-2, when the case no longer qualifies."""

    not_qualified: Literal["close", "flag"] = "flag"


class PendingDischargeRules(Rules):
    """A16 pending discharge: the discharge-planning tasks it creates, by rule name."""

    tasks: dict[RuleName, TaskRule] = Field(default_factory=dict)


class DeathRules(Rules):
    """A discharge with an ``expired`` disposition, or PID-30 = Y: extra work a site wants."""

    tasks: dict[RuleName, TaskRule] = Field(default_factory=dict)


class DischargeStepRules(Rules):
    """A03 discharge: the tasks, the catch-up of missed planning tasks, and the referral per
    disposition."""

    tasks: dict[RuleName, TaskRule] = Field(default_factory=dict)
    catch_up: list[RuleName] = Field(
        default_factory=list,
        description="pending_discharge tasks A03 creates when no discharge planning created them",
    )
    referrals: dict[DispositionCode, ReferralRule] = Field(default_factory=dict)
    referral_requester: PartySpec = Field(
        description="Who requests post-acute referrals; R4 allows an Organization, not a CareTeam"
    )
    close_after: Duration
    close_when_follow_up_done: bool = True

    @model_validator(mode="after")
    def _requester_is_an_organisation(self) -> Self:
        if self.referral_requester.kind is not PartyKind.ORGANIZATION:
            raise ValueError("referral_requester must be an Organization (R4 requester types)")
        return self


class OutcomeRules(Rules):
    """Outcome evaluation: how long after a discharge an admission or ED visit counts."""

    window: Duration = Field(
        default=timedelta(days=30),
        description="An inpatient admission or ED visit this soon after a discharge is counted",
    )


class DischargeRules(Rules):
    """``mappings/discharge-rules.yaml``."""

    programme: ProgrammeCode = DEFAULT_PROGRAMME
    case_id_prefix: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9]{0,7}$")] = "dp"
    timezone: str = Field(default="UTC", description="For HL7 times without an offset")
    identity: IdentityRules
    teams: dict[TeamName, PartySpec] = Field(min_length=1)
    location_teams: dict[str, TeamName] = Field(
        default_factory=dict, description="PV1-3.1 point of care -> team"
    )
    default_team: TeamName
    screening: Criterion
    pre_admission: PreAdmissionRules = Field(default_factory=PreAdmissionRules)
    admission: AdmissionRules
    transfer: TransferRules = Field(default_factory=TransferRules)
    class_change: ClassChangeRules = Field(default_factory=ClassChangeRules)
    pending_discharge: PendingDischargeRules = Field(default_factory=PendingDischargeRules)
    discharge: DischargeStepRules
    death: DeathRules = Field(default_factory=DeathRules)
    outcome: OutcomeRules = Field(default_factory=OutcomeRules)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError("unknown IANA time zone") from exc
        return value

    @field_validator("location_teams", "default_team")
    @classmethod
    def _known_teams(
        cls, value: dict[str, str] | str, info: ValidationInfo
    ) -> dict[str, str] | str:
        teams = info.data.get("teams")
        if teams is None:  # the teams themselves failed; that error is reported
            return value
        named = value.items() if isinstance(value, dict) else [("", value)]
        for location, team in named:
            if team not in teams:
                where = f"'{location}' names" if location else "names"
                raise ValueError(f"{where} unknown team '{team}'; known: {sorted(teams)}")
        return value

    @model_validator(mode="after")
    def _distinct_task_ids(self) -> Self:
        admission = set(self.admission.tasks)
        taken = {"initial-assessment", "payer-notification", *self.pre_admission.tasks}
        clash = admission & taken
        if clash:
            raise ValueError(f"admission.tasks reuse task names {sorted(clash)}")
        pending = set(self.pending_discharge.tasks)
        clash = pending & set(self.discharge.tasks)
        if clash:
            raise ValueError(f"pending_discharge and discharge reuse task names {sorted(clash)}")
        unknown = sorted(set(self.discharge.catch_up) - pending)
        if unknown:
            raise ValueError(f"discharge.catch_up names no pending_discharge task: {unknown}")
        return self

    @model_validator(mode="after")
    def _screened_systems_are_mapped(self) -> Self:
        known = {*self.identity.diagnosis_systems.values(), self.identity.default_diagnosis_system}
        pending = [self.screening]
        while pending:
            criterion = pending.pop()
            pending += [*(criterion.any or ()), *(criterion.all or ())]
            unknown = sorted(set(criterion.diagnosis.sets) - known) if criterion.diagnosis else []
            if unknown:
                raise ValueError(
                    f"screening diagnosis sets name {unknown}, which no DG1-3.3 coding system "
                    "maps to (identity.diagnosis_systems): they could never match"
                )
        return self

    def team(self, location: str | None) -> str:
        """The team that owns the work on ``location`` (a PV1-3.1 point of care)."""
        if location is not None and location in self.location_teams:
            return self.location_teams[location]
        return self.default_team


def load_discharge_rules(override_dir: Path | None = None) -> DischargeRules:
    """Load the bundled rules, deep-merged with a site's file of the same name.

    ``override_dir`` defaults to the folder named by ``CM_FHIR_MAPPINGS_DIR``.

    Raises:
        MappingSpecError: the file (or the merged result) is invalid; names file, key and reason.
    """
    return load_with_overrides(DISCHARGE_RULES_FILE, DischargeRules, override_dir)
