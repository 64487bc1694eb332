"""Synthetic HL7v2 ADT sample messages shared by the hl7v2 tests (no real patient data).

``adt_message(event, version)`` builds a consistent message for any supported event; the values it
writes are the module constants below, so tests can assert on them exactly. Segments are joined
with CR (the standard); tests re-join with LF/CRLF to exercise normalisation.
"""

from __future__ import annotations

SENDING_APP = "ADTSYS"
SENDING_FACILITY = "NORTHSIDE"
CONTROL_ID = "CTRL-0001"
MRN = "MRN0001"
MRN_AUTHORITY = "NSH"
SECOND_ID = "ENT5550"
SECOND_AUTHORITY = "EMPI"
FAMILY = "TESTPATIENT"
GIVEN = "ALPHA"
MIDDLE = "B"
BIRTH_DATE = "19610304"
VISIT_NUMBER = "V100200"
ATTENDING_ID = "D0042"
ADMITTING_ID = "D0077"
PRIOR_MRN = "MRN0999"
PRIOR_VISIT = "V099"

CR = "\r"


def msh(
    event: str, version: str, *, structure: str | None = None, control_id: str = CONTROL_ID
) -> str:
    """An MSH segment; ``structure`` fills MSH-9.3 (omitted when None)."""
    message_type = f"ADT^{event}" + (f"^{structure}" if structure else "")
    return (
        f"MSH|^~\\&|{SENDING_APP}|{SENDING_FACILITY}|CMFHIR|CM|20240305101500+0100||"
        f"{message_type}|{control_id}|P|{version}"
    )


def evn(event: str) -> str:
    """EVN with EVN-2 (recorded, +0100) and EVN-6 (occurred, +0100)."""
    return f"EVN|{event}|20240305101200+0100||||20240305100000+0100"


def pid(mrn: str = MRN) -> str:
    """PID with two PID-3 repetitions, a legal name, birth date and sex."""
    return (
        f"PID|1||{mrn}^^^{MRN_AUTHORITY}^MR~{SECOND_ID}^^^{SECOND_AUTHORITY}^PI||"
        f"{FAMILY}^{GIVEN}^{MIDDLE}^^^^L||{BIRTH_DATE}|F"
    )


def pv1(
    patient_class: str = "I",
    *,
    prior_location: str = "",
    disposition: str = "",
    destination: str = "",
    discharge: str = "",
) -> str:
    """PV1 with class, location, attending, service, admitting, visit number and times."""
    fields = [""] * 46
    fields[1] = "1"
    fields[2] = patient_class
    fields[3] = "4WEST^412^B^NORTHSIDE^^^MAIN^4"
    fields[6] = prior_location
    fields[7] = f"{ATTENDING_ID}^CARDIO^CARLA^M^^DR"
    fields[10] = "MED"
    fields[17] = f"{ADMITTING_ID}^ADMITTER^ALEX"
    fields[19] = VISIT_NUMBER
    fields[36] = disposition
    fields[37] = destination
    fields[44] = "20240305093000+0100"
    fields[45] = discharge
    return "PV1|" + "|".join(fields[1:])


def pv2(expected_discharge: str = "20240309") -> str:
    """PV2 with PV2-9 expected discharge date."""
    return segment("PV2", {9: expected_discharge})


def segment(segment_id: str, values: dict[int, str]) -> str:
    """A segment with SEG-n = ``values[n]`` and every other field up to the last one empty."""
    fields = [""] * (max(values) + 1)
    for position, value in values.items():
        fields[position] = value
    return segment_id + "|" + "|".join(fields[1:])


DG1 = "DG1|1|I10|I50.9^Heart failure, unspecified^I10||20240305|A"
IN1 = segment(
    "IN1",
    {1: "1", 2: "PLAN-GOLD^Gold plan", 3: "PAYER01", 4: "Example Health Plan", 36: "MEM-778"},
)
ZPV = "ZPV|1|site specific|values^we^ignore"
MRG = f"MRG|{PRIOR_MRN}^^^{MRN_AUTHORITY}^MR||||{PRIOR_VISIT}"


def adt_message(
    event: str, version: str = "2.5.1", *, structure: str | None = None, separator: str = CR
) -> str:
    """A synthetic ADT message for ``event``; ``structure`` fills MSH-9.3 (omitted when None)."""
    segments = [msh(event, version, structure=structure), evn(event)]
    if event == "A40":
        segments += [pid(), MRG]
        return separator.join(segments)
    segments.append(pid())
    if event == "A02":
        segments.append(pv1(prior_location="3EAST^301^A^NORTHSIDE"))
    elif event == "A03":
        segments.append(
            pv1(disposition="03", destination="SNF12^Oak Lodge", discharge="20240309141500+0100")
        )
    else:
        segments.append(pv1())
    segments.append(pv2())
    segments += [DG1, IN1, ZPV]
    return separator.join(segments)


ADT_A01_V251 = adt_message("A01", "2.5.1", structure="ADT_A01")
ADT_A01_V23 = adt_message("A01", "2.3")
ADT_A03_V28 = adt_message("A03", "2.8", structure="ADT_A03")
ADT_A40_V251 = adt_message("A40", "2.5.1", structure="ADT_A39")

BATCH = CR.join(
    [
        "FHS|^~\\&|ADTSYS|NORTHSIDE|||20240305110000",
        "BHS|^~\\&|ADTSYS|NORTHSIDE|||20240305110000",
        adt_message("A01", "2.5.1", structure="ADT_A01"),
        adt_message("A08", "2.5.1", structure="ADT_A01").replace(CONTROL_ID, "CTRL-0002"),
        "BTS|2",
        "FTS|1",
    ]
)
"""A file batch holding two messages (control ids CTRL-0001 and CTRL-0002)."""

NOT_HL7 = b'{"resourceType": "Patient", "id": "example"}'
