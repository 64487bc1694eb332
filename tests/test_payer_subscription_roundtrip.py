"""Hospital and payer as two real ``cm-fhir serve`` processes: the decision on a pended review
reaches the hospital by subscription notification, on SQLite and PostgreSQL.

The hospital runs with ``payer.public_url`` (its own API's address) and an inquiry interval of an
hour, so ``Claim/$inquire`` polling cannot be what brings the decision: it subscribes at the payer
(whose CapabilityStatement lists Subscription), asks for a review, the payer pends it, its reviewer
approves 3 days, and the payer's notification (``id-only``) makes the hospital read the decision
at once.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from live_api import ServeProcess, start_serve
from test_payer_roundtrip import api, eventually, free_port, send_adt, stores
from workflow_messages import Visit, hours

__all__ = ["stores"]

Json = dict[str, Any]


async def test_the_decision_arrives_by_notification_before_any_inquiry_is_due(
    stores: tuple[list[str], list[str]],
) -> None:
    payer_store, hospital_store = stores
    port, hospital_port = free_port(), free_port()
    key = "payer-api-key-" + uuid.uuid4().hex
    started = await asyncio.gather(
        start_serve(None, *payer_store, "--http-port", str(port), env={"CM_FHIR_API_KEYS": key}),
        start_serve(
            None,
            *hospital_store,
            "--http-port",
            str(hospital_port),
            "--payer-url",
            f"http://127.0.0.1:{port}/fhir",
            env={
                "CM_FHIR_PAYER__TOKEN": key,
                "CM_FHIR_PAYER__INQUIRE_INTERVAL": "3600",
                "CM_FHIR_PAYER__PUBLIC_URL": f"http://127.0.0.1:{hospital_port}",
            },
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
        async with api(payer) as at_payer, api(hospital) as at_hospital:

            async def subscribed() -> str | None:
                (endpoint,) = (await at_hospital.get("/api/outbox/endpoints")).json()
                return endpoint["subscription"]  # type: ignore[no-any-return]

            subscription = await eventually(subscribed, "the hospital subscribed at the payer")
            held = await at_payer.get(f"/fhir/{subscription}")
            assert held.status_code == 200, held.text
            assert held.json()["channel"]["endpoint"] == (
                f"http://127.0.0.1:{hospital_port}/fhir/subscription-notification/payer"
            )

            visit = Visit(mrn="MRN-SUB1", visit="V-SUB1", payer="PAYER-SUB")
            await send_adt(hospital, visit.raw("A01", "SUB-A01", hours(0)))

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
                },
            )
            assert asked.status_code == 200, asked.text
            review_url = f"/api/cases/{case_id}/utilization-reviews/ur1"

            async def queued() -> Json | None:
                page = await at_payer.get("/api/utilization-reviews", params={"status": "pended"})
                items = page.json()["items"]
                return items[0] if items else None

            pending = await eventually(queued, "the review in the payer's queue")

            async def hospital_sees_pended() -> Json | None:
                read = (await at_hospital.get(review_url)).json()
                exchange = read["payer_exchange"]
                return read if exchange and exchange["state"] == "pended" else None

            pended = await eventually(hospital_sees_pended, "the hospital sees the review pended")
            next_inquiry = datetime.fromisoformat(pended["payer_exchange"]["next_inquiry"])
            assert next_inquiry > datetime.now(UTC) + timedelta(minutes=50)  # no poll is due

            decided = await at_payer.post(
                f"/api/utilization-reviews/{pending['review']['id']}/decision",
                json={"decision": "approved", "authorized_quantity": 3},
            )
            assert decided.status_code == 200, decided.text

            async def hospital_sees_decision() -> Json | None:
                read = (await at_hospital.get(review_url)).json()
                return read if read["decision"] != "pended" else None

            review = await eventually(hospital_sees_decision, "the decision at the hospital", 30)
            assert review["decision"] == "approved"
            assert review["authorized_quantity"] == 3
            assert review["payer_exchange"]["state"] == "decided"
            assert datetime.now(UTC) < next_inquiry  # the poll it would have waited for

            status = (await at_payer.get(f"/fhir/{subscription}/$status")).json()
            parameters = {
                p["name"]: p.get("valueString") for p in status["entry"][0]["resource"]["parameter"]
            }
            assert parameters["events-since-subscription-start"] == "1"
    finally:
        await asyncio.gather(hospital.stop(), payer.stop())
