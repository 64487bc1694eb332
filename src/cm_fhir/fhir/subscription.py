"""Topic-based Subscriptions in R4 (Subscriptions R5 Backport IG), for the Da Vinci PAS topic.
Pure.

The payer side takes an R4 ``Subscription`` whose ``criteria`` is the PAS topic canonical
(:data:`PAS_TOPIC`: a ClaimResponse made ready for a pended request), optionally narrowed by the
backport ``filter-criteria`` extension on ``criteria`` to the requesting organisation
(``orgIdentifier=system|value``, the topic's one filter), with a ``rest-hook`` channel (endpoint,
``application/fhir+json``, ``header`` lines) and the backport ``payload-content`` extension on
``channel.payload`` (``id-only``, the default, or ``full-resource``). :func:`read_subscription`
reads one into a :class:`SubscriptionRequest` or raises
:class:`~cm_fhir.errors.ValidationError` with an OperationOutcome naming the element, never a
value from the body. :func:`subscription_resource` is the stored subscription as R4 (header
values withheld), :func:`notification_bundle` the ``history`` Bundle of one notification (its
first entry the backported SubscriptionStatus ``Parameters``), and :func:`subscription_request`
what the hospital side posts to a payer to subscribe.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import uuid4

from cm_fhir.errors import ValidationError
from cm_fhir.fhir.outcome import Issue, operation_outcome

__all__ = [
    "FILTER_CRITERIA",
    "PAS_TOPIC",
    "PAYLOADS",
    "PAYLOAD_CONTENT",
    "SUBSCRIPTION_PROFILE",
    "EventFocus",
    "SubscriptionRequest",
    "notification_bundle",
    "read_subscription",
    "status_parameters",
    "subscription_request",
    "subscription_resource",
]

Json = dict[str, Any]
_BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
SUBSCRIPTION_PROFILE = _BACKPORT + "backport-subscription"
FILTER_CRITERIA = _BACKPORT + "backport-filter-criteria"
PAYLOAD_CONTENT = _BACKPORT + "backport-payload-content"
STATUS_PROFILE = _BACKPORT + "backport-subscription-status-r4"
#: The Da Vinci PAS topic: a result made ready for a pended prior-authorization request.
PAS_TOPIC = "http://hl7.org/fhir/us/davinci-pas/SubscriptionTopic/PASSubscriptionTopic"
PAYLOADS = ("id-only", "full-resource")
_MIME = ("application/fhir+json", "application/json")
_ORG_FILTER = "orgIdentifier"
MAX_HEADERS = 5


@dataclass(frozen=True, slots=True)
class SubscriptionRequest:
    """A Subscription as asked for: topic, the requester filter, the channel."""

    topic: str
    endpoint: str
    headers: tuple[str, ...]
    payload: str  # id-only | full-resource
    org_filter: str | None  # system|value of the requesting organisation, or None: any
    end: datetime | None


@dataclass(frozen=True, slots=True)
class EventFocus:
    """One event of a notification: its number, when, and the resource it is about."""

    number: int
    timestamp: datetime
    resource: Json  # the focus (sent whole with full-resource, referenced with id-only)


def _bad(expression: str, text: str) -> ValidationError:
    outcome = operation_outcome([Issue("error", "invalid", text, expression)])
    return ValidationError(f"not a usable Subscription: {expression}: {text}", outcome)


def _extensions(element: Any, url: str, expression: str) -> list[Any]:
    """The values of the extensions with ``url`` on ``element`` (a ``_field`` object)."""
    if element is None:
        return []
    extensions = element.get("extension") if isinstance(element, dict) else None
    if not isinstance(extensions, list) or not all(isinstance(e, dict) for e in extensions):
        raise _bad(f"{expression}.extension", "must be a list of extensions")
    return [
        next((v for k, v in e.items() if k.startswith("value")), None)
        for e in extensions
        if e.get("url") == url
    ]


def _org_filter(values: list[Any]) -> str | None:
    where = "Subscription.criteria.extension"
    if len(values) > 1:
        raise _bad(where, "at most one filter-criteria (orgIdentifier) is supported")
    if not values:
        return None
    value = values[0]
    if not isinstance(value, str):
        raise _bad(where, "filter-criteria must be a valueString")
    query = value.split("?", 1)[1] if "?" in value else value
    if value.count("?") > 1 or ("?" in value and value.split("?", 1)[0] != "ClaimResponse"):
        raise _bad(where, "filter-criteria must be 'ClaimResponse?orgIdentifier=system|value'")
    name, _, wanted = query.partition("=")
    system, bar, code = wanted.partition("|")
    if name != _ORG_FILTER or not bar or not code or "&" in query or len(wanted) > 500:
        raise _bad(where, "the PAS topic filters by 'orgIdentifier=system|value' only")
    return f"{system}|{code}"


def _channel(channel: Any) -> tuple[str, tuple[str, ...], str]:
    if not isinstance(channel, dict):
        raise _bad("Subscription.channel", "a channel is required")
    if channel.get("type") != "rest-hook":
        raise _bad("Subscription.channel.type", "only 'rest-hook' is supported")
    endpoint = channel.get("endpoint")
    if (
        not isinstance(endpoint, str)
        or not endpoint.startswith(("https://", "http://"))
        or len(endpoint) > 2000
        or any(c.isspace() for c in endpoint)
    ):
        raise _bad("Subscription.channel.endpoint", "must be an http(s) URL")
    if channel.get("payload", _MIME[0]) not in _MIME:
        raise _bad("Subscription.channel.payload", "must be 'application/fhir+json'")
    contents = _extensions(channel.get("_payload"), PAYLOAD_CONTENT, "Subscription.channel")
    payload = contents[0] if contents else "id-only"
    if len(contents) > 1 or payload not in PAYLOADS:
        raise _bad("Subscription.channel.payload", "payload-content: 'id-only' or 'full-resource'")
    headers = channel.get("header", [])
    if (
        not isinstance(headers, list)
        or len(headers) > MAX_HEADERS
        or not all(isinstance(h, str) and ":" in h and 0 < len(h) <= 1000 for h in headers)
        or any("\r" in h or "\n" in h for h in headers)
    ):
        raise _bad("Subscription.channel.header", f"up to {MAX_HEADERS} 'Name: value' lines")
    return endpoint, tuple(headers), str(payload)


def _end(value: Any) -> datetime | None:
    if value is None:
        return None
    try:
        end = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        end = None
    if end is None or end.tzinfo is None:
        raise _bad("Subscription.end", "must be an instant with a time zone")
    return end


def read_subscription(body: Any) -> SubscriptionRequest:
    """The Subscription in ``body`` (decoded JSON); ValidationError when it is not usable."""
    if not isinstance(body, dict) or body.get("resourceType") != "Subscription":
        raise _bad("Subscription", "the body must be a Subscription")
    if body.get("status") not in ("requested", "active"):
        raise _bad("Subscription.status", "must be 'requested' (or 'active')")
    if body.get("criteria") != PAS_TOPIC:
        raise _bad("Subscription.criteria", f"the only topic is {PAS_TOPIC}")
    filters = _extensions(body.get("_criteria"), FILTER_CRITERIA, "Subscription.criteria")
    org = _org_filter(filters)
    endpoint, headers, payload = _channel(body.get("channel"))
    return SubscriptionRequest(PAS_TOPIC, endpoint, headers, payload, org, _end(body.get("end")))


def _instant(value: datetime) -> str:
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def subscription_resource(
    subscription_id: str, request: SubscriptionRequest, status: str, error: str | None = None
) -> Json:
    """The stored Subscription as R4 (Backport profile); header values are not shown."""
    channel: Json = {
        "type": "rest-hook",
        "endpoint": request.endpoint,
        "payload": _MIME[0],
        "_payload": {"extension": [{"url": PAYLOAD_CONTENT, "valueCode": request.payload}]},
    }
    if request.headers:
        channel["header"] = [h.split(":", 1)[0] + ": (withheld)" for h in request.headers]
    out: Json = {
        "resourceType": "Subscription",
        "id": subscription_id,
        "meta": {"profile": [SUBSCRIPTION_PROFILE]},
        "status": status,
        "reason": "Results of pended prior-authorization requests",
        "criteria": request.topic,
        "channel": channel,
    }
    if request.org_filter is not None:
        filter_text = f"ClaimResponse?{_ORG_FILTER}={request.org_filter}"
        out["_criteria"] = {"extension": [{"url": FILTER_CRITERIA, "valueString": filter_text}]}
    if request.end is not None:
        out["end"] = _instant(request.end)
    if error:
        out["error"] = error
    return out


def status_parameters(
    subscription_id: str,
    kind: str,
    events_since_start: int,
    events: Sequence[EventFocus] = (),
    *,
    status: str = "active",
) -> Json:
    """The backported SubscriptionStatus (``Parameters``, R4) of a notification or ``$status``."""
    parameters: list[Json] = [
        {
            "name": "subscription",
            "valueReference": {"reference": f"Subscription/{subscription_id}"},
        },
        {"name": "topic", "valueCanonical": PAS_TOPIC},
        {"name": "status", "valueCode": status},
        {"name": "type", "valueCode": kind},
        {"name": "events-since-subscription-start", "valueString": str(events_since_start)},
    ]
    for event in events:
        parameters.append(
            {
                "name": "notification-event",
                "part": [
                    {"name": "event-number", "valueString": str(event.number)},
                    {"name": "timestamp", "valueInstant": _instant(event.timestamp)},
                    {"name": "focus", "valueReference": {"reference": _focus(event)}},
                ],
            }
        )
    return {
        "resourceType": "Parameters",
        "meta": {"profile": [STATUS_PROFILE]},
        "parameter": parameters,
    }


def _focus(event: EventFocus) -> str:
    return f"{event.resource['resourceType']}/{event.resource['id']}"


def notification_bundle(
    subscription_id: str,
    kind: str,
    events_since_start: int,
    events: Sequence[EventFocus],
    payload: str,
    now: datetime,
) -> Json:
    """One notification: a ``history`` Bundle whose first entry is the SubscriptionStatus
    (:func:`status_parameters`), then the focus resources when ``payload`` is
    ``full-resource``."""
    entries: list[Json] = [
        {
            "fullUrl": f"urn:uuid:{uuid4()}",
            "resource": status_parameters(subscription_id, kind, events_since_start, events),
            "request": {"method": "GET", "url": f"Subscription/{subscription_id}/$status"},
            "response": {"status": "200"},
        }
    ]
    if payload == "full-resource":
        entries += [
            {
                "fullUrl": _focus(event),
                "resource": event.resource,
                "request": {"method": "PUT", "url": _focus(event)},
                "response": {"status": "200"},
            }
            for event in events
        ]
    return {
        "resourceType": "Bundle",
        "id": str(uuid4()),
        "type": "history",
        "timestamp": _instant(now),
        "entry": entries,
    }


def subscription_request(endpoint: str, secret: str, payload: str) -> Json:
    """The Subscription the hospital side asks a payer for: the PAS topic, notifications posted
    to ``endpoint`` with ``Authorization: Bearer <secret>``."""
    return {
        "resourceType": "Subscription",
        "meta": {"profile": [SUBSCRIPTION_PROFILE]},
        "status": "requested",
        "reason": "Results of pended prior-authorization requests",
        "criteria": PAS_TOPIC,
        "channel": {
            "type": "rest-hook",
            "endpoint": endpoint,
            "payload": _MIME[0],
            "_payload": {"extension": [{"url": PAYLOAD_CONTENT, "valueCode": payload}]},
            "header": [f"Authorization: Bearer {secret}"],
        },
    }
