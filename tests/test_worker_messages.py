"""Real-feed fidelity on SQLite and PostgreSQL: MSH-11 training/debugging messages, message
identity in the trace and Provenance, and the ``needs_attention`` state with its metrics.

Messages go in through the listener's intake (their ACKs are read back), a worker processes them,
and the tests read the committed rows, the HTTP API (``/api/messages``, ``/metrics``, the FHIR
facade's Provenance) and replay through the API.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from cm_fhir.hl7v2.events import AdtEvent
from cm_fhir.mllp_client import read_ack
from cm_fhir.store.queue import message_key
from cm_fhir.workflow import Outcome, PatientState, apply_event
from worker_fixtures import (
    cases,
    inbox_messages,
    ingest,
    patient_states,
    rows,
    settle_worker,
    trace,
)
from workflow_messages import Visit, hours


def processing(raw: str, processing_id: str) -> str:
    """The message with MSH-11 set to ``processing_id``."""
    assert "|P|2.5.1" in raw
    return raw.replace("|P|2.5.1", f"|{processing_id}|2.5.1", 1)


def metric(text: str, name: str, **labels: str) -> float:
    """One sample of the Prometheus text."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.escape(f"{name}{{{wanted}}}" if labels else name) + r" ([0-9.e+]+)"
    found = re.search(pattern, text)
    assert found is not None, f"{name} {labels} not in /metrics"
    return float(found.group(1))


# -- MSH-11 ----------------------------------------------------------------------------------------


async def test_training_and_debugging_messages_are_acknowledged_but_not_applied(
    worker_engine: AsyncEngine,
) -> None:
    train = Visit(mrn="MRN-T1", visit="VT1")
    debug = Visit(mrn="MRN-D1", visit="VD1")
    live = Visit(mrn="MRN-P1", visit="VP1")
    acks = await ingest(
        worker_engine,
        [
            processing(train.raw("A01", "T1", hours(0)), "T"),
            processing(debug.raw("A01", "D1", hours(0)), "D"),
            live.raw("A01", "P1", hours(0)),
        ],
    )
    assert [s.code for a in acks for s in read_ack(a)] == ["AA", "AA", "AA"]
    result = await settle_worker(worker_engine)
    assert (result.processed, result.ignored) == (1, 2)
    inbox = {r.control_id: r for r in await rows(worker_engine, inbox_messages)}
    for control_id, code in (("T1", "T"), ("D1", "D")):
        assert inbox[control_id].state == "ignored"
        assert f"MSH-11 processing id {code}" in inbox[control_id].reason
    assert inbox["P1"].state == "processed"
    assert [r.patient_key.rsplit("|", 1)[1] for r in await rows(worker_engine, cases)] == [live.mrn]
    documents = [r for r in await rows(worker_engine, patient_states) if r.document]
    assert len(documents) == 1  # no state for the training or debugging patient
    traced = {r.inbox_message_id: r for r in await rows(worker_engine, trace)}
    for control_id in ("T1", "D1"):
        row = traced[inbox[control_id].id]
        assert row.rule == "worker.apply_processing_ids"
        assert row.case_id is None


async def test_a_worker_told_to_apply_training_messages_applies_them(
    worker_engine: AsyncEngine,
) -> None:
    train = Visit(mrn="MRN-T2", visit="VT2")
    await ingest(worker_engine, [processing(train.raw("A01", "T2", hours(0)), "T")])
    result = await settle_worker(worker_engine, apply_processing_ids=frozenset({"P", "T"}))
    assert result.processed == 1
    assert len(await rows(worker_engine, cases)) == 1


# -- message identity ------------------------------------------------------------------------------


