"""A realistic synthetic ADT feed for the demo: several patients, built in code. Pure: no I/O.

Four invented patients of a fictional hospital go through a day of ADT traffic: admissions
(A01), a transfer between units (A02), pending discharges with an expected date (A16),
discharges with a disposition (A03), one admission cancelled (A11) and one message sent twice
(a retransmission the inbox recognises). Names, record numbers and visit numbers are made up; the
clinical details (age, diagnosis, payer) are chosen so the discharge-planning screening opens
cases for some patients and not for others. Times are relative to ``start`` so due dates are
meaningful whenever the demo runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["PATIENTS", "DemoMessage", "DemoPatient", "demo_feed"]


@dataclass(frozen=True, slots=True)
class DemoPatient:
    """One invented patient and visit."""

    mrn: str
    family: str
    given: str
    birth: str
    sex: str
    visit: str
    unit: str
    diagnosis: tuple[str, str] | None  # ICD-10 code, text
    payer: str | None


@dataclass(frozen=True, slots=True)
class DemoMessage:
    """One message of the feed and what it is meant to show."""

    label: str
    control_id: str
    text: str


PATIENTS = (
    DemoPatient(
        "DM10001",
        "RIVERA",
        "ANA",
        "19470212",
        "F",
        "VD5001",
        "4WEST",
        ("I50.9", "Heart failure"),
        "MEDICARE",
    ),
    DemoPatient(
        "DM10002",
        "OKAFOR",
        "JAMES",
        "19550730",
        "M",
        "VD5002",
        "3EAST",
        ("J44.1", "COPD exacerbation"),
        None,
    ),
    DemoPatient("DM10003", "LINDQVIST", "EMMA", "19900521", "F", "VD5003", "5NORTH", None, None),
    DemoPatient(
        "DM10004",
        "NAKAMURA",
        "KENJI",
        "19410903",
        "M",
        "VD5004",
        "4WEST",
        ("N18.4", "CKD stage 4"),
        "MEDICAID",
    ),
)


def _ts(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y%m%d%H%M%S") + "+0000"


def _message(
    patient: DemoPatient,
    event: str,
    control_id: str,
    at: datetime,
    admitted: datetime,
    *,
    unit: str | None = None,
    prior_unit: str = "",
    disposition: str = "",
    discharged: datetime | None = None,
    expected: datetime | None = None,
) -> str:
    pv1 = [""] * 46
    pv1[1] = "1"
    pv1[2] = "I"
    pv1[3] = f"{unit or patient.unit}^{int(control_id[-3:]) % 20 + 401}^A^DEMOHOSP"
    pv1[6] = f"{prior_unit}^401^A^DEMOHOSP" if prior_unit else ""
    pv1[7] = "D1234^HOUSE^GREGORY^^^DR"
    pv1[10] = "MED"
    pv1[19] = patient.visit
    pv1[36] = disposition
    pv1[44] = _ts(admitted)
    pv1[45] = _ts(discharged) if discharged else ""
    segments = [
        f"MSH|^~\\&|DEMOADT|DEMOHOSP|CMFHIR|CM|{_ts(at)}||ADT^{event}|{control_id}|P|2.5.1",
        f"EVN|{event}|{_ts(at)}||||{_ts(at)}",
        f"PID|1||{patient.mrn}^^^DEMOHOSP^MR||{patient.family}^{patient.given}^^^^^L||"
        f"{patient.birth}|{patient.sex}",
        "PV1|" + "|".join(pv1[1:]),
        f"PV2|||||||||{expected.strftime('%Y%m%d') if expected else ''}",
    ]
    if patient.diagnosis:
        code, text = patient.diagnosis
        segments.append(f"DG1|1|I10|{code}^{text}^I10||{_ts(admitted)}|A")
    if patient.payer:
        segments.append(f"IN1|1|PLAN-{patient.payer}|{patient.payer}|{patient.payer.title()} plan")
    return "\r".join(segments)


def demo_feed(start: datetime | None = None) -> list[DemoMessage]:
    """The feed in sending order; times start two days before ``start`` (default: now)."""
    now = start or datetime.now(UTC)
    day0 = now - timedelta(days=2)
    ana, james, emma, kenji = PATIENTS
    feed: list[DemoMessage] = []

    def add(label: str, patient: DemoPatient, event: str, hours: float, **kw: Any) -> str:
        control_id = f"DEMO{len(feed) + 1:04d}"
        admitted = day0 + timedelta(hours=PATIENTS.index(patient) + 1)
        text = _message(patient, event, control_id, day0 + timedelta(hours=hours), admitted, **kw)
        feed.append(DemoMessage(label, control_id, text))
        return text

    first = add("admit Ana Rivera (78, heart failure, Medicare) to 4WEST", ana, "A01", 1)
    add("admit James Okafor (70, COPD) to 3EAST", james, "A01", 2)
    add("admit Emma Lindqvist (35, no risk factors) to 5NORTH", emma, "A01", 3)
    add("admit Kenji Nakamura (85, CKD 4, Medicaid) to 4WEST", kenji, "A01", 4)
    feed.append(DemoMessage("resend Ana Rivera's admission (duplicate)", "DEMO0001", first))
    add("transfer Ana Rivera 4WEST -> 5NORTH", ana, "A02", 20, unit="5NORTH", prior_unit="4WEST")
    add("cancel Kenji Nakamura's admission (entered in error)", kenji, "A11", 22)
    add(
        "pending discharge for James Okafor, expected tomorrow",
        james,
        "A16",
        30,
        expected=now + timedelta(days=1),
    )
    add(
        "pending discharge for Ana Rivera, expected in two days",
        ana,
        "A16",
        32,
        unit="5NORTH",
        expected=now + timedelta(days=2),
    )
    add(
        "discharge James Okafor to a skilled nursing facility",
        james,
        "A03",
        44,
        disposition="03",
        discharged=day0 + timedelta(hours=44),
    )
    add(
        "discharge Emma Lindqvist home",
        emma,
        "A03",
        45,
        disposition="01",
        discharged=day0 + timedelta(hours=45),
    )
    return feed
