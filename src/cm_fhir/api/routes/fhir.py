"""``/fhir``: the read-only FHIR R4 facade over case data. I/O (database).

``GET /fhir/metadata`` is the CapabilityStatement (open, as SMART requires). ``GET /fhir/<Type>``
searches and ``GET /fhir/<Type>/<id>`` reads EpisodeOfCare, CarePlan, Goal, Task, CareTeam,
ServiceRequest (the rows of ``fhir_resources``: exactly what the mapper emits for each case's
current state) and Provenance (built from the trace). Answers are ``application/fhir+json``;
errors are OperationOutcomes: 400 for an unknown type or a malformed value, 404 for an unknown
id, 401/403 without a token or without ``system/*.read`` / ``system/<Type>.read``. Unsupported
parameters are ignored (FHIR's lenient handling; the ``self`` link shows what was applied)
unless the request says ``Prefer: handling=strict``, which makes them a 400.
Searches and reads are audited (type and id, never the query string).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse, Response

import cm_fhir
from cm_fhir.api.deps import AuditDep, EngineDep, PrincipalDep, check_fhir_read, get_registry
from cm_fhir.api.errors import FHIR_JSON, error_response
from cm_fhir.errors import SearchParameterError
from cm_fhir.facade import (
    RESOURCE_TYPES,
    SEARCH_PARAMETERS,
    capability_statement,
    parse_search,
    searchset,
)
from cm_fhir.fhir.outcome import Issue, operation_outcome
from cm_fhir.store.fhir_repo import read_resource, search_resources
from cm_fhir.store.provenance_repo import read_provenance, search_provenance

__all__ = ["router"]

router = APIRouter(prefix="/fhir", tags=["fhir"])

_STARTED = datetime.now(UTC).replace(microsecond=0).isoformat()


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/fhir"


def _fhir(
    body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(body, status, headers=headers, media_type=FHIR_JSON)


def _bad_request(request: Request, exc: SearchParameterError) -> Response:
    outcome = operation_outcome(
        [Issue("error", "not-supported" if "supported" in exc.reason else "invalid", str(exc))]
    )
    outcome["issue"][0]["expression"] = [exc.parameter]
    return error_response(request, 400, str(exc), outcome=outcome)


def _strict(request: Request) -> bool:
    """Whether the client asked for ``Prefer: handling=strict``."""
    for header in request.headers.getlist("prefer"):
        for part in header.replace(";", ",").split(","):
            name, _, value = part.partition("=")
            if name.strip().lower() == "handling" and value.strip().strip('"').lower() == "strict":
                return True
    return False


def _check_type(resource_type: str) -> None:
    if resource_type not in RESOURCE_TYPES:
        served = ", ".join(RESOURCE_TYPES)
        raise SearchParameterError("type", f"'{resource_type}' is not supported (served: {served})")


@router.get("/metadata", summary="CapabilityStatement: exactly what this facade supports")
async def metadata(request: Request) -> Response:
    statement = capability_statement(
        _base(request), get_registry(request), software_version=cm_fhir.__version__, date=_STARTED
    )
    return _fhir(statement)


ResourceType = Annotated[
    str, Path(description="A served type.", json_schema_extra={"enum": list(RESOURCE_TYPES)})
]


def _search_parameters() -> list[dict[str, Any]]:
    """The search parameters as OpenAPI query parameters (each type takes its own subset)."""
    names = sorted({p.name for params in SEARCH_PARAMETERS.values() for p in params})
    names += ["patient:identifier", "_count", "_page", "_format", "_summary", "_total", "_elements"]
    return [
        {"name": name, "in": "query", "required": False, "schema": {"type": "string"}}
        for name in names
    ]


@router.get(
    "/{resource_type}",
    summary="Search one resource type",
    openapi_extra={"parameters": _search_parameters()},
)
async def search(
    request: Request,
    resource_type: ResourceType,
    engine: EngineDep,
    audit: AuditDep,
    principal: PrincipalDep,
) -> Response:
    try:
        _check_type(resource_type)
        check_fhir_read(principal, resource_type)
        query = parse_search(
            resource_type, request.query_params.multi_items(), strict=_strict(request)
        )
    except SearchParameterError as exc:
        return _bad_request(request, exc)
    fetch = replace(query, count=0) if query.summary_count else query
    async with engine.connect() as connection:
        if resource_type == "Provenance":
            page = await connection.run_sync(search_provenance, get_registry(request), fetch)
        else:
            page = await connection.run_sync(search_resources, fetch)
    ids: list[str | None] = [str(r["id"]) for r in page.resources] or [None]
    await audit.record_many("search", f"fhir:{resource_type}", ids)
    return _fhir(searchset(_base(request), query, page))


@router.get("/{resource_type}/{resource_id}", summary="Read one resource")
async def read(
    request: Request,
    resource_type: ResourceType,
    resource_id: str,
    engine: EngineDep,
    audit: AuditDep,
    principal: PrincipalDep,
) -> Response:
    try:
        _check_type(resource_type)
        check_fhir_read(principal, resource_type)
        strict = _strict(request)
        for key, value in request.query_params.multi_items():
            if key == "_format":
                parse_search(resource_type, [(key, value)])
            elif strict:
                raise SearchParameterError(key, "a read takes no parameters but _format")
    except SearchParameterError as exc:
        return _bad_request(request, exc)
    async with engine.connect() as connection:
        if resource_type == "Provenance":
            found = await connection.run_sync(read_provenance, get_registry(request), resource_id)
        else:
            found = await connection.run_sync(read_resource, resource_type, resource_id)
    if found is None:
        return error_response(request, 404, f"{resource_type}/{resource_id} is not known")
    await audit.record("read", f"fhir:{resource_type}", resource_id)
    meta = found.get("meta", {})
    headers = {}
    if "versionId" in meta:
        headers["ETag"] = f'W/"{meta["versionId"]}"'
    if "lastUpdated" in meta:
        headers["Last-Modified"] = format_datetime(
            datetime.fromisoformat(meta["lastUpdated"]).astimezone(UTC), usegmt=True
        )
    return _fhir(found, headers=headers)
