"""Sample utilization reviews and PAS documents for the payer-exchange tests."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from cm_fhir.domain import (
    Case,
    CriteriaSet,
    Identifier,
    LevelOfCare,
    PartyKind,
    PartyRef,
    ReviewType,
    ReviewUrgency,
    UtilizationReview,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "stroke-inpatient-rehab.json"
REQUESTED = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
NPI = "http://hl7.org/fhir/sid/us-npi"
Json = dict[str, Any]


def stroke_case() -> Case:
    """The stroke example: a Lakeside Health Plan member at Riverside General."""
    return Case.model_validate(json.loads(EXAMPLE.read_text()))


def hospital() -> PartyRef:
    return PartyRef(
        kind=PartyKind.ORGANIZATION,
        identifier=Identifier(system=NPI, value="1234567893"),
        display="Riverside General Hospital",
    )


def review(**changes: Any) -> UtilizationReview:
    """A pended IRF admission review of the stroke case, every optional field set."""
    case = stroke_case()
    fields: dict[str, Any] = {
        "id": "ur1",
        "review_type": ReviewType.ADMISSION,
        "urgency": ReviewUrgency.EXPEDITED,
        "requested": REQUESTED,
        "payer": case.coverage[0].payer,
        "requester": hospital(),
        "encounter": case.encounters[0],
        "admitted": date(2026, 3, 1),
        "requested_level_of_care": LevelOfCare.INPATIENT_REHABILITATION,
        "requested_quantity": 10,
        "clinical_summary": "Left MCA stroke; tolerates 3 h of therapy a day; FIM motor 38.",
        "criteria_set": CriteriaSet.INTERQUAL,
        "criteria_subset": "Rehabilitation, Adult",
    }
    fields.update(changes)
    return UtilizationReview(**fields)
