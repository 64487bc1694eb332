"""Messages to one payer and its answers: notifications, PAS requests, inquiries. I/O.

:meth:`PayerDelivery.run_once` leases the payer's pending outbox rows (per patient, in order, as
for an EHR endpoint: :func:`~cm_fhir.store.outbox.claim_patients`) and posts each row's Bundle to
its operation: ``$process-message`` (a Da Vinci Alerts notification) or ``Claim/$submit`` (a PAS
request). Each write settles in its own transaction: ``sent``; ``failed`` with the payer's
OperationOutcome when refused for good; or retried later (transport, 5xx, 429, 401/403), the
patient's later messages waiting behind it so they arrive in order.

The answer to ``Claim/$submit`` (a Bundle with the ClaimResponse first) is kept as received
(``payer_reviews``) in the transaction that settles the row and, when it decides, stored in the
inbox as a ClaimResponse message (format ``fhir``, deduplicated by its identifier and creation
time): the worker applies it to the review as a ``ReviewDecided`` domain event through the one
write path, as it applies ADT events. A pended answer is asked about again:
:meth:`PayerDelivery.inquire_due` posts a PAS inquiry to ``Claim/$inquire`` for each pended
review whose time has come (every ``inquire_interval`` seconds, never later than the review's
deadline) and takes the answer the same way. Where the payer notifies (an R4 Subscription
notification, R5 Backport, received at ``/fhir/subscription-notification/{endpoint}``),
:meth:`PayerDelivery.notify` takes each ClaimResponse the notification carries the same way, and
makes the endpoint's pended reviews due for an inquiry at once when it carries only references
or when its ``eventsSinceSubscriptionStart`` shows events that never arrived.
An answer that contradicts an earlier decision changes nothing and is flagged by the worker;
errors name types and statuses, never content.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from cm_fhir.domain.codes import ReviewDecision
from cm_fhir.domain.review import UtilizationReview
from cm_fhir.errors import MappingError
from cm_fhir.fhir.notification import response_code
from cm_fhir.fhir.pas_request import pas_inquiry_bundle, pas_request_bundle
from cm_fhir.fhir.pas_response import claim_response_of, parse_claim_response, review_decided
from cm_fhir.fhir_client import FhirClient
from cm_fhir.mapping.payer_exchange import PayerExchange
from cm_fhir.mapping.registry import MappingRegistry
from cm_fhir.store.case_repo import file_in_state, read_case
from cm_fhir.store.case_writes import OutboxRoute
from cm_fhir.store.ehr_status import lock_cursor, save_cursor
from cm_fhir.store.fhir_inbox import CLAIM_RESPONSE, fhir_message, store_fhir_message
from cm_fhir.store.outbox import CaseWrite, settle_failed, settle_sent
from cm_fhir.store.payer_reviews import (
    PayerReview,
    due_inquiries,
    find_by_request,
    inquire_now,
    read_payer_review,
    record_answer,
    record_refusal,
    record_submitted,
)
from cm_fhir.store.tables import InboxState
from cm_fhir.sync.config import EhrSettings, PayerEndpointSettings
from cm_fhir.sync.deliver import (
    DeliveryStats,
    claim_work,
    error_text,
    is_retryable,
    outcome_bytes,
    postpone,
)
from cm_fhir.sync.notifications import Notification
from cm_fhir.sync.status_parts import PassResult, events_seen
from cm_fhir.workflow.facts import patient_key

__all__ = ["INQUIRE", "SUBMIT", "PayerDelivery"]

log = logging.getLogger(__name__)
Json = dict[str, Any]
SUBMIT = "Claim/$submit"
_TRANSIENT = "transient-error"
_NOT_TAKEN = (_TRANSIENT, "fatal-error")  # response codes of a notification not taken
INQUIRE = "Claim/$inquire"


class PayerDelivery:
    """Delivers one payer's outbox messages and asks it about pended reviews."""

    def __init__(
        self,
        engine: AsyncEngine,
        endpoint: PayerEndpointSettings,
        client: FhirClient,
        config: EhrSettings,
        worker_id: str,
        *,
        registry: MappingRegistry,
        spec: PayerExchange,
        routes: Sequence[OutboxRoute],
    ) -> None:
        self.engine = engine
        self.endpoint = endpoint
        self.client = client
        self.config = config
        self.worker_id = worker_id
        self.registry = registry
        self.spec = spec
        self.routes = tuple(routes)
        self.stats = DeliveryStats()
        self.inquiries = 0

    # -- the outbox -------------------------------------------------------------------------

    async def run_once(self) -> int:
        """Claim and post one batch of messages; the number of rows settled."""
        now = datetime.now(UTC)
        work = await claim_work(self.engine, self.endpoint.name, self.worker_id, self.config, now)
        settled = 0
        for patient in work:
            writes = list(patient.writes)
            while writes:
                write = writes.pop(0)
                if not await self._deliver(write, writes):
                    writes = []  # the rest wait behind it (settled with it)
                settled += 1
        return settled

    async def _deliver(self, write: CaseWrite, later: list[CaseWrite]) -> bool:
        """Post one message and settle it; False when it (and ``later``) must wait."""
        operation = write.operation or SUBMIT
        try:
            response = await self.client.request("POST", operation, body=orjson.loads(write.bundle))
        except Exception as exc:
            if is_retryable(exc):
                self.stats.retried += await postpone(self.engine, self.config, [write, *later], exc)
                return False
            now = datetime.now(UTC)
            async with self.engine.begin() as connection:
                await connection.run_sync(
                    settle_failed, write, error_text(exc), outcome_bytes(exc), now
                )
                if operation == SUBMIT:
                    review = await connection.run_sync(self._review_of, write)
                    if review is not None:
                        await connection.run_sync(
                            record_refusal, review.case_id, review.review_id, error_text(exc), now
                        )
            self.stats.failed += 1
            log.warning(
                "payer %s refused outbox row %d (%s)", self.endpoint.name, write.id, error_text(exc)
            )
            return True
        try:  # taken: what comes back is read (a $submit answer), never a reason to resend
            answer = orjson.loads(response.content) if response.content else None
        except orjson.JSONDecodeError:
            answer = None
        now = datetime.now(UTC)
        replied = response_code(answer) if operation != SUBMIT else None
        if replied in _NOT_TAKEN:  # the payer's response message says it did not take it
            return await self._not_taken(write, later, replied, response.content, now)
        async with self.engine.begin() as connection:
            await connection.run_sync(settle_sent, [write], now)
            if operation == SUBMIT:
                review = await connection.run_sync(self._review_of, write)
                if review is not None:
                    await connection.run_sync(
                        record_submitted, review.case_id, review.review_id, now
                    )
                    await connection.run_sync(self._apply_answer, review, answer, now)
        self.stats.sent += 1
        return True

    async def _not_taken(
        self, write: CaseWrite, later: list[CaseWrite], code: str, body: bytes, now: datetime
    ) -> bool:
        """A notification answered ``transient-error`` is sent again later (its patient's
        later messages wait); ``fatal-error`` ends it ``failed``, kept with the reply."""
        error = f"the payer answered the notification with {code}"
        log.warning("payer %s did not take outbox row %d (%s)", self.endpoint.name, write.id, code)
        if code == _TRANSIENT:
            writes = [write, *later]
            self.stats.retried += await postpone(
                self.engine, self.config, writes, Exception(error), error=error, outcome=body
            )
            return False
        async with self.engine.begin() as connection:
            await connection.run_sync(settle_failed, write, error, body, now)
        self.stats.failed += 1
        return True

    def _review_of(self, connection: Connection, write: CaseWrite) -> PayerReview | None:
        review_id = write.identifiers[0].rsplit("|", 1)[1] if write.identifiers else ""
        return read_payer_review(connection, write.case_id, review_id)

    # -- answers ----------------------------------------------------------------------------

    def _next_inquiry(self, review: UtilizationReview, now: datetime) -> datetime | None:
        interval = self.endpoint.inquire_interval
        if interval <= 0:
            return None
        at = now + timedelta(seconds=interval)
        return min(at, review.deadline) if review.deadline > now else at

    def _apply_answer(
        self, connection: Connection, sent: PayerReview, answer: Any, now: datetime
    ) -> None:
        """Keep the payer's answer as received and, when it decides, store it in the inbox as a
        ClaimResponse message: the worker applies it to the review as a ``ReviewDecided``
        event (the one write path; a contradiction is flagged there)."""
        stored = read_case(connection, sent.case_id)
        found = (
            [r for r in stored.case.utilization_reviews if r.id == sent.review_id] if stored else []
        )
        if not found:  # the case or review is gone (retention): nothing to apply it to
            return
        review = found[0]
        try:
            response = claim_response_of(answer)
            outcome = parse_claim_response(response, self.spec)
            event = review_decided(response, self.spec, now)
        except MappingError as exc:
            record_refusal(
                connection,
                sent.case_id,
                sent.review_id,
                f"the answer is not usable: {exc}",
                now,
                next_inquiry=self._next_inquiry(review, now) or now + timedelta(hours=1),
            )
            return
        raw = orjson.dumps(response)
        decided = outcome.decision != ReviewDecision.PENDED
        if decided:  # a pended answer changes nothing on the review
            message = fhir_message(
                raw,
                response,
                message_id=event.message_id,
                source=self.endpoint.base_url[:255],
                client=f"payer:{self.endpoint.name}",
                message_type=CLAIM_RESPONSE,
                event=outcome.decision.value,
                state=InboxState.RECEIVED,
                answer=None,
                patient_key=patient_key(stored.case.patient) if stored else None,
                received_at=now,
            )
            store_fhir_message(connection, message)
            file_in_state(connection, sent.case_id, now)  # a case made through the API too
        record_answer(
            connection,
            sent.case_id,
            sent.review_id,
            raw,
            decided=decided,
            now=now,
            next_inquiry=None if decided else self._next_inquiry(review, now),
        )

    # -- inquiries --------------------------------------------------------------------------

    async def inquire_due(self, limit: int = 20) -> int:
        """Ask the payer about each pended review whose inquiry is due; the number asked."""
        now = datetime.now(UTC)
        async with self.engine.connect() as connection:
            due = await connection.run_sync(due_inquiries, self.endpoint.name, now, limit)
        for sent in due:
            await self._inquire(sent)
        return len(due)

    async def _inquire(self, sent: PayerReview) -> None:
        async with self.engine.connect() as connection:
            stored = await connection.run_sync(read_case, sent.case_id)
        found = (
            [r for r in stored.case.utilization_reviews if r.id == sent.review_id] if stored else []
        )
        if stored is None or not found:  # gone (retention): no more inquiries
            async with self.engine.begin() as connection:
                await connection.run_sync(
                    record_refusal,
                    sent.case_id,
                    sent.review_id,
                    "the review is gone",
                    datetime.now(UTC),
                )
            return
        case, review = stored.case, found[0]
        base = self.registry.canonical_base
        bundle = pas_inquiry_bundle(pas_request_bundle(case, review, self.spec, base), self.spec)
        self.inquiries += 1
        try:
            response = await self.client.request("POST", INQUIRE, body=bundle)
            answer = response.json()
        except Exception as exc:  # asked again later, backing off while it keeps failing
            now = datetime.now(UTC)
            step = max(self.endpoint.inquire_interval, self.config.retry_base)
            wait = min(step * 2 ** min(sent.inquiries, 16), max(self.config.retry_max, step))
            later = now + timedelta(seconds=wait)
            async with self.engine.begin() as connection:
                await connection.run_sync(
                    record_refusal,
                    sent.case_id,
                    sent.review_id,
                    f"inquiry: {error_text(exc)}",
                    now,
                    next_inquiry=later,
                )
            return
        now = datetime.now(UTC)
        async with self.engine.begin() as connection:
            await connection.run_sync(self._apply_answer, sent, answer, now)

    # -- subscription notifications -------------------------------------------------------

    async def notify(self, notification: Notification) -> PassResult:
        """Apply the ClaimResponses a notification carries; ask at once about the rest."""
        result = PassResult()
        now = datetime.now(UTC)
        async with self.engine.begin() as connection:
            cursor = await connection.run_sync(lock_cursor, self.endpoint.name, now)
            ask, cursor = events_seen(cursor, notification)  # missed events: ask about all
            await connection.run_sync(save_cursor, cursor, now)
            result.gap = ask
            for event in notification.events if notification.carries_events else ():
                resource = event.resource
                if (
                    not isinstance(resource, dict)
                    or resource.get("resourceType") != "ClaimResponse"
                ):
                    ask = True  # id-only, or not the answer itself: read it with $inquire
                    continue
                request = (resource.get("request") or {}).get("identifier") or {}
                key = f"{request.get('system', '')}|{request.get('value', '')}"
                sent = await connection.run_sync(find_by_request, self.endpoint.name, key)
                if sent is None:
                    result.counts["unknown"] = result.counts.get("unknown", 0) + 1
                    continue
                await connection.run_sync(self._apply_answer, sent, resource, now)
                result.counts["received"] = result.counts.get("received", 0) + 1
                result.cases.add(sent.case_id)
            if ask:
                asked = await connection.run_sync(inquire_now, self.endpoint.name, now)
                result.counts["inquire"] = asked
        return result
