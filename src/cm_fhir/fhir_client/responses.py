"""What the client hands back: one response, or one result per Bundle entry written."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from cm_fhir.errors import RemoteInvalid

__all__ = ["EntryResult", "FhirResponse", "entry_results", "json_body", "version_of_etag"]

Json = dict[str, Any]


def version_of_etag(etag: str | None) -> str | None:
    """The version id inside an ETag: ``W/"3"`` -> ``3``."""
    if not etag:
        return None
    return etag.removeprefix("W/").strip('"') or None


@dataclass(frozen=True)
class FhirResponse:
    """A successful answer to one request."""

    status: int
    resource: Json | None
    etag: str | None
    version_id: str | None
    location: str | None
    last_modified: str | None

    @classmethod
    def of(cls, response: httpx.Response) -> FhirResponse:
        resource = json_body(response)
        etag = response.headers.get("ETag")
        meta = resource.get("meta") if isinstance(resource, dict) else None
        version = version_of_etag(etag)
        if version is None and isinstance(meta, dict):
            version = meta.get("versionId")
        return cls(
            status=response.status_code,
            resource=resource,
            etag=etag,
            version_id=version,
            location=response.headers.get("Location") or response.headers.get("Content-Location"),
            last_modified=response.headers.get("Last-Modified"),
        )


@dataclass(frozen=True)
class EntryResult:
    """The server's answer for one entry of a Bundle we wrote (``Bundle.entry.response``)."""

    full_url: str | None
    status: int
    location: str | None
    etag: str | None
    outcome: Json | None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def json_body(response: httpx.Response) -> Json | None:
    """The response's body as a JSON object, or None (empty, not JSON, not an object)."""
    if not response.content:
        return None
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None
    return body if isinstance(body, dict) else None


def _status_code(text: str) -> int:
    """``"201 Created"`` -> 201; anything unreadable is a 500."""
    head = text.strip().split(" ", 1)[0]
    return int(head) if head.isdigit() else 500


def entry_results(sent: Json, answer: Json) -> list[EntryResult]:
    """Pair the entries of a sent Bundle with those of the server's response Bundle, in order;
    RemoteInvalid when the server answered another number of entries."""
    sent_entries: list[Json] = sent.get("entry") or []
    answered: list[Json] = answer.get("entry") or []
    if len(answered) != len(sent_entries) or not all(isinstance(a, dict) for a in answered):
        kind = sent.get("type", "bundle")
        raise RemoteInvalid(
            None, f"POST {kind}: {len(answered)} entries answered for {len(sent_entries)} sent"
        )
    results = []
    for n, entry in enumerate(sent_entries):
        response: Json = answered[n].get("response") or {}
        outcome = response.get("outcome")
        etag = response.get("etag")
        resource = answered[n].get("resource")
        if not etag and isinstance(resource, dict):
            version = (resource.get("meta") or {}).get("versionId")
            etag = f'W/"{version}"' if version else None
        results.append(
            EntryResult(
                full_url=entry.get("fullUrl"),
                status=_status_code(str(response.get("status", "500"))),
                location=response.get("location"),
                etag=etag,
                outcome=outcome if isinstance(outcome, dict) else None,
            )
        )
    return results
