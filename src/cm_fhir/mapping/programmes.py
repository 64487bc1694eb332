"""The typed spec of ``mappings/programmes.yaml``: what each programme and model asks of the work.

Pure apart from reading the file once in :func:`load_programmes`. A case-management model is more
than a label on ``EpisodeOfCare.type``: intensive case management means a small caseload, for
example, and frequent contact. The file sets recurring contacts per model (a weekly home visit for
intensive case management: :mod:`cm_fhir.workflow.cadence`) and a caseload limit (open cases per
case manager) for every programme, and lets a programme or a model within it lower it. Programme
and model codes are codes of ``code-systems.yaml``, checked across files by
:mod:`cm_fhir.mapping.vocabulary`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Final

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from cm_fhir.domain.codes import ModelCode, ProgrammeCode, TaskKind
from cm_fhir.mapping.loader import load_with_overrides
from cm_fhir.mapping.rule_types import Duration

__all__ = [
    "PROGRAMMES_FILE",
    "ContactRule",
    "ModelRules",
    "ProgrammeRules",
    "ProgrammesSpec",
    "load_programmes",
]

PROGRAMMES_FILE: Final = "programmes.yaml"


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ContactRule(_Spec):
    """A recurring contact: one open task of ``kind`` at a time, the next due ``every`` after the
    previous one was due (the first ``every`` after the case opened)."""

    kind: TaskKind
    description: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
    every: Duration


class ModelRules(_Spec):
    """What a case-management model changes within a programme."""

    caseload_limit: int | None = Field(
        default=None, ge=1, le=10_000, description="Open cases per case manager for this model"
    )
    contacts: list[ContactRule] = Field(
        default_factory=list, description="Recurring contacts, e.g. a weekly home visit"
    )


class ProgrammeRules(_Spec):
    """A programme's caseload limit, and its models' own limits."""

    caseload_limit: int | None = Field(
        default=None, ge=1, le=10_000, description="Open cases per case manager"
    )
    models: dict[ModelCode, ModelRules] = Field(default_factory=dict)


class ProgrammesSpec(_Spec):
    """``mappings/programmes.yaml``."""

    caseload_limit: int = Field(
        default=30, ge=1, le=10_000, description="Open cases per case manager, by default"
    )
    programmes: dict[ProgrammeCode, ProgrammeRules] = Field(default_factory=dict)

    def case_limit(self, programme: str, models: Iterable[str] = ()) -> int:
        """The caseload limit a case of ``programme`` with ``models`` sets: the smallest of its
        models' limits, else the programme's, else the default."""
        rules = self.programmes.get(programme)
        if rules is None:
            return self.caseload_limit
        limits = [
            m.caseload_limit
            for code in models
            if (m := rules.models.get(code)) is not None and m.caseload_limit is not None
        ]
        if limits:
            return min(limits)
        return rules.caseload_limit or self.caseload_limit

    def contacts(self, programme: str, models: Iterable[str]) -> list[tuple[str, ContactRule]]:
        """The recurring contacts a case of ``programme`` with ``models`` gets, each with its
        name (``<model>-<kind>``), in the order of the models."""
        rules = self.programmes.get(programme)
        if rules is None:
            return []
        return [
            (f"{code}-{contact.kind}", contact)
            for code in models
            if (model := rules.models.get(code)) is not None
            for contact in model.contacts
        ]

    def caseload_limit_of(self, cases: Iterable[tuple[str, Iterable[str]]]) -> int:
        """A case manager's limit: the smallest limit any of their open cases sets (the default
        when they hold none). ``cases`` are (programme, models) pairs."""
        return min((self.case_limit(p, m) for p, m in cases), default=self.caseload_limit)


def load_programmes(override_dir: Path | None = None) -> ProgrammesSpec:
    """Load the bundled ``programmes.yaml``, deep-merged with a site's file of the same name.

    Raises:
        MappingSpecError: the file (or the merged result) is invalid; names file, key and reason.
    """
    return load_with_overrides(PROGRAMMES_FILE, ProgrammesSpec, override_dir)
