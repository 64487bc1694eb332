"""Hypothesis strategies for whole ADT feeds: several patients, two facilities, late and repeated
messages. Synthetic data only; no I/O.

A :class:`Feed` is a set of patients and the messages that arrive, in arrival order. Patients
belong to one of two facilities (``N`` = NORTHSIDE, authority ``NSH``; ``S`` = SOUTHSIDE, authority
``SSH``). Each facility numbers its visits ``V1``, ``V2``... on its own, so the two facilities
reuse visit numbers for different patients (same PV1-19.1, different PV1-19.4 and MSH-4), and
their MRN values may collide too (same PID-3.1, different PID-3.4). Every message has its own
event time (EVN-6 = EVN-2 = MSH-7, whole hours after ``START``), so the event times order the
feed completely; a message arriving after later events is late, and the same message (same bytes)
may arrive again. An A40 merges a patient into another of the same facility; from the merge on,
the prior patient's visits are sent under the surviving MRN.

Feeds print in a short form that :func:`Feed.parse` reads back, so a shrunk counterexample can be
pasted into ``@example`` (lines may also be separated by ``;``)::

    patients: N:M1/1948/I50.9/PAYER01 S:M1/1999/-/-
    N1 A01 N:M1/V1 @1
    S1 A01 S:M1/V1 @2 class=E loc=ED
    N2 A03 N:M1/V1 @3 disp=03

A patient is ``<facility>:<MRN>/<birth year>/<DG1 code>/<IN1 payer>`` (``-`` for none). One
message per line: control id, event, ``<facility>:<MRN of PID-3>[/<visit>]``, ``@<hour>``
and only the fields that differ from the defaults (``class=I``, ``loc=4WEST``, no disposition,
no expected discharge): ``class=``, ``loc=``, ``disp=``, ``edd`` (PV2-9 two days on), ``dead``
(PID-30 = Y) and, for an A40, ``prior=<facility>:<MRN>``.

``feeds(lifecycle=True)`` draws from the whole lifecycle as well: admits (A04), pre-admission and
its cancels (A05, A14, A27, A38), class ``P``, the expired disposition ``20`` and PID-30 = Y.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from hypothesis import strategies as st

from workflow_messages import START, hl7_time

Draw = st.DrawFn

FACILITIES = {"N": ("NORTHSIDE", "NSH"), "S": ("SOUTHSIDE", "SSH")}
#: The visit events, in the order the shrinker prefers them (earlier is simpler).
VISIT_EVENTS = ("A01", "A03", "A02", "A08", "A16", "A11", "A13", "A12", "A06", "A07", "A25")
CLASSES = ("I", "E", "O")
#: The lifecycle variant's extra events, classes and dispositions.
LIFECYCLE_EVENTS = ("A04", "A05", "A14", "A27", "A38")
LIFECYCLE_CLASSES = ("P",)
LIFECYCLE_DISPOSITIONS = ("20",)
LOCATIONS = ("4WEST", "5NORTH", "ED", "3EAST")
DISPOSITIONS = ("", "01", "03", "06", "50", "62", "ZZ")
#: Admissions, updates and discharges are the bulk of a real feed: drawn twice as often.
_EVENTS = st.sampled_from(("A01", "A03", "A08")) | st.sampled_from(VISIT_EVENTS)
_DEFAULTS = {"class": "I", "loc": "4WEST", "disp": ""}


@dataclass(frozen=True, order=True)
class Patient:
    """One synthetic patient: facility, MRN (PID-3.1) and what screening looks at."""

    facility: str
    mrn: str
    birth: str = "1948"  # a year: 76 in 2024, qualifies by age
    diagnosis: str | None = "I50.9"
    payer: str | None = "PAYER01"

    @property
    def name(self) -> str:
        """``N:M1``: facility and MRN, how the short form names the patient."""
        return f"{self.facility}:{self.mrn}"

    @property
    def authority(self) -> str:
        return FACILITIES[self.facility][1]

    def short(self) -> str:
        return f"{self.name}/{self.birth}/{self.diagnosis or '-'}/{self.payer or '-'}"


@dataclass(frozen=True)
class Msg:
    """One message: who it names in PID-3, which visit, when, and the fields the workflow reads."""

    control_id: str
    event: str
    patient: str  # Patient.name of PID-3
    at: int  # event time, hours after START
    visit: str | None = None  # PV1-19.1; None for an A40
    patient_class: str = "I"
    location: str = "4WEST"
    disposition: str = ""
    expected: bool = False  # PV2-9 two days after the event
    died: bool = False  # PID-30 = Y
    prior: str | None = None  # A40: Patient.name of MRG-1

    @property
    def facility(self) -> str:
        return self.patient.split(":", 1)[0]

    def short(self) -> str:
        who = self.patient + (f"/{self.visit}" if self.visit else "")
        extras = [
            f"{key}={value}"
            for key, value in (
                ("class", self.patient_class),
                ("loc", self.location),
                ("disp", self.disposition),
            )
            if value != _DEFAULTS[key] and self.visit is not None
        ]
        extras += ["edd"] if self.expected else []
        extras += ["dead"] if self.died else []
        extras += [f"prior={self.prior}"] if self.prior else []
        return " ".join([self.control_id, self.event, who, f"@{self.at}", *extras])


@dataclass(frozen=True)
class Feed:
    """Patients and the messages in arrival order (a repeated message appears again)."""

    patients: tuple[Patient, ...]
    arrivals: tuple[Msg, ...]
    _by_name: dict[str, Patient] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {p.name: p for p in self.patients})

    def short(self) -> str:
        """The short form on one line (``;`` between lines)."""
        lines = ["patients: " + " ".join(p.short() for p in self.patients)]
        return "; ".join(lines + [m.short() for m in self.arrivals])

    def __repr__(self) -> str:
        return f"Feed.parse({self.short()!r})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))  # hypothesis prints falsifying examples with this

    @classmethod
    def parse(cls, text: str) -> Feed:
        """Read the short form (see the module docstring)."""
        lines = [line.strip() for line in re.split(r"[;\n]", text) if line.strip()]
        head, *rest = lines
        assert head.startswith("patients:")
        patients = []
        for token in head.removeprefix("patients:").split():
            name, birth, diagnosis, payer = token.split("/")
            facility, mrn = name.split(":")
            patients.append(
                Patient(facility, mrn, birth, None if diagnosis == "-" else diagnosis,
                        None if payer == "-" else payer)
            )  # fmt: skip
        arrivals = []
        for line in rest:
            control_id, event, who, at, *extras = line.split()
            patient, _, visit = who.partition("/")
            fields: dict[str, object] = {}
            for extra in extras:
                key, _, value = extra.partition("=")
                match key:
                    case "class":
                        fields["patient_class"] = value
                    case "loc":
                        fields["location"] = value
                    case "disp":
                        fields["disposition"] = value
                    case "edd":
                        fields["expected"] = True
                    case "dead":
                        fields["died"] = True
                    case "prior":
                        fields["prior"] = value
                    case _:
                        raise ValueError(f"unknown field {key!r} in {line!r}")
            arrivals.append(
                Msg(control_id, event, patient, int(at.removeprefix("@")), visit or None, **fields)  # type: ignore[arg-type]
            )
        return cls(tuple(patients), tuple(arrivals))

    # -- views -------------------------------------------------------------------------------

    def patient(self, name: str) -> Patient:
        return self._by_name[name]

    @property
    def messages(self) -> list[Msg]:
        """Each distinct message once, in event-time order."""
        return sorted(dict.fromkeys(self.arrivals), key=lambda m: m.at)

    def in_order(self) -> Feed:
        """The same messages, each once, arriving in event-time order."""
        return replace(self, arrivals=tuple(self.messages))

    def groups(self) -> dict[str, frozenset[str]]:
        """Each patient's identity group: itself and every patient merged with it by an A40."""
        group = {p.name: frozenset({p.name}) for p in self.patients}
        for m in self.messages:
            if m.prior is not None:
                joined = group[m.patient] | group[m.prior]
                group.update({name: joined for name in joined})
        return group

    def visit_owner(self) -> dict[tuple[str, str], str]:
        """(facility, visit number) -> the patient the visit was generated for (first PID-3)."""
        owners: dict[tuple[str, str], str] = {}
        for m in self.messages:
            if m.visit is not None:
                owners.setdefault((m.facility, m.visit), m.patient)
        return owners

    # -- ER7 ---------------------------------------------------------------------------------

    def raw(self, m: Msg) -> str:
        """The message as ER7 text, segments joined by carriage returns."""
        patient = self.patient(m.patient)
        facility, authority = FACILITIES[patient.facility]
        when = hl7_time(START + timedelta(hours=m.at))
        segments = [
            f"MSH|^~\\&|ADTSYS|{facility}|CMFHIR|CM|{when}||ADT^{m.event}|{m.control_id}|P|2.5.1",
            f"EVN|{m.event}|{when}||||{when}",
            f"PID|1||{patient.mrn}^^^{authority}^MR||TESTPATIENT^{patient.facility}{patient.mrn}"
            f"||{patient.birth}0304|F" + ("|" * 22 + "Y" if m.died else ""),
        ]
        if m.prior is not None:
            segments.append(f"MRG|{self.patient(m.prior).mrn}^^^{authority}^MR")
            return "\r".join(segments)
        assert m.visit is not None
        admitted = min(
            x.at for x in self.messages if x.visit == m.visit and x.facility == m.facility
        )
        pv1 = [""] * 46
        pv1[1] = "1"
        pv1[2] = m.patient_class
        pv1[3] = f"{m.location}^401^A^{facility}"
        pv1[10] = "MED"
        pv1[19] = f"{m.visit}^^^{authority}^VN"
        pv1[36] = m.disposition
        pv1[44] = hl7_time(START + timedelta(hours=admitted))
        pv1[45] = when if m.event == "A03" else ""
        expected = hl7_time(START + timedelta(hours=m.at + 48)) if m.expected else ""
        segments += ["PV1|" + "|".join(pv1[1:]), f"PV2|||||||||{expected}"]
        if patient.diagnosis:
            segments.append(f"DG1|1|I10|{patient.diagnosis}^Diagnosis^I10||20240305|A")
        if patient.payer:
            segments.append(
                f"IN1|1|PLAN-GOLD|{patient.payer}|Example Health Plan" + "|" * 32 + "MEM-778"
            )
        return "\r".join(segments)


