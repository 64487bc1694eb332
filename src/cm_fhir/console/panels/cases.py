"""Cases: a list by status, programme and team (and by patient, through a POSTed form, so the
identifier stays out of the URL), and the case page: status history, screening, goals, plan,
tasks, referrals, utilization reviews (deadline, overdue, decision), and the timeline of the
messages and rules that shaped it (the trace). I/O (the cases API; the case's trace)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from cm_fhir.console import queries
from cm_fhir.console.deps import ConsoleDep, FormError, api_message, api_page
from cm_fhir.domain import CaseStatus, UtilizationReview

__all__ = ["router"]

router = APIRouter(prefix="/console/cases")

PAGE_SIZE = 50


async def _list(console: ConsoleDep, filters: dict[str, str], error: str | None) -> Response:
    items, next_cursor, refused = await api_page(console, "/api/cases", limit=PAGE_SIZE, **filters)
    error = error or refused
    return console.page(
        "cases.html",
        title="Cases",
        current="Cases",
        items=items,
        next_cursor=next_cursor,
        filters={k: filters.get(k, "") for k in ("status", "programme", "team", "patient")},
        statuses=[s.value for s in CaseStatus],
        programmes=list(console.context.registry.code_systems["programme"].concepts),
        error=error,
    )


@router.get("", summary="Cases")
async def cases(
    console: ConsoleDep,
    status: str | None = None,
    programme: str | None = None,
    team: str | None = None,
    cursor: str | None = None,
) -> Response:
    filters = {
        k: v
        for k, v in (
            ("status", status),
            ("programme", programme),
            ("team", team),
            ("cursor", cursor),
        )
        if v
    }
    return await _list(console, filters, None)


@router.post("", summary="Cases: search, by patient too (in the body, never the URL)")
async def search_cases(console: ConsoleDep) -> Response:
    try:
        fields = await console.form()
    except FormError as exc:
        return await _list(console, {}, str(exc))
    keep = ("status", "programme", "team", "patient", "cursor")
    return await _list(console, {k: fields[k] for k in keep if fields.get(k)}, None)


@router.get("/{case_id}", summary="One case with its timeline")
async def case(console: ConsoleDep, case_id: str) -> Response:
    answer = await console.api.get(f"/api/cases/{case_id}")
    if answer.status_code != 200:
        return console.page(
            "case.html",
            answer.status_code,
            title="Case",
            current="Cases",
            case=None,
            error=api_message(answer),
        )
    timeline = await queries.case_timeline(console.context.engine, case_id)
    body = answer.json()
    return console.page(
        "case.html",
        title=f"Case {case_id}",
        current="Cases",
        case=body,
        version=answer.headers.get("etag", ""),
        reviews=_reviews(body, console.now()),
        timeline=timeline,
    )


def _reviews(case: dict[str, Any], now: datetime) -> list[dict[str, Any]]:
    """The case's utilization reviews with their decision deadline and whether it has passed."""
    out = []
    for shown in case.get("utilization_reviews", []):
        review = UtilizationReview.model_validate(shown)
        deadline = review.deadline.isoformat()
        out.append({"review": shown, "deadline": deadline, "overdue": review.is_overdue(now)})
    return out
