"""Task status back from an EHR: apply the EHR's Tasks to our cases, by poll or notification. I/O.

:class:`StatusBack` serves one FHIR endpoint. :meth:`~StatusBack.apply` takes Tasks the EHR
returned and, for each one of ours (:func:`~cm_fhir.sync.task_states.read_remote_task`), in one
transaction: skips it when it is our own write echoed back (its ``meta.versionId`` is the version
the sync worker recorded for it in ``sync_state``, or one applied before), applies it to the case
through the case write path (:func:`~cm_fhir.store.case_repo.change_case`) following the Task
state machine, writes the
audit row (subject ``ehr:<endpoint>``), records the applied version in ``sync_state`` (so the sync
worker's next write of the Task is made ``If-Match`` it) and counts the outcome
(:mod:`cm_fhir.store.ehr_status`).
The trace row names the Task version at the endpoint, so the Provenance of the change names the
EHR endpoint as its author and source. A move the state machine forbids is logged (ids and
statuses, never patient data) and ignored. A case whose follow-up work is now done is checked
by the closing scheduler at once (the change makes its patient state due).

:meth:`~StatusBack.poll` asks for our Tasks changed since the watermark, case and assessment
Tasks (``Task?identifier=<task system>|,<assessment system>|&_lastUpdated=gt<watermark>``), page
by page (the watermark less an overlap, since servers stamp ``lastUpdated`` when a write begins,
not when it commits; re-reading a Task changes nothing) and moves the endpoint's
watermark forward once the pass is through. :meth:`~StatusBack.notify` handles an R4 Subscription
notification (Backport IG) of a Subscription the endpoint accepts
(:meth:`~cm_fhir.sync.status_parts.StatusBackEndpoint.accepts`): each event's Task is read from
the endpoint before it is applied, ``full-resource`` payloads included (``reread``, on by
default: a payload is not trusted; off, they are applied as sent); a focus that is not a Task
of this endpoint is skipped; more than :data:`MAX_READS` reads make one poll instead. Handshakes
and heartbeats only record the subscription, and a gap in ``eventsSinceSubscriptionStart``
(events the endpoint counted but never delivered) makes it poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from cm_fhir.domain.case import Case
from cm_fhir.errors import MappingError, RecordNotFound, RemoteNotFound
from cm_fhir.facade.provenance import fhir_source_key
from cm_fhir.fhir_client import FhirClient
from cm_fhir.fhir_client.responses import version_of_etag
from cm_fhir.mapping.registry import MappingRegistry
from cm_fhir.store.audit import AuditRecord, record_audit
from cm_fhir.store.case_repo import StoredCase, TraceSource, change_case, read_case
from cm_fhir.store.ehr_status import add_counts, lock_cursor, save_cursor
from cm_fhir.store.sync_state import SyncKey, SyncRecord, read_sync
from cm_fhir.sync.notifications import Notification, NotificationEvent, type_and_id
from cm_fhir.sync.status_parts import FHIR_ID, PassResult, StatusBackEndpoint, events_seen
from cm_fhir.sync.task_states import (
    Applied,
    Outcome,
    RemoteTask,
    apply_remote_task,
    read_remote_task,
)

__all__ = [
    "PassResult",
    "StatusBack",
    "StatusBackEndpoint",
    "our_own_write",
    "poll_until_stopped",
]

log = logging.getLogger(__name__)
Json = dict[str, Any]
RULE = "ehr.status_back"
#: id-only events read one by one per notification; more make one poll instead.
MAX_READS = 50


def our_own_write(connection: Connection, endpoint: str, remote: RemoteTask) -> bool:
    """True when the sync state holds ``remote``'s version: the one the sync worker's write
    made, or one status back has applied already."""
    key = SyncKey(endpoint, "Task", remote.identifier)
    record = read_sync(connection, [key]).get(key)
    return (
        record is not None
        and record.version_id is not None
        and remote.version_id is not None
        and version_of_etag(record.version_id) == version_of_etag(remote.version_id)
    )


class StatusBack:
    """Status back from one EHR endpoint; see the module docstring."""

    def __init__(
        self,
        engine: AsyncEngine,
        registry: MappingRegistry,
        endpoint: StatusBackEndpoint,
        client: FhirClient,
    ) -> None:
        self.engine = engine
        self.registry = registry
        self.endpoint = endpoint
        self.client = client
        self.task_system = registry.system("task")
        self.assessment_system = registry.system("assessment")

    # -- applying Tasks ---------------------------------------------------------------------------

    async def apply(self, resources: Sequence[Json], route: str = "status-back") -> PassResult:
        """Apply each Task of ours in ``resources`` (others are skipped)."""
        result = PassResult()
        async with self.engine.begin() as connection:
            await connection.run_sync(lock_cursor, self.endpoint.name, datetime.now(UTC))
        for resource in resources:
            try:
                remote = read_remote_task(
                    resource, self.task_system, self.endpoint.base_url, self.assessment_system
                )
            except MappingError as exc:
                log.warning(
                    "endpoint %s: unreadable Task %s (%s)",
                    self.endpoint.name,
                    _safe_id(resource),
                    exc.path or "?",
                )
                result.count("unreadable")
                await self._count({"unreadable": 1})
                continue
            if remote is not None:
                await self._apply_one(remote, route, result)
        return result

    async def _count(self, counts: Mapping[str, int]) -> None:
        async with self.engine.begin() as connection:
            await connection.run_sync(add_counts, self.endpoint.name, counts)

    async def _apply_one(self, remote: RemoteTask, route: str, result: PassResult) -> None:
        name = self.endpoint.name
        async with self.engine.begin() as connection:
            if await connection.run_sync(our_own_write, name, remote):
                done: Applied | None = None
                outcome = "echo"
            else:
                done = await connection.run_sync(self._commit, remote)
                outcome = done.outcome.value if done is not None else Outcome.UNKNOWN.value
            if done is not None and done.outcome is Outcome.APPLIED:
                audit = AuditRecord(
                    subject=f"ehr:{name}",
                    auth_method="ehr",
                    action="update",
                    entity_type="case",
                    entity_id=remote.case_id,
                    route=route,
                )
                await record_audit(connection, [audit])
                result.cases.add(remote.case_id)
            await connection.run_sync(add_counts, name, {outcome: 1})
        result.count(outcome)
        if done is not None and done.outcome is Outcome.ILLEGAL and done.moved is not None:
            before, after = done.moved
            log.warning(
                "endpoint %s: Task %s of case %s: %s -> %s is not a Task transition; ignored",
                name,
                remote.server_id,
                remote.case_id,
                before.value,
                after.value,
            )

    def _held(self, remote: RemoteTask) -> SyncRecord:
        """What the endpoint now holds of the Task: the version just applied, so the sync
        worker's next write of it is made ``If-Match`` that version (not refused with 412)."""
        key = SyncKey(self.endpoint.name, "Task", remote.identifier)
        return SyncRecord(key, remote.server_id, remote.version_id)

    def _commit(self, connection: Connection, remote: RemoteTask) -> Applied | None:
        """Apply ``remote`` to its case through the case write path (None: no such case).

        The trace row names what changed, so the move is judged once before the write path
        locks the case, and again on the locked case (which is what is stored and returned).
        """
        head: StoredCase | None = read_case(connection, remote.case_id)
        if head is None:
            return None
        first = apply_remote_task(head.case, remote)
        if first.outcome is not Outcome.APPLIED:
            return first
        applied: list[Applied] = []

        def change(case: Case) -> Case:
            applied.append(apply_remote_task(case, remote))
            return applied[-1].case

        url = f"{self.endpoint.base_url.rstrip('/')}/{remote.reference}"
        try:
            change_case(
                connection,
                remote.case_id,
                change,
                self.registry,
                expected_version=None,
                now=datetime.now(UTC),
                action=";".join(first.actions)[:64],
                target=remote.local_id,
                source=TraceSource(RULE, "Task", fhir_source_key(self.endpoint.name, url)),
                sync=[self._held(remote)],
            )
        except RecordNotFound:
            return None
        return applied[-1] if applied else first

    # -- polling ----------------------------------------------------------------------------------

    async def poll(self) -> PassResult:
        """Read the Tasks of ours changed since the watermark, apply them, move the watermark."""
        async with self.engine.begin() as connection:
            cursor = await connection.run_sync(lock_cursor, self.endpoint.name, datetime.now(UTC))
        ours = f"{self.task_system}|,{self.assessment_system}|"  # case and assessment Tasks
        params = {"identifier": ours, "_count": str(self.endpoint.page_size)}
        params["_sort"] = "_lastUpdated"
        if cursor.watermark is not None:
            since = cursor.watermark - timedelta(seconds=self.endpoint.overlap)
            params["_lastUpdated"] = "gt" + since.isoformat(timespec="milliseconds")
        result = PassResult(polled=True)
        newest = cursor.watermark
        batch: list[Json] = []
        async for resource in self.client.search("Task", params):
            batch.append(resource)
            stamp = _last_updated(resource)
            if stamp is not None and (newest is None or stamp > newest):
                newest = stamp
            if len(batch) >= self.endpoint.page_size:
                result.merge(await self.apply(batch, "status-back:poll"))
                batch = []
        if batch:
            result.merge(await self.apply(batch, "status-back:poll"))
        await self._advance(newest)
        return result

    async def _advance(self, newest: datetime | None) -> None:
        now = datetime.now(UTC)
        async with self.engine.begin() as connection:
            current = await connection.run_sync(lock_cursor, self.endpoint.name, now)
            keep = current.watermark
            mark = newest if keep is None or (newest is not None and newest > keep) else keep
            updated = replace(current, watermark=mark, polled_at=now)
            await connection.run_sync(save_cursor, updated, now)

    # -- notifications ----------------------------------------------------------------------------

    async def notify(self, notification: Notification) -> PassResult:
        """Handle one notification; poll when events were missed (see the module docstring)."""
        gap = await self._record_events(notification)
        result = PassResult(gap=gap)
        reads = sum(e.resource is None or self.endpoint.reread for e in notification.events)
        if reads > MAX_READS:  # cheaper and bounded: one poll instead of many reads
            gap = result.gap = True
        elif notification.carries_events:
            for event in notification.events:
                resource = await self._event_task(event)
                if resource is not None:
                    result.merge(await self.apply([resource], "status-back:notification"))
        if gap:
            result.merge(await self.poll())
        return result

    async def _event_task(self, event: NotificationEvent) -> Json | None:
        """The Task an event is about: read from the endpoint (id-only events, and every event
        when ``reread`` is on), or the payload as sent when ``reread`` is off. None: not a Task
        of this endpoint, or gone."""
        payload = event.resource
        if payload is not None and not self.endpoint.reread:
            return payload if payload.get("resourceType") == "Task" else None
        focus = event.focus
        if focus is None and payload is not None and isinstance(payload.get("id"), str):
            focus = f"{payload.get('resourceType')}/{payload['id']}"
        if focus is None or not self.endpoint.owns(focus):
            return None
        kind, _, rid = type_and_id(focus).partition("/")
        if kind != "Task" or not FHIR_ID.fullmatch(rid):
            return None
        try:
            found = (await self.client.read("Task", rid)).resource
        except RemoteNotFound:
            return None  # gone since (deleted): nothing to apply
        return found if isinstance(found, dict) and found.get("resourceType") == "Task" else None

    async def _record_events(self, notification: Notification) -> bool:
        """Store the subscription's event count; True when events were missed."""
        now = datetime.now(UTC)
        async with self.engine.begin() as connection:
            cursor = await connection.run_sync(lock_cursor, self.endpoint.name, now)
            gap, updated = events_seen(cursor, notification)
            await connection.run_sync(save_cursor, updated, now)
        if gap:
            log.warning(
                "endpoint %s: subscription notifications were missed; polling", self.endpoint.name
            )
        return gap


async def poll_until_stopped(backs: Sequence[StatusBack], stop: asyncio.Event) -> None:
    """The ``sync`` role's status-back loops: each endpoint with a poll interval polls until
    ``stop`` is set. A failed poll (the endpoint or the database away) is logged by its kind
    only and tried again after the interval; the watermark moves only after a whole pass."""

    async def loop(back: StatusBack) -> None:
        interval = back.endpoint.poll_interval
        while not stop.is_set():
            try:
                await back.poll()
            except Exception as exc:  # keep polling: the next pass starts from the watermark
                log.warning(
                    "status back poll of endpoint %s failed (%s)",
                    back.endpoint.name,
                    type(exc).__name__,
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    await asyncio.gather(*(loop(b) for b in backs if b.endpoint.poll_interval > 0))


def _last_updated(resource: Json) -> datetime | None:
    stamp = (resource.get("meta") or {}).get("lastUpdated")
    if not isinstance(stamp, str):
        return None
    try:
        parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _safe_id(resource: Json) -> str:
    rid = resource.get("id")
    return str(rid)[:64] if isinstance(rid, str) else "(no id)"