# -- strategies -------------------------------------------------------------------------------


@st.composite
def patients(draw: Draw) -> tuple[Patient, ...]:
    """One or two patients at NORTHSIDE, none to two at SOUTHSIDE; MRN values may collide."""
    shared_mrns = draw(st.booleans())  # the same PID-3.1 values at both facilities
    out = []
    for facility, count in (("N", draw(st.integers(1, 2))), ("S", draw(st.integers(0, 2)))):
        for n in range(1, count + 1):
            out.append(
                Patient(
                    facility=facility,
                    mrn=f"M{n}" if shared_mrns else f"{facility}{n}",
                    birth=draw(st.sampled_from(("1948", "1999"))),
                    diagnosis=draw(st.sampled_from(("I50.9", None, "S52.5"))),
                    payer=draw(st.sampled_from(("PAYER01", None, "MEDICARE"))),
                )
            )
    return tuple(out)


@st.composite
def _visit_message(draw: Draw, event: str, lifecycle: bool = False) -> dict[str, object]:
    """The fields of one visit event, by event."""
    fields: dict[str, object] = {"event": event}
    classes = CLASSES + LIFECYCLE_CLASSES if lifecycle else CLASSES
    if event in ("A01", "A04", "A05", "A08", "A14"):
        fields["patient_class"] = draw(st.sampled_from(classes))
    elif event == "A07":
        fields["patient_class"] = "O"
    if event in ("A01", "A02", "A04", "A08", "A12"):
        fields["location"] = draw(st.sampled_from(LOCATIONS))
    if event == "A03":
        dispositions = DISPOSITIONS + LIFECYCLE_DISPOSITIONS if lifecycle else DISPOSITIONS
        fields["disposition"] = draw(st.sampled_from(dispositions))
    if event in ("A01", "A05", "A08", "A16"):
        fields["expected"] = draw(st.booleans()) if event != "A16" else True
    if lifecycle and draw(st.integers(0, 9)) == 0:
        fields["died"] = True
    return fields


