"""Screening criteria of ``mappings/discharge-rules.yaml``: who is screened into a case, as
criteria combined with ``any``/``all`` (nestable) over class, age, diagnosis, readmission, payer,
location and service. Pure; every value is checked when the rules are loaded."""

from __future__ import annotations

from typing import Annotated, Final, Self

from pydantic import Field, StringConstraints, field_validator, model_validator

from cm_fhir.mapping.adt_maps import ENCOUNTER_CLASSES
from cm_fhir.mapping.rule_types import Duration, NoSpace, Rules

__all__ = ["PREFIX_SYSTEMS", "AgeRange", "Criterion", "DiagnosisCriterion"]


class AgeRange(Rules):
    """An age criterion: at least ``min`` and at most ``max`` whole years (one may be open)."""

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
