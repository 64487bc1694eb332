"""Version at the door: one function decides which MSH-12 the door accepts and the parser reads.

HL7 v2.2 ADT messages (synthetic, in v2.2's own shape: no EVN-6, PID-3 as a CK, no time zones)
are read by hl7apy's v2.2 library and by :func:`parse_adt`; versions the parser cannot read are
refused at the door with ERR 203 instead of being acknowledged and then ignored by the worker.
"""

from __future__ import annotations

from datetime import datetime

import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message
from sqlalchemy.ext.asyncio import AsyncEngine

from cm_fhir.errors import UnsupportedEventError
from cm_fhir.hl7v2 import ack as acks
from cm_fhir.hl7v2.adt import parse_adt
from cm_fhir.hl7v2.events import AdtEvent
from cm_fhir.hl7v2.header import read_header
from cm_fhir.listener import ListenerConfig, MllpListener
from cm_fhir.mllp_client import MllpClient, read_ack
from cm_fhir.store.writer import InboxWriter
from hl7v2_samples import pv1
from worker_fixtures import inbox_messages, patient_states, rows, settle_worker, worker_engine
from workflow_messages import maps

__all__ = ["worker_engine"]


def v22(event: str, control_id: str, *, version: str = "2.2") -> str:
    """A v2.2 ADT message: MSH up to MSH-12, EVN-1/2 only, PID-3 ``id^check^scheme^facility``."""
    visit = pv1(discharge="20240308143000" if event == "A03" else "").replace("+0100", "")
    return "\r".join(
        [
            f"MSH|^~\\&|ADTSYS|NORTHSIDE|CMFHIR|CM|20240305101500||ADT^{event}|{control_id}|P|"
            f"{version}",
            f"EVN|{event}|20240305101200",
            "PID|1||MRN22^^^NSH||TESTPATIENT^ALPHA^B||19610304|F",
            visit,
        ]
    )


@pytest.mark.parametrize("event", ["A01", "A03"])
def test_hl7apy_reads_our_v22_messages_strictly(event: str) -> None:
    message = parse_message(v22(event, "V-1"), validation_level=VALIDATION_LEVEL.STRICT)
    assert (message.name, message.version) == (f"ADT_{event}", "2.2")
    assert message.validate()


def test_parse_adt_reads_v22_admission_and_discharge() -> None:
    admit = parse_adt(v22("A01", "V-1"), maps())
    discharge = parse_adt(v22("A03", "V-2"), maps())
    assert isinstance(admit, AdtEvent)
    assert isinstance(discharge, AdtEvent)
    assert (admit.event, admit.version, admit.structure) == ("A01", "2.2", "ADT_A01")
    [identifier] = admit.patient.identifiers
    assert (identifier.value, identifier.assigning_authority) == ("MRN22", "NSH")
    assert admit.visit is not None
    assert discharge.visit is not None
    assert admit.visit.admit_time == datetime(2024, 3, 5, 9, 30)
    assert discharge.visit.discharge_time == datetime(2024, 3, 8, 14, 30)
    assert admit.occurred_time is None  # EVN-6 arrived in v2.3


@pytest.mark.parametrize(
    "version", ["2.1", "2.2", "2.3", "2.3.1", "2.4", "2.5.1", "2.8.2", "2.9", "3.0", "2.x"]
)
def test_the_door_and_the_parser_agree_on_every_version(version: str) -> None:
    raw = v22("A01", "V-3", version=version)
    disposition = acks.decide(read_header(raw))
    try:
        parse_adt(raw, maps())
    except UnsupportedEventError:
        parsed = False
    else:
        parsed = True
    refused = disposition.error is not None and disposition.error.code == "203"
    assert refused != parsed
    assert (disposition.ack_code == "AR") == refused


async def test_v22_over_a_socket_is_processed_and_v21_is_refused_with_203(
    worker_engine: AsyncEngine,
) -> None:
    async with InboxWriter(worker_engine) as writer:
        listener = MllpListener(ListenerConfig(port=0), writer)
        await listener.start()
        try:
            async with await MllpClient.connect("127.0.0.1", listener.port) as client:
                [admitted] = read_ack(await client.send(v22("A01", "V-10"), timeout=10))
                [refused] = read_ack(await client.send(v22("A01", "V-11", version="2.1")))
        finally:
            await listener.stop()
    await settle_worker(worker_engine)
    assert (admitted.code, admitted.error_code) == ("AA", None)
    assert (refused.code, refused.error_code) == ("AR", "203")
    stored = {r.control_id: r.state for r in await rows(worker_engine, inbox_messages)}
    assert stored == {"V-10": "processed", "V-11": "refused"}
    [state] = await rows(worker_engine, patient_states)
    assert state.patient_key.endswith("|MRN22")