@st.composite
def feeds(
    draw: Draw, max_events_per_visit: int = 5, *, lifecycle: bool = False, late: bool = True
) -> Feed:
    """Patients, their visits' events interleaved, maybe a merge, late and repeated arrivals
    (``lifecycle``: pre-admissions, deaths and their cancels too; not ``late``: every message
    once, in event-time order)."""
    events = _EVENTS | st.sampled_from(LIFECYCLE_EVENTS) if lifecycle else _EVENTS
    people = draw(patients())
    # Each facility numbers its own visits, so both facilities have a V1.
    visits: list[tuple[Patient, str]] = []
    counters = {"N": 0, "S": 0}
    for person in people:
        for _ in range(draw(st.integers(1, 2))):
            counters[person.facility] += 1
            visits.append((person, f"V{counters[person.facility]}"))
    scripts = [
        [
            draw(_visit_message(event, lifecycle))
            for event in draw(st.lists(events, min_size=1, max_size=max_events_per_visit))
        ]
        for _ in visits
    ]
    # Interleave the visits' scripts (each keeps its own order), then maybe insert one merge.
    tokens = [i for i, script in enumerate(scripts) for _ in script]
    order: list[int | None] = list(draw(st.permutations(tokens)))
    by_facility = {f: [p for p in people if p.facility == f] for f in FACILITIES}
    mergeable = [f for f, members in by_facility.items() if len(members) == 2]
    merge = draw(st.sampled_from([None, *mergeable]))
    if merge is not None:
        order.insert(draw(st.integers(0, len(order))), None)
    survivor, prior = by_facility[merge] if merge is not None else (None, None)
    counter = {"N": 0, "S": 0}
    messages: list[Msg] = []
    position = [0] * len(scripts)
    merged = False
    for hour, token in enumerate(order, start=1):
        if token is None:
            assert survivor is not None
            assert prior is not None
            counter[survivor.facility] += 1
            cid = f"{survivor.facility}{counter[survivor.facility]}"
            messages.append(Msg(cid, "A40", survivor.name, hour, prior=prior.name))
            merged = True
            continue
        person, visit = visits[token]
        fields = scripts[token][position[token]]
        position[token] += 1
        sender = survivor if merged and person == prior and survivor is not None else person
        counter[person.facility] += 1
        cid = f"{person.facility}{counter[person.facility]}"
        messages.append(Msg(cid, patient=sender.name, at=hour, visit=visit, **fields))  # type: ignore[arg-type]
    return Feed(people, tuple(draw(arrivals(messages)) if late else messages))


@st.composite
def arrivals(draw: Draw, messages: list[Msg]) -> list[Msg]:
    """The messages in some arrival order: in order, a few late, or any order; some repeated."""
    how = draw(st.sampled_from(("in-order", "late", "any")))
    out = list(messages)
    if how == "late":
        for _ in range(draw(st.integers(1, 3))):
            i = draw(st.integers(0, len(out) - 1))
            late = out.pop(i)
            out.insert(draw(st.integers(i, len(out))), late)
    elif how == "any":
        out = list(draw(st.permutations(out)))
    for _ in range(draw(st.integers(0, 3))):
        again = draw(st.sampled_from(out))
        out.insert(draw(st.integers(0, len(out))), again)
    return out
