"""Screening: does a visit qualify for a discharge-planning case under the rules? Pure.

The criteria of ``screening`` in ``discharge-rules.yaml`` are evaluated against a
:class:`ScreeningFacts` value built from the event and the patient's state: patient class (the
mapped encounter class), age from PID-7 at the event time, DG1 codes in the code sets of their
code system (ICD codes by prefix, dots ignored, so ICD-10, ICD-10-CM and ICD-9-CM each match their
own set), a readmission within N days of the patient's last discharge, payer (IN1-3), location
(PV1-3.1) and hospital service (PV1-10). The result names the leaf criteria that matched, which
become the case's :class:`~cm_fhir.domain.Screening`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

from cm_fhir.domain.assessment import Screening
from cm_fhir.domain.common import Code
from cm_fhir.mapping.rules import DischargeRules
from cm_fhir.mapping.screening_rules import Criterion
from cm_fhir.workflow.facts import age_at

__all__ = ["ScreeningFacts", "ScreeningResult", "screen"]


@dataclass(frozen=True, slots=True)
class ScreeningFacts:
    """What screening looks at, taken from the event and the visit memory."""

    at: datetime
    patient_class: str | None = None
    birth_date: date | None = None
    diagnoses: tuple[Code, ...] = ()
    payers: tuple[str, ...] = ()
    location: str | None = None
    hospital_service: str | None = None
    last_discharge: datetime | None = None


@dataclass(frozen=True, slots=True)
class ScreeningResult:
    eligible: bool
    matched: tuple[str, ...] = field(default=())

    def screening(self, rules: DischargeRules, performed: datetime) -> Screening:
        system = rules.identity.screening_criterion_system
        return Screening(
            performed=performed,
            eligible=self.eligible,
            criteria=tuple(Code(system=system, code=name) for name in self.matched),
        )


def screen(facts: ScreeningFacts, rules: DischargeRules) -> ScreeningResult:
    """Evaluate the rules' screening criteria against ``facts``."""
    matched: list[str] = []
    eligible = _holds(rules.screening, facts, matched)
    return ScreeningResult(eligible, tuple(dict.fromkeys(matched)) if eligible else ())


def _holds(criterion: Criterion, facts: ScreeningFacts, matched: list[str]) -> bool:
    if criterion.any is not None:
        # Evaluate every branch so the screening lists all the reasons, not only the first.
        results = [_holds(c, facts, matched) for c in criterion.any]
        return any(results)
    if criterion.all is not None:
        mark = len(matched)
        if all(_holds(c, facts, matched) for c in criterion.all):
            return True
        del matched[mark:]
        return False
    ok = _leaf(criterion, facts)
    if ok:
        matched.append(criterion.name.replace("_", "-"))
    return ok


def _leaf(c: Criterion, f: ScreeningFacts) -> bool:
    if c.patient_class is not None:
        return f.patient_class in c.patient_class
    if c.age is not None:
        if f.birth_date is None:
            return False
        age = age_at(f.birth_date, f.at)
        return (c.age.min is None or age >= c.age.min) and (c.age.max is None or age <= c.age.max)
    if c.diagnosis is not None:
        return any(c.diagnosis.matches(d.system, d.code) for d in f.diagnoses)
    if c.readmission_within is not None:
        last = f.last_discharge
        return last is not None and last <= f.at <= last + c.readmission_within
    if c.payer is not None:
        return bool(set(f.payers) & set(c.payer))
    if c.location is not None:
        return f.location in c.location
    if c.hospital_service is not None:
        return f.hospital_service in c.hospital_service
    raise AssertionError("a criterion without a key passed validation")  # pragma: no cover
