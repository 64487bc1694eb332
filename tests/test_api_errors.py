"""The error tree becomes HTTP statuses: JSON on /api, OperationOutcome on /fhir, no leaks."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from cm_fhir.api.errors import install_error_handlers
from cm_fhir.errors import (
    CmFhirError,
    DomainError,
    MappingError,
    RecordConflict,
    RecordNotFound,
    RecordVersionMismatch,
    RemoteConflict,
    RemoteNotFound,
    RemoteUnavailable,
    SearchParameterError,
    StoreError,
)

CASES: list[tuple[CmFhirError, int]] = [
    (SearchParameterError("_sort", "not supported"), 400),
    (RecordVersionMismatch("version mismatch"), 412),
    (RecordConflict("conflict"), 409),
    (RecordNotFound("no such case"), 404),
    # A remote server's refusal is a gateway error here, never its own status.
    (RemoteNotFound(404, "Task"), 502),
    (RemoteConflict(409, "Task"), 502),
    (RemoteUnavailable(503, "Task"), 503),
    (MappingError("cannot map", path="tasks[0]"), 422),
    (DomainError("case 'C-1' is closed: it takes no new tasks"), 409),
    (StoreError("database unavailable"), 503),
    (CmFhirError("secret internal detail"), 500),
]


def app_raising(exc: Exception) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    async def boom() -> None:
        raise exc

    app.add_api_route("/api/boom", boom)
    app.add_api_route("/fhir/boom", boom)
    return app


@pytest.mark.parametrize(
    ("exc", "status"), CASES, ids=[type(e).__name__ + str(s) for e, s in CASES]
)
async def test_status_and_body(exc: CmFhirError, status: int) -> None:
    transport = httpx.ASGITransport(app=app_raising(exc), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        api = await client.get("/api/boom")
        fhir = await client.get("/fhir/boom")
    assert api.status_code == status
    assert "error" in api.json()
    assert fhir.status_code == status
    assert fhir.headers["content-type"].startswith("application/fhir+json")
    outcome = fhir.json()
    assert outcome["resourceType"] == "OperationOutcome"
    if status == 500:
        assert "secret internal detail" not in api.text + fhir.text
