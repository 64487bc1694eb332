"""The typed spec of ``mappings/discharge-rules.yaml``: discharge-planning rules as data.

Pure apart from reading the file once in :func:`load_discharge_rules`. The file says who is
screened into a case (criteria combined with ``any``/``all``, nestable), which case-management team
owns the work on each unit, and which tasks, referrals and due dates each ADT event creates: before
admission, at admission, before and at discharge, and at death. Every value is checked at load:
encounter classes must be v3 codes, durations must read like ``24h``/``7d``, and a unit may only
name a team the file declares. A bad file fails with :class:`~cm_fhir.errors.MappingSpecError`
naming the file and key path. Task kinds, referral types, dispositions and the programme are codes
of ``code-systems.yaml``: :func:`cm_fhir.mapping.vocabulary.check_vocabulary` checks them against
the registry in use. The workflow in :mod:`cm_fhir.workflow` reads nothing else. The screening
criteria are in :mod:`~cm_fhir.mapping.screening_rules`, the tasks, referrals and parties the
steps name in :mod:`~cm_fhir.mapping.rule_types`.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Final, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
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
    ProgrammeCode,
)
from cm_fhir.mapping.adt_maps import ENCOUNTER_CLASSES
from cm_fhir.mapping.loader import load_with_overrides
from cm_fhir.mapping.rule_types import (
    Duration,
    NoSpace,
    PartySpec,
    ReferralRule,
    RuleName,
    Rules,
    TaskRule,
    TeamName,
)
from cm_fhir.mapping.screening_rules import Criterion

__all__ = [
    "DISCHARGE_RULES_FILE",
    "AdmissionRules",
    "ClassChangeRules",
    "DeathRules",
    "DischargeRules",
    "DischargeStepRules",
    "IdentityRules",
    "OutcomeRules",
    "PendingDischargeRules",
    "PostAcuteRule",
    "PreAdmissionRules",
    "TransferRules",
    "VisitField",
    "load_discharge_rules",
]

DISCHARGE_RULES_FILE: Final = "discharge-rules.yaml"


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
