"""The one table from HTTP answers to the Remote* errors, through the client (respx)."""

from __future__ import annotations

import email.utils
import time

import httpx
import pytest
import respx

from cm_fhir.errors import (
    CmFhirError,
    RecordNotFound,
    RemoteAuthError,
    RemoteConflict,
    RemoteFhirError,
    RemoteInvalid,
    RemoteNotFound,
    RemotePreconditionFailed,
    RemoteRateLimited,
    RemoteTooCostly,
    RemoteUnavailable,
)
from cm_fhir.fhir_client import FhirClient, RetryPolicy
from cm_fhir.fhir_client.status import retry_after_seconds

BASE = "http://ehr.test/fhir"
ONCE = RetryPolicy(max_attempts=1)


def outcome(code: str, text: str = "the server's words") -> dict[str, object]:
    issue = {"severity": "error", "code": code, "diagnostics": text}
    return {"resourceType": "OperationOutcome", "issue": [issue]}


TABLE: list[tuple[int, str, type[RemoteFhirError], bool]] = [
    (400, "invalid", RemoteInvalid, False),
    (422, "processing", RemoteInvalid, False),
    (400, "too-costly", RemoteTooCostly, False),
    (413, "too-costly", RemoteTooCostly, False),
    (401, "login", RemoteAuthError, False),
    (403, "forbidden", RemoteAuthError, False),
    (404, "not-found", RemoteNotFound, False),
    (410, "deleted", RemoteNotFound, False),
    (409, "conflict", RemoteConflict, False),
    (412, "conflict", RemotePreconditionFailed, False),
    (429, "throttled", RemoteRateLimited, True),
    (500, "exception", RemoteUnavailable, True),
    (502, "transient", RemoteUnavailable, True),
    (503, "transient", RemoteUnavailable, True),
    (504, "timeout", RemoteUnavailable, True),
    (405, "not-supported", RemoteFhirError, False),
]


@pytest.mark.parametrize(("status", "code", "cls", "retryable"), TABLE)
@respx.mock
async def test_status_and_outcome_map_to_one_class(
    status: int, code: str, cls: type[RemoteFhirError], retryable: bool
) -> None:
    body = outcome(code)
    respx.get(f"{BASE}/Task/t1").mock(return_value=httpx.Response(status, json=body))
    async with FhirClient(BASE, retry=ONCE) as client:
        with pytest.raises(RemoteFhirError) as caught:
            await client.read("Task", "t1")
    assert type(caught.value) is cls
    assert caught.value.status == status
    assert caught.value.retryable is retryable
    assert caught.value.outcome == body
    assert "the server's words" not in str(caught.value)


@pytest.mark.parametrize(
    "text",
    [
        "Transaction requires strict isolation but has too many entries",
        "Transaction contains more update operations than allowed",
    ],
)
@respx.mock
async def test_medplums_size_refusals_read_as_too_costly(text: str) -> None:
    body = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "invalid", "details": {"text": text}}],
    }
    respx.post(BASE).mock(return_value=httpx.Response(400, json=body))
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": []}
    async with FhirClient(BASE, retry=ONCE) as client:
        with pytest.raises(RemoteTooCostly):
            await client.transaction(bundle)


@respx.mock
async def test_a_remote_404_is_never_a_local_one() -> None:
    respx.get(f"{BASE}/Task/t1").mock(return_value=httpx.Response(404))
    async with FhirClient(BASE, retry=ONCE) as client:
        with pytest.raises(CmFhirError) as caught:
            await client.read("Task", "t1")
    assert not isinstance(caught.value, RecordNotFound)
    assert caught.value.outcome is None  # type: ignore[attr-defined]


@respx.mock
async def test_messages_name_the_type_not_the_identifier() -> None:
    url = f"{BASE}/Patient?identifier=urn:mrn|MRN-SECRET-42"
    respx.put(url).mock(return_value=httpx.Response(412, json=outcome("multiple-matches")))
    async with FhirClient(BASE, retry=ONCE) as client:
        with pytest.raises(RemotePreconditionFailed) as caught:
            await client.conditional_update(
                "Patient", "identifier=urn:mrn|MRN-SECRET-42", {"resourceType": "Patient"}
            )
    assert str(caught.value) == "HTTP 412: PUT Patient (multiple-matches)"


@respx.mock
async def test_a_redirect_is_not_an_answer() -> None:
    login = httpx.Response(302, headers={"Location": "https://sso.example/login"})
    respx.get(f"{BASE}/Task/t1").mock(return_value=login)
    async with FhirClient(BASE, retry=RetryPolicy(max_attempts=3)) as client:
        with pytest.raises(RemoteFhirError) as caught:
            await client.read("Task", "t1")
    assert caught.value.status == 302
    assert not caught.value.retryable


@respx.mock
async def test_transport_errors_are_retryable_unavailable() -> None:
    respx.get(f"{BASE}/Task/t1").mock(side_effect=httpx.ConnectError("refused"))
    async with FhirClient(BASE, retry=ONCE) as client:
        with pytest.raises(RemoteUnavailable) as caught:
            await client.read("Task", "t1")
    assert caught.value.status is None
    assert caught.value.retryable


@respx.mock
async def test_a_non_json_answer_is_refused_cleanly() -> None:
    respx.get(f"{BASE}/metadata").mock(return_value=httpx.Response(200, text="<html>"))
    async with FhirClient(BASE, retry=ONCE) as client:
        with pytest.raises(RemoteInvalid):
            await client.capabilities()


def test_retry_after_in_seconds_and_as_an_http_date() -> None:
    now = time.time()
    assert retry_after_seconds({"Retry-After": "7"}) == 7.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert retry_after_seconds({"Retry-After": date}, now=now) == pytest.approx(30, abs=1)
    past = email.utils.formatdate(now - 30, usegmt=True)
    assert retry_after_seconds({"Retry-After": past}, now=now) == 0.0
    assert retry_after_seconds({"Retry-After": "soon"}) is None


def test_ratelimit_headers() -> None:
    assert retry_after_seconds({"RateLimit-Reset": "12"}) == 12.0
    assert retry_after_seconds({"RateLimit": "limit=100, remaining=0, reset=4"}) == 4.0
    assert retry_after_seconds({"RateLimit": '"default";r=0;t=9'}) == 9.0
    assert retry_after_seconds({"RateLimit": "limit=100, remaining=3"}) is None
    assert retry_after_seconds({}) is None
