"""R4 Subscription notifications in the R5 Backport format, read into plain values. Pure.

The Subscriptions R5 Backport IG sends, for an R4 server, a ``history`` Bundle whose first entry
is a ``Parameters`` resource (the backported SubscriptionStatus): ``subscription`` (a reference),
``topic``, ``status``, ``type`` (``handshake``, ``heartbeat``, ``event-notification``,
``query-status``, ``query-event``), ``events-since-subscription-start`` and one
``notification-event`` per event (parts ``event-number``, ``timestamp``, ``focus``,
``additional-context``). With ``full-resource`` payloads the focus resources follow as further
entries (matched by ``fullUrl``); with ``id-only`` only the focus reference is there, and the
receiver reads the resource itself. :func:`read_notification` raises
:class:`~cm_fhir.errors.ValidationError` with an OperationOutcome naming the element that is
wrong, never a value from the body.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cm_fhir.errors import ValidationError
from cm_fhir.fhir.outcome import Issue, operation_outcome

__all__ = [
    "NOTIFICATION_TYPES",
    "Notification",
    "NotificationEvent",
    "read_notification",
    "type_and_id",
]

Json = dict[str, Any]
NOTIFICATION_TYPES = frozenset(
    {"handshake", "heartbeat", "event-notification", "query-status", "query-event"}
)


@dataclass(frozen=True, slots=True)
class NotificationEvent:
    """One event: its number, the focus reference and the resource when the payload has it."""

    number: int | None
    focus: str | None
    resource: Json | None


@dataclass(frozen=True, slots=True)
class Notification:
    """A notification Bundle, read."""

    subscription: str
    type: str
    status: str | None
    events_since_start: int | None
    events: tuple[NotificationEvent, ...]

    @property
    def carries_events(self) -> bool:
        return self.type in ("event-notification", "query-event")


def _bad(expression: str, text: str) -> ValidationError:
    outcome = operation_outcome([Issue("error", "invalid", text, expression)])
    return ValidationError(f"not a subscription notification: {expression}: {text}", outcome)


def _count(value: Any, expression: str) -> int:
    """An unsigned count given as a string (the IG's ``valueString``) or an integer."""
    text = str(value).strip() if isinstance(value, (str, int)) else ""
    if isinstance(value, bool) or not text.isdigit() or len(text) > 18:
        raise _bad(expression, "must be a whole number of events")
    return int(text)


def _value(parameter: Json, expression: str) -> Any:
    values = [v for k, v in parameter.items() if k.startswith("value")]
    if len(values) != 1:
        raise _bad(expression, "needs exactly one value")
    return values[0]


def _reference(value: Any, expression: str) -> str:
    if not isinstance(value, dict) or not isinstance(value.get("reference"), str):
        raise _bad(expression, "must be a Reference with a reference")
    return str(value["reference"])


def _parameters(resource: Any) -> list[Json]:
    if not isinstance(resource, dict) or resource.get("resourceType") != "Parameters":
        raise _bad("Bundle.entry[0].resource", "the first entry must be a Parameters resource")
    parameters = resource.get("parameter")
    if not isinstance(parameters, list) or not all(isinstance(p, dict) for p in parameters):
        raise _bad("Parameters.parameter", "must be a list of parameters")
    return parameters


def _event(parameter: Json, index: int, payloads: dict[str, Json]) -> NotificationEvent:
    where = f"Parameters.parameter[{index}]"
    parts = parameter.get("part")
    if not isinstance(parts, list) or not all(isinstance(p, dict) for p in parts):
        raise _bad(f"{where}.part", "a notification-event needs its parts")
    number: int | None = None
    focus: str | None = None
    for j, part in enumerate(parts):
        name = part.get("name")
        if name == "event-number":
            number = _count(_value(part, f"{where}.part[{j}]"), f"{where}.part[{j}]")
        elif name == "focus":
            focus = _reference(_value(part, f"{where}.part[{j}]"), f"{where}.part[{j}]")
    if number is None:
        raise _bad(f"{where}.part", "a notification-event needs an event-number")
    resource = (payloads.get(focus) or payloads.get(type_and_id(focus))) if focus else None
    return NotificationEvent(number, focus, resource)


def type_and_id(reference: str) -> str:
    """``Type/id`` of a relative or absolute reference (a ``_history`` suffix dropped)."""
    path = reference.split("?", 1)[0].rstrip("/").split("/")
    if len(path) >= 4 and path[-2] == "_history":
        path = path[:-2]
    return "/".join(path[-2:])


def _payloads(entries: list[Any]) -> dict[str, Json]:
    """Focus resources in the Bundle by fullUrl, and by ``Type/id`` too."""
    out: dict[str, Json] = {}
    for i, entry in enumerate(entries[1:], start=1):
        if not isinstance(entry, dict):
            raise _bad(f"Bundle.entry[{i}]", "must be an object")
        resource = entry.get("resource")
        if not isinstance(resource, dict):
            continue
        if not isinstance(resource.get("resourceType"), str):
            raise _bad(f"Bundle.entry[{i}].resource", "needs a resourceType")
        full_url = entry.get("fullUrl")
        if isinstance(full_url, str):
            out[full_url] = resource
        if resource.get("id"):
            out[f"{resource['resourceType']}/{resource['id']}"] = resource
    return out


def read_notification(body: Any) -> Notification:
    """The notification in ``body`` (decoded JSON); ValidationError when it is not one."""
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        raise _bad("Bundle", "the body must be a Bundle")
    if body.get("type") != "history":
        raise _bad("Bundle.type", "a notification Bundle has type 'history'")
    entries = body.get("entry")
    if not isinstance(entries, list) or not entries or not isinstance(entries[0], dict):
        raise _bad("Bundle.entry", "the Bundle needs the subscription status as its first entry")
    parameters = _parameters(entries[0].get("resource"))
    payloads = _payloads(entries)
    found: dict[str, Any] = {}
    events = []
    for i, parameter in enumerate(parameters):
        name = parameter.get("name")
        where = f"Parameters.parameter[{i}]"
        if name == "notification-event":
            events.append(_event(parameter, i, payloads))
        elif name in ("subscription", "type", "status", "events-since-subscription-start"):
            if name in found:
                raise _bad(where, f"'{name}' is given twice")
            found[name] = (_value(parameter, where), where)
    if "subscription" not in found or "type" not in found:
        raise _bad("Parameters.parameter", "needs 'subscription' and 'type'")
    subscription = _reference(*found["subscription"])
    kind = found["type"][0]
    if kind not in NOTIFICATION_TYPES:
        raise _bad(found["type"][1], "unknown notification type")
    status = found.get("status", (None, ""))[0]
    since = found.get("events-since-subscription-start")
    return Notification(
        subscription=subscription,
        type=str(kind),
        status=str(status) if isinstance(status, str) else None,
        events_since_start=_count(*since) if since is not None else None,
        events=tuple(events),
    )
