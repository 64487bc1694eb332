"""OperationOutcome building. Pure.

Every error that leaves cm-fhir towards a FHIR client is an OperationOutcome whose issues carry a
severity, an issue-type code, the FHIRPath ``expression`` of the element and text a person
can act on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Severity = Literal["fatal", "error", "warning", "information"]


@dataclass(frozen=True, slots=True)
class Issue:
    severity: Severity
    code: str
    text: str
    expression: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "severity": self.severity,
            "code": self.code,
            "details": {"text": self.text},
        }
        if self.expression:
            out["expression"] = [self.expression]
        return out


def operation_outcome(issues: list[Issue]) -> dict[str, Any]:
    """An OperationOutcome; an empty list gives the single 'all OK' information issue."""
    if not issues:
        issues = [Issue("information", "informational", "No issues found")]
    return {"resourceType": "OperationOutcome", "issue": [i.to_json() for i in issues]}


def has_errors(outcome: dict[str, Any]) -> bool:
    return any(i.get("severity") in ("error", "fatal") for i in outcome.get("issue", []))
