"""Value objects shared by the case-management domain: identifiers, codes, parties. Pure.

Every domain model is frozen and rejects unknown fields; collections are tuples. A change is a new
value (``model_copy``), which keeps the workflow pure and makes "what changed" a comparison.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from cm_fhir.domain.codes import IdentifierKind, PartyKind


class DomainModel(BaseModel):
    """Base for all domain values: immutable, strict about unknown fields."""

    # No empty text anywhere: FHIR refuses empty strings, so "" must be None instead.
    # Field docstrings (the string under each field) are the schema's descriptions.
    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        str_strip_whitespace=True,
        str_min_length=1,
        use_attribute_docstrings=True,
    )


#: A case-local id (a task, goal, referral ...): letters, digits and hyphens, as in FHIR ids.
LocalId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9\-]{1,64}$")]
NonEmptyStr = Annotated[str, StringConstraints(min_length=1, max_length=10_000)]


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("a timezone offset is required (e.g. 2026-03-01T08:00:00+00:00)")
    return value


#: Instants must carry a timezone: FHIR instants and dateTimes with time need one.
Instant = Annotated[datetime, AfterValidator(_aware)]


class Identifier(DomainModel):
    """A business identifier: an MRN with its assigning authority, a payer member id, an NPI."""

    system: Annotated[str, StringConstraints(min_length=1, pattern=r"^\S+$")]
    """The identifier's namespace URI (the MRN's assigning facility, the payer's member-id
    system)."""
    value: Annotated[str, StringConstraints(min_length=1, pattern=r"^\S(.*\S)?$")]
    """The identifier itself, unique within ``system``."""
    kind: IdentifierKind | None = None
    """What the identifier is (MRN, member id, NPI...), mapped to FHIR ``Identifier.type``."""
    assigner: str | None = Field(default=None, description="Assigning authority, e.g. a hospital")


class Code(DomainModel):
    """A coded concept from a named code system (ICD-10-CM, SNOMED CT, a local table...)."""

    system: Annotated[str, StringConstraints(min_length=1, pattern=r"^\S+$")]
    """The code system's canonical URI (ICD-10-CM, SNOMED CT, a cm-fhir or local system)."""
    # FHIR code: tokens separated by single whitespace characters.
    code: Annotated[str, StringConstraints(min_length=1, pattern=r"^\S+(\s\S+)*$")]
    """The code, as the code system defines it."""
    display: str | None = None
    """Human-readable text for the code, as the code system words it."""


class PartyRef(DomainModel):
    """Someone or something outside the case: a practitioner, a team, an organisation."""

    kind: PartyKind
    """Practitioner, care team or organisation: decides the FHIR resource type referenced."""
    identifier: Identifier | None = None
    """Business identifier of the party (an NPI, a team id); becomes a logical reference."""
    display: str | None = None
    """The party's name as shown to people."""

    @model_validator(mode="after")
    def _named(self) -> Self:
        if self.identifier is None and not self.display:
            raise ValueError("a party needs an identifier or a display name")
        return self


class PatientRef(DomainModel):
    """The patient, by business identifiers only; the first is the primary one (usually the MRN)."""

    identifiers: tuple[Identifier, ...] = Field(min_length=1)
    """The patient's identifiers, primary first (usually the MRN with its facility)."""

    @property
    def primary(self) -> Identifier:
        return self.identifiers[0]


class Quantity(DomainModel):
    """A measured amount with UCUM unit."""

    value: Decimal
    """The measured amount."""
    unit: str | None = None
    """Human-readable unit, e.g. ``days``."""
    system: str | None = "http://unitsofmeasure.org"
    """Unit system; UCUM by default."""
    code: str | None = None
    """Unit code in ``system``, e.g. ``d``."""


class Range(DomainModel):
    """A target range; at least one bound."""

    low: Quantity | None = None
    """Lower bound (inclusive), if any."""
    high: Quantity | None = None
    """Upper bound (inclusive), if any."""

    @model_validator(mode="after")
    def _bounded(self) -> Self:
        if self.low is None and self.high is None:
            raise ValueError("a range needs a low or a high bound")
        if self.low is not None and self.high is not None and self.low.value > self.high.value:
            raise ValueError("the range's low bound is above its high bound")
        return self


class Period(DomainModel):
    """A time span; the end may be open."""

    start: Instant
    """When the period starts (with a timezone)."""
    end: Instant | None = None
    """When it ends; None while it is still open."""

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.end is not None and self.end < self.start:
            raise ValueError("the period ends before it starts")
        return self


__all__ = [
    "Code",
    "DomainModel",
    "Identifier",
    "Instant",
    "LocalId",
    "NonEmptyStr",
    "PartyRef",
    "PatientRef",
    "Period",
    "Quantity",
    "Range",
]
