"""Synthetic ADT messages and a runner for the discharge-planning workflow tests (no real data).

``adt(...)`` builds one message with the fields the workflow reads (``raw(...)``, as ER7 text) and
parses it with the bundled concept maps; ``run`` applies a sequence of events to a patient state,
as the worker would.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from cm_fhir.hl7v2.adt import parse_adt
from cm_fhir.hl7v2.events import AdtEvent
from cm_fhir.mapping.adt_maps import AdtConceptMaps, load_adt_concept_maps
from cm_fhir.mapping.rules import DischargeRules, load_discharge_rules
from cm_fhir.workflow import Outcome, PatientState, apply_event

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
START = datetime(2024, 3, 5, 9, 0, tzinfo=UTC)
AUTHORITY = "NSH"


@cache
def maps() -> AdtConceptMaps:
    return load_adt_concept_maps()


@cache
def rules() -> DischargeRules:
    return load_discharge_rules()


def hl7_time(when: datetime) -> str:
    return when.strftime("%Y%m%d%H%M%S") + "+0000"


@dataclass(frozen=True)
class Visit:
    """One synthetic patient and visit; ``adt`` fills in the rest per event.

    ``facility`` is MSH-4, ``authority`` PV1-19.4 and ``account`` PID-18 (empty: not sent).
    """

    mrn: str = "MRN0001"
    visit: str = "V100200"
    facility: str = "NORTHSIDE"
    authority: str = ""
    account: str = ""
    birth: str = "19480304"  # 75-76 years old in 2024: qualifies by age
    diagnosis: str | None = "I50.9"
    payer: str | None = "PAYER01"

    def adt(self, event: str, control_id: str, at: datetime, **fields: Any) -> AdtEvent:
        parsed = parse_adt(self.raw(event, control_id, at, **fields), maps())
        assert isinstance(parsed, AdtEvent)
        return parsed

    def raw(
        self,
        event: str,
        control_id: str,
        at: datetime,
        *,
        patient_class: str = "I",
        location: str = "4WEST",
        room: str = "401",
        bed: str = "A",
        prior_location: str = "",
        disposition: str = "",
        discharge: datetime | None = None,
        expected: str = "",
        prior_mrn: str | None = None,
        occurred: datetime | None = None,
        alternate: str = "",
        died: datetime | None = None,
        death_indicator: str = "",
    ) -> str:
        """The message as ER7 text (segments joined by carriage returns).

        EVN-2 and MSH-7 are ``at``; EVN-6 is ``occurred`` (default ``at``); ``alternate`` is PV1-50.
        """
        fields = [""] * (51 if alternate else 46)
        fields[1] = "1"
        fields[2] = patient_class
        fields[3] = f"{location}^{room}^{bed}^NORTHSIDE"
        fields[6] = prior_location
        fields[10] = "MED"
        fields[19] = f"{self.visit}^^^{self.authority}" if self.authority else self.visit
        fields[36] = disposition
        fields[44] = hl7_time(START)
        fields[45] = hl7_time(discharge) if discharge else ""
        if alternate:
            fields[50] = alternate
        pid = [""] * 31
        pid[1], pid[3] = "1", f"{self.mrn}^^^{AUTHORITY}^MR"
        pid[5], pid[7], pid[8] = "TESTPATIENT^ALPHA", self.birth, "F"
        pid[18] = self.account
        pid[29], pid[30] = (hl7_time(died) if died else ""), death_indicator
        evn = f"EVN|{event}|{hl7_time(at)}||||{hl7_time(occurred or at)}"
        segments = [
            f"MSH|^~\\&|ADTSYS|{self.facility}|CMFHIR|CM|{hl7_time(at)}||ADT^{event}|{control_id}"
            "|P|2.5.1",
            evn,
            "|".join(["PID", *pid[1:]]).rstrip("|"),
        ]
        if prior_mrn is not None:
            segments.append(f"MRG|{prior_mrn}^^^{AUTHORITY}^MR")
        else:
            segments.append("PV1|" + "|".join(fields[1:]))
            segments.append(f"PV2|||||||||{expected}")
            if self.diagnosis:
                segments.append(f"DG1|1|I10|{self.diagnosis}^Heart failure^I10||20240305|A")
            if self.payer:
                segments.append(
                    f"IN1|1|PLAN-GOLD|{self.payer}|Example Health Plan" + "|" * 32 + "MEM-778"
                )
        return "\r".join(segments)


def hours(n: float) -> datetime:
    """A moment ``n`` hours after the visit starts."""
    return START + timedelta(hours=n)


def run(
    events: Iterable[AdtEvent], state: PatientState | None = None, **kwargs: object
) -> tuple[PatientState, list[Outcome]]:
    """Apply ``events`` in order; the final state and every outcome."""
    current = state or PatientState()
    outcomes: list[Outcome] = []
    for event in events:
        outcome = apply_event(event, current, rules(), now=NOW, **kwargs)  # type: ignore[arg-type]
        outcomes.append(outcome)
        current = outcome.state
    return current, outcomes
