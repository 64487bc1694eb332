"""Worklist: a case manager's tasks by owner or team: overdue, due today, upcoming, and the cases
in transition; filtered by unit (the case's team) and programme. Complete, reassign or add a
note through the cases API, with the case version the page showed as ``If-Match`` (a case that
moved on meanwhile is refused, not overwritten) and the API's audit. I/O (the tasks and cases
APIs).

The filters are staff names, teams and programmes, never patient data, so they travel in the
URL and a worklist can be bookmarked.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response

from cm_fhir.console.deps import ConsoleDep, FormError, api_message, api_page, base_path
from cm_fhir.domain import TaskStatus
from cm_fhir.domain.task import OPEN_TASK_STATUSES, TASK_TRANSITIONS

__all__ = ["completion_path", "router"]

router = APIRouter(prefix="/console/worklist")

OPEN = sorted(s.value for s in OPEN_TASK_STATUSES)
#: Tasks (and cases in transition) per section and page; a section with more has a "Next page"
#: link (the API's cursor).
PAGE_SIZE = 100
ERRORS = {
    "stale": "This case changed since the worklist was shown; it is shown again as it is now.",
    "form": "The form has expired; please try again.",
}
NOTICES = {
    "completed": "The task is completed.",
    "reassigned": "The task is reassigned.",
    "noted": "The note is added.",
}


def completion_path(status: TaskStatus) -> list[TaskStatus]:
    """The shortest walk along the Task state machine from ``status`` to ``completed``."""
    seen = {status}
    queue: deque[tuple[TaskStatus, list[TaskStatus]]] = deque([(status, [])])
    while queue:
        current, path = queue.popleft()
        if current == TaskStatus.COMPLETED:
            return path
        for target in sorted(TASK_TRANSITIONS[current], key=lambda s: s.value):
            if target not in seen:
                seen.add(target)
                queue.append((target, [*path, target]))
    return []


def _filters(owner: str | None, team: str | None, programme: str | None) -> dict[str, str]:
    return {k: v for k, v in (("owner", owner), ("team", team), ("programme", programme)) if v}


@router.get("", summary="Worklist")
async def worklist(
    console: ConsoleDep,
    owner: str | None = None,
    team: str | None = None,
    programme: str | None = None,
    notice: str | None = None,
    error: str | None = None,
    section: str | None = None,
    cursor: str | None = None,
) -> Response:
    filters = _filters(owner, team, programme)
    now = console.now()
    tomorrow = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    sections: list[tuple[str, list[dict[str, Any]], str | None]] = []
    problem = None
    queries: list[tuple[str, str, dict[str, Any]]] = [
        ("overdue", "Overdue", {"overdue": "true"}),
        (
            "today",
            "Due today",
            {"status": OPEN, "due_after": now.isoformat(), "due_before": tomorrow.isoformat()},
        ),
        ("upcoming", "Upcoming", {"status": OPEN, "due_after": tomorrow.isoformat()}),
    ]

    async def section_page(
        key: str, path: str, params: dict[str, Any]
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A section's page of ``path`` and the link to its next page."""
        nonlocal problem
        start = cursor if section == key else None
        items, following, refused = await api_page(
            console, path, limit=PAGE_SIZE, cursor=start, **params
        )
        problem = problem or refused
        if following is None:
            return items, None
        query = urlencode({**filters, "section": key, "cursor": following})
        return items, f"{base_path(console.request)}/worklist?{query}"

    for key, name, extra in queries:
        sections.append((name, *await section_page(key, "/api/tasks", {**filters, **extra})))
    case_params = {"status": "transition", "team": team, "programme": programme}
    in_transition, transition_next = await section_page("transition", "/api/cases", case_params)
    return console.page(
        "worklist.html",
        title="Worklist",
        current="Worklist",
        filters={"owner": owner or "", "team": team or "", "programme": programme or ""},
        programmes=list(console.context.registry.code_systems["programme"].concepts),
        sections=sections,
        in_transition=in_transition,
        transition_next=transition_next,
        can_write=console.session.can("write"),
        notice=NOTICES.get(notice or ""),
        error=problem or ERRORS.get(error or ""),
    )


def _back(console: ConsoleDep, fields: dict[str, str], **extra: str) -> Response:
    query = _filters(fields.get("f_owner"), fields.get("f_team"), fields.get("f_programme"))
    query.update(extra)
    url = base_path(console.request) + "/worklist"
    return RedirectResponse(url + ("?" + urlencode(query) if query else ""), status_code=303)


async def _complete(console: ConsoleDep, case: str, task: str, status: str, etag: str) -> Any:
    for step in completion_path(TaskStatus(status)):
        answer = await console.api.request(
            "POST",
            f"/api/cases/{case}/tasks/{task}/status",
            json={"status": step.value},
            headers={"If-Match": etag},
        )
        if answer.status_code != 200:
            return answer
        etag = answer.headers.get("etag", etag)
    return None


async def _edit(
    console: ConsoleDep,
    case: str,
    task: str,
    etag: str,
    change: Callable[[dict[str, Any]], dict[str, Any]],
) -> Any:
    """Replace the task with ``change(task)`` through the API, If-Match the version shown."""
    current = await console.api.get(f"/api/cases/{case}")
    if current.status_code != 200:
        return current
    found = [t for t in current.json().get("tasks", []) if t["id"] == task]
    if not found:
        return current
    body = change(found[0])
    answer = await console.api.request(
        "PUT", f"/api/cases/{case}/tasks/{task}", json=body, headers={"If-Match": etag}
    )
    return None if answer.status_code == 200 else answer


@router.post("/task", summary="Complete, reassign or add a note to a task")
async def work_task(console: ConsoleDep) -> Response:
    try:
        fields = await console.form()
    except FormError as exc:
        del exc
        return _back(console, {}, error="form")
    case, task = fields.get("case_id", ""), fields.get("task_id", "")
    etag = f'W/"{fields.get("version", "")}"'
    action = fields.get("action")
    failure = None
    if action == "complete":
        failure = await _complete(console, case, task, fields.get("status", ""), etag)
        done = "completed"
    elif action == "reassign" and fields.get("owner"):
        owner = {"kind": "Practitioner", "display": fields["owner"]}
        failure = await _edit(console, case, task, etag, lambda t: {**t, "owner": owner})
        done = "reassigned"
    elif action == "note" and fields.get("note"):
        note = fields["note"]
        failure = await _edit(
            console, case, task, etag, lambda t: {**t, "notes": [*t.get("notes", []), note]}
        )
        done = "noted"
    else:
        return _back(console, fields)
    if failure is not None:
        if failure.status_code == 412:
            return _back(console, fields, error="stale")
        return console.page(
            "worklist_error.html",
            failure.status_code,
            title="Worklist",
            current="Worklist",
            error=api_message(failure),
        )
    return _back(console, fields, notice=done)
