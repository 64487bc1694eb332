"""Outcome evaluation computed from the ADT feed: readmissions within 30 days, ED visits after a
discharge, goals met. Pure workflow, then through the listener's intake and the worker on SQLite
and PostgreSQL, served by the cases API and as the outcome extension on the EpisodeOfCare."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta

import httpx
import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from cm_fhir.domain import Case
from cm_fhir.hl7v2.adt import parse_adt
from cm_fhir.workflow import PatientState
from worker_fixtures import fhir_resources, ingest, rows, settle_worker
from workflow_messages import START, Visit, hl7_time, hours, maps, run

INDEX = Visit()  # the discharged visit whose case is evaluated
DISCHARGE = hours(48)
OUTCOME_URL = "http://cm-fhir.org/fhir/StructureDefinition/cm-outcome-evaluation"


def starting(raw: str, start: datetime) -> str:
    """The message with its visit's admit time (PV1-44) at ``start``."""
    return raw.replace(f"|{hl7_time(START)}|", f"|{hl7_time(start)}|")


def visit_at(number: str, start: datetime, patient_class: str, control_id: str) -> str:
    event = "A04" if patient_class == "E" else "A01"
    location = "ED" if patient_class == "E" else "4WEST"
    raw = Visit(visit=number).raw(
        event, control_id, start, patient_class=patient_class, location=location
    )
    return starting(raw, start)


def index_stay() -> list[str]:
    return [
        INDEX.raw("A01", "IX-1", hours(0)),
        INDEX.raw("A03", "IX-2", DISCHARGE, discharge=DISCHARGE),
    ]


def feed() -> list[str]:
    return [
        *index_stay(),
        visit_at("VED1", DISCHARGE + timedelta(days=3), "E", "ED-1"),  # ED visit: counted
        visit_at("VRA1", DISCHARGE + timedelta(days=12), "I", "RA-1"),  # readmission: counted
        visit_at("VRA2", DISCHARGE + timedelta(days=31), "I", "RA-2"),  # too late: not counted
    ]


def index_case(state: PatientState) -> Case:
    visit = next(v for v in state.visits if v.visit_number == INDEX.visit)
    assert visit.case_id is not None
    case = state.case(visit.case_id)
    assert case is not None
    return case


def outcome_of(messages: list[str]) -> tuple[int, int] | None:
    state, _ = run([parse_adt(m, maps()) for m in messages])
    outcome = index_case(state).outcome
    return None if outcome is None else (outcome.readmissions, outcome.ed_visits)


def test_readmissions_and_ed_visits_within_30_days_of_the_discharge() -> None:
    assert outcome_of(index_stay()) is None  # nothing seen after the discharge: no outcome yet
    assert outcome_of(feed()) == (1, 1)


def test_the_outcome_does_not_depend_on_arrival_order() -> None:
    messages = feed()
    expected = outcome_of(messages)
    for order in itertools.islice(itertools.permutations(messages), 0, None, 17):
        assert outcome_of(list(order)) == expected


def test_a_cancelled_discharge_takes_its_outcome_back() -> None:
    cancel = INDEX.raw("A13", "IX-3", DISCHARGE + timedelta(days=20))
    assert outcome_of([*feed(), cancel]) == (0, 0)


def test_visits_before_the_discharge_are_not_outcomes() -> None:
    earlier = visit_at("VED0", hours(-24 * 5), "E", "ED-0")
    assert outcome_of([earlier, *index_stay()]) is None


async def test_the_worker_stores_and_serves_the_outcome(
    worker_engine: AsyncEngine, worker_http: httpx.AsyncClient
) -> None:
    await ingest(worker_engine, feed())
    result = await settle_worker(worker_engine)
    assert result.failed == 0

    state, _ = run([parse_adt(m, maps()) for m in feed()])
    case_id = index_case(state).id
    served = await worker_http.get(f"/api/cases/{case_id}")
    assert served.status_code == 200
    outcome = served.json()["outcome"]
    assert (outcome["readmissions"], outcome["ed_visits"]) == (1, 1)
    assert (outcome["goals_met"], outcome["goals_total"]) == (0, 0)

    episodes = [
        orjson.loads(r.resource)
        for r in await rows(worker_engine, fhir_resources)
        if r.resource_type == "EpisodeOfCare"
    ]
    [episode] = [e for e in episodes if any(i["value"] == case_id for i in e["identifier"])]
    [extension] = [e for e in episode["extension"] if e["url"] == OUTCOME_URL]
    values = {
        part["url"]: next(v for k, v in part.items() if k != "url")
        for part in extension["extension"]
    }
    assert (values["readmissions"], values["edVisits"]) == (1, 1)
