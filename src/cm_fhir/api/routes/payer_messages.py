"""``POST /fhir/$process-message``: Da Vinci admit/transfer/discharge notifications (payer side).
I/O.

The notification is read and checked in full at the door (:mod:`cm_fhir.fhir.notification`): a
Bundle it cannot use is answered 400 with an OperationOutcome naming the element, and nothing is
stored. A usable one is stored in the inbox (``format`` ``fhir``, see
:mod:`cm_fhir.store.fhir_inbox`) before it is answered, so accepted means durable; the worker then
applies it to the member's payer case like any other event. The answer follows FHIR R4 messaging
(the ``$process-message`` operation): synchronously, 200 with a response message (a ``message``
Bundle whose MessageHeader's ``response`` names the notification's MessageHeader id with code
``ok``: the payer has taken custody; :func:`~cm_fhir.fhir.notification.response_message`); with
``?async=true``, 200 without a body (a notification asks for no later response message). The
same notification sent again by the same client gets the same answer and is not stored again.
Scope: SMART ``system/MessageHeader.c`` (or ``.write``/``.*``). Every exchange is audited, refusals
too.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from cm_fhir.api.auth import AuthError, Principal, grants_fhir
from cm_fhir.api.deps import AuditDep, EngineDep, PrincipalDep, get_payer_exchange
from cm_fhir.api.errors import FHIR_JSON, error_response, json_bundle
from cm_fhir.errors import MappingError, ValidationError
from cm_fhir.fhir.notification import parse_notification, read_header, response_message
from cm_fhir.store.fhir_inbox import fhir_message, store_fhir_message
from cm_fhir.store.tables import InboxState
from cm_fhir.workflow.facts import patient_key

__all__ = ["router"]

router = APIRouter(tags=["payer exchange"])


async def require_message_create(principal: PrincipalDep) -> Principal:
    """403 unless the caller may send messages (``system/MessageHeader.c``, ``.write``, ``.*``)."""
    if not grants_fhir(principal.scopes, "MessageHeader", "c"):
        raise AuthError(
            403, "this needs the 'system/MessageHeader.c' scope", scope="system/MessageHeader.c"
        )
    return principal


@router.post(
    "/fhir/$process-message",
    summary="Receive a Da Vinci admit/transfer/discharge notification (payer side)",
    response_class=Response,
)
async def process_message(
    request: Request,
    engine: EngineDep,
    audit: AuditDep,
    principal: Annotated[Principal, Depends(require_message_create)],
    asynchronous: Annotated[
        bool, Query(alias="async", description="true: answered without a response message")
    ] = False,
) -> Response:
    spec = get_payer_exchange(request)
    got = await json_bundle(request, audit, "process-message", "MessageHeader")
    if isinstance(got, Response):
        return got
    raw, body = got
    try:
        header = read_header(body, spec)
        notice = parse_notification(body, spec)
    except MappingError as exc:
        await audit.record("process-message", "MessageHeader", None, outcome="failure")
        return error_response(request, 400, str(exc), fields=[(exc.path or "Bundle", str(exc))])
    except ValidationError as exc:
        await audit.record("process-message", "MessageHeader", None, outcome="failure")
        return error_response(request, 400, str(exc), outcome=exc.outcome)
    now = datetime.now(UTC)
    endpoint = f"{str(request.base_url).rstrip('/')}/fhir"
    answer = json.dumps(response_message(header, spec, source=endpoint, timestamp=now))
    message = fhir_message(
        raw,
        body,
        message_id=header.message_id,
        source=header.source,
        client=principal.subject,
        message_type="notification",
        event=notice.kind.value,
        state=InboxState.RECEIVED,
        answer=answer.encode(),
        patient_key=patient_key(notice.patient),
        received_at=now,
        peer=request.client.host if request.client else None,
    )
    async with engine.begin() as connection:
        stored = await connection.run_sync(store_fhir_message, message)
        await audit.record(
            "process-message", "MessageHeader", str(stored.id), connection=connection
        )
    if asynchronous:
        return Response(status_code=200)
    return Response(stored.ack_bytes or answer.encode(), 200, media_type=FHIR_JSON)