async def test_trace_and_provenance_tell_apart_messages_that_reuse_a_control_id(
    worker_engine: AsyncEngine, worker_http: httpx.AsyncClient
) -> None:
    visit = Visit(mrn="MRN-R1", visit="VR1")
    await ingest(worker_engine, [visit.raw("A01", "SAME", hours(0))])
    await ingest(worker_engine, [visit.raw("A08", "SAME", hours(1), location="5NORTH")])
    await settle_worker(worker_engine)
    inbox = await rows(worker_engine, inbox_messages)
    assert [r.control_id for r in inbox] == ["SAME", "SAME"]
    keys = {
        r.id: message_key(r.sending_application, r.sending_facility, r.control_id, r.received_at)
        for r in inbox
    }
    assert len(set(keys.values())) == 2
    assert all(k.startswith("ADTSYS|NORTHSIDE|SAME|") for k in keys.values())
    for row in await rows(worker_engine, trace):
        assert row.message_key == keys[row.inbox_message_id]

    bundle = (await worker_http.get("/fhir/Provenance")).json()
    entities = [e for entry in bundle["entry"] for e in entry["resource"].get("entity", [])]
    named = {e["what"]["identifier"]["value"]: e["what"]["display"] for e in entities}
    assert set(named) == set(keys.values())
    for inbox_id, key in keys.items():
        assert named[key].endswith(f"inbox #{inbox_id}")
    systems = {e["what"]["identifier"]["system"] for e in entities}
    assert len(systems) == 1
    assert systems.pop().endswith("/sid/hl7v2-message")


# -- needs attention -------------------------------------------------------------------------------


class FixedVisit:
    """``apply_event`` after a fix: events without PV1-19 get one (as a rules change might)."""

    def __call__(self, event: AdtEvent, state: PatientState, *args: Any, **kw: Any) -> Outcome:
        if event.visit is not None and event.visit.visit_number is None:
            visit = event.visit.model_copy(update={"visit_number": "VFIXED"})
            event = event.model_copy(update={"visit": visit})
        return apply_event(event, state, *args, **kw)


async def test_an_event_without_a_visit_needs_attention_and_replays(
    worker_engine: AsyncEngine, worker_http: httpx.AsyncClient
) -> None:
    nowhere = Visit(mrn="MRN-NA1", visit="")
    await ingest(worker_engine, [nowhere.raw("A01", "NA1", hours(0))])
    result = await settle_worker(worker_engine)
    assert (result.processed, result.needs_attention) == (0, 1)
    (row,) = await rows(worker_engine, inbox_messages)
    assert row.state == "needs_attention"
    assert "no-visit-number (PV1-19)" in row.reason
    assert nowhere.mrn not in row.reason
    assert await rows(worker_engine, cases) == []

    listed = (await worker_http.get("/api/messages", params={"state": "needs_attention"})).json()
    assert [m["id"] for m in listed["items"]] == [row.id]
    metrics = (await worker_http.get("/metrics")).text
    assert metric(metrics, "cm_fhir_inbox_depth", state="needs_attention") == 1.0
    assert metric(metrics, "cm_fhir_workflow_flags_total", flag="no-visit-number") == 1.0

    # replayed unchanged, it needs attention again (not "processed" as a duplicate)
    assert (await worker_http.post(f"/api/messages/{row.id}/replay")).json()["replayed"] == [row.id]
    await settle_worker(worker_engine)
    (row,) = await rows(worker_engine, inbox_messages)
    assert row.state == "needs_attention"
    # replayed after a fix, it is applied
    await worker_http.post(f"/api/messages/{row.id}/replay")
    await settle_worker(worker_engine, apply=FixedVisit())
    (row,) = await rows(worker_engine, inbox_messages)
    assert (row.state, row.reason) == ("processed", None)
    assert len(await rows(worker_engine, cases)) == 1


async def test_unmapped_dispositions_are_counted(
    worker_engine: AsyncEngine, worker_http: httpx.AsyncClient
) -> None:
    first = Visit(mrn="MRN-UD1", visit="VUD1")
    second = Visit(mrn="MRN-UD2", visit="VUD2")
    await ingest(
        worker_engine,
        [
            first.raw("A01", "U1", hours(0)),
            first.raw("A03", "U2", hours(5), disposition="ZZ", discharge=hours(5)),
            second.raw("A01", "U3", hours(0)),
            second.raw("A03", "U4", hours(5), disposition="03", discharge=hours(5)),
        ],
    )
    await settle_worker(worker_engine)
    states = {r.control_id: r.state for r in await rows(worker_engine, inbox_messages)}
    assert set(states.values()) == {"processed"}  # applied: a generic task, flagged
    metrics = (await worker_http.get("/metrics")).text
    assert metric(metrics, "cm_fhir_workflow_flags_total", flag="unmapped-disposition") == 1.0
    assert metric(metrics, "cm_fhir_workflow_flags_total", flag="no-visit-number") == 0.0
