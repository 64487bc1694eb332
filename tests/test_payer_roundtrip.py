"""Hospital and payer as two real ``cm-fhir serve`` processes over HTTP, on SQLite and PostgreSQL.

The hospital runs with ``--payer-url`` pointing at the payer (its token in
``CM_FHIR_PAYER__TOKEN``). An admission (ADT A01 over MLLP to the hospital) is told to the payer,
which opens the member's payer case; the hospital asks for a review, the payer pends it, its
reviewer approves 3 days, and the hospital's review shows the 3 authorized days, the authorization
number and the next review date (read with ``Claim/$inquire``); the discharge (A03) is told too and
the payer case moves to transition.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from cm_fhir.mllp_client import MllpClient, read_ack
from inbox_fixtures import PG_URL, _pg_admin
from live_api import ServeProcess, start_serve
from workflow_messages import Visit, hours

T = TypeVar("T")
Json = dict[str, Any]
PAYER_ID = "PAYER-RT"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def stores(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[list[str], list[str]]]:
    """Where the payer and the hospital keep their data: two SQLite folders or two schemas."""
    if request.param == "sqlite":
        yield ["--data-dir", str(tmp_path / "payer")], ["--data-dir", str(tmp_path / "hospital")]
        return
    schemas = [f"cmfhir_rt_{uuid.uuid4().hex[:10]}" for _ in range(2)]
    try:
        for schema in schemas:
            await _pg_admin(f'CREATE SCHEMA "{schema}"')
    except Exception as exc:
        pytest.skip(f"PostgreSQL at CM_FHIR_TEST_PG_URL unreachable: {type(exc).__name__}")
    url = PG_URL.replace("+asyncpg", "")
    yield tuple(  # type: ignore[misc]
        ["--database-url", url, "--database-schema", s, "--migrate"] for s in schemas
    )
    for schema in schemas:
        await _pg_admin(f'DROP SCHEMA "{schema}" CASCADE')


async def eventually(probe: Callable[[], Awaitable[T | None]], what: str, wait: float = 45) -> T:
    """Ask ``probe`` until it answers (not None), at most ``wait`` seconds."""
    deadline = asyncio.get_running_loop().time() + wait
    while True:
        found = await probe()
        if found is not None:
            return found
        assert asyncio.get_running_loop().time() < deadline, f"never: {what}"
        await asyncio.sleep(0.2)


def api(serve: ServeProcess) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=serve.url, headers={"Authorization": f"Bearer {serve.key}"}, timeout=30
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def send_adt(serve: ServeProcess, message: str) -> None:
    async with await MllpClient.connect("127.0.0.1", serve.mllp_port) as client:
        ack = read_ack(await client.send(message))
    assert ack[0].code == "AA", ack


# Two serve processes start: about 6 s per database on a quiet 2-core machine. It proves the whole
# exchange end to end, so it runs in the default suite.
async def test_admission_review_decision_and_discharge_between_two_processes(
    stores: tuple[list[str], list[str]],
) -> None:
    payer_store, hospital_store = stores
    port, key = free_port(), "payer-api-key-" + uuid.uuid4().hex
    started = await asyncio.gather(  # both at once: start-up is most of the time
        start_serve(None, *payer_store, "--http-port", str(port), env={"CM_FHIR_API_KEYS": key}),
        start_serve(
            None,
            *hospital_store,
            "--payer-url",
            f"http://127.0.0.1:{port}/fhir",
            env={"CM_FHIR_PAYER__TOKEN": key, "CM_FHIR_PAYER__INQUIRE_INTERVAL": "0.3"},
        ),
        return_exceptions=True,
    )
    running = [s for s in started if isinstance(s, ServeProcess)]
    if len(running) < 2:
        for serve in running:
            await serve.stop()
        raise next(e for e in started if isinstance(e, BaseException))
    payer, hospital = running
    payer.key = key
    try:
        assert payer.url == f"http://127.0.0.1:{port}"
        assert hospital.endpoints == "payer"
        visit = Visit(mrn="MRN-RT1", visit="V-RT1", payer=PAYER_ID)
        async with api(payer) as at_payer, api(hospital) as at_hospital:
            # admission -> notification -> payer case opened
            await send_adt(hospital, visit.raw("A01", "RT-A01", hours(0)))

            async def payer_case() -> Json | None:
                page = await at_payer.get("/api/cases", params={"patient": "MRN-RT1"})
                assert page.status_code == 200, page.text
                items = page.json()["items"]
                return items[0] if items else None

            opened = await eventually(payer_case, "the payer case opened")
            assert opened["status"] == "active"
            assert opened["programme"] == "payer-case-management"

            # the hospital asks for a review
            async def hospital_case() -> str | None:
                page = (await at_hospital.get("/api/cases")).json()["items"]
                return str(page[0]["id"]) if page else None

            case_id = await eventually(hospital_case, "the hospital case opened")
            asked = await at_hospital.post(
                f"/api/cases/{case_id}/utilization-reviews",
                json={
                    "review_type": "concurrent",
                    "level_of_care": "inpatient",
                    "requested_days": 5,
                    "clinical_summary": "Heart failure; IV diuretics; not yet at dry weight.",
                },
            )
            assert asked.status_code == 200, asked.text
            review_url = f"/api/cases/{case_id}/utilization-reviews/ur1"

            # pended at the payer, in the reviewer's queue
            async def queued() -> Json | None:
                page = await at_payer.get("/api/utilization-reviews", params={"status": "pended"})
                assert page.status_code == 200, page.text
                items = page.json()["items"]
                return items[0] if items else None

            pending = await eventually(queued, "the review in the payer's queue")

            async def hospital_sees_pended() -> Json | None:
                read = (await at_hospital.get(review_url)).json()
                exchange = read["payer_exchange"]
                return read if exchange and exchange["state"] == "pended" else None

            pended = await eventually(hospital_sees_pended, "the hospital sees the review pended")
            assert pended["decision"] == "pended"
            assert pended["claim_response"]["outcome"] == "queued"

            # the payer's reviewer approves 3 days
            decided = await at_payer.post(
                f"/api/utilization-reviews/{pending['review']['id']}/decision",
                json={
                    "decision": "approved",
                    "authorized_quantity": 3,
                    "authorization_number": "AUTH-RT-0001",
                    "next_review": "2026-03-05",
                },
            )
            assert decided.status_code == 200, decided.text

            async def hospital_sees_decision() -> Json | None:
                read = (await at_hospital.get(review_url)).json()
                return read if read["decision"] != "pended" else None

            review = await eventually(hospital_sees_decision, "the decision at the hospital")
            assert review["decision"] == "approved"
            assert review["authorized_quantity"] == 3
            assert review["authorization_number"] == "AUTH-RT-0001"
            assert review["next_review"] == "2026-03-05"
            assert review["payer_exchange"]["state"] == "decided"
            assert review["claim_response"]["resourceType"] == "ClaimResponse"
            assert review["claim_response"]["preAuthRef"] == "AUTH-RT-0001"

            # discharge -> notification -> payer case in transition
            await send_adt(hospital, visit.raw("A03", "RT-A03", hours(30), discharge=hours(30)))

            async def in_transition() -> Json | None:
                case = await payer_case()
                return case if case is not None and case["status"] == "transition" else None

            await eventually(in_transition, "the payer case in transition")

            # the hospital's payer endpoint, as operators see it
            (endpoint,) = (await at_hospital.get("/api/outbox/endpoints")).json()
            assert (endpoint["name"], endpoint["kind"]) == ("payer", "payer")
            assert endpoint["counts"] == {"sent": 3}  # admit, review request, discharge
            assert endpoint["delivery"]["sent"] == 3
            metrics = (await at_hospital.get("/metrics")).text
            assert 'cm_fhir_sync_requests_total{endpoint="payer"}' in metrics
            assert 'cm_fhir_sync_writes_total{endpoint="payer",result="sent"} 3.0' in metrics
    finally:
        await asyncio.gather(hospital.stop(), payer.stop())
