"""One paging scheme on every list, on SQLite and PostgreSQL: messages, dead letters, outbox rows,
cases, tasks and utilization reviews all answer ``next`` and ``next_cursor`` and take ``cursor``.

Each list is walked page by page (two items a page) while new items are inserted between the
pages, as a busy feed would: every item there when the walk began is seen exactly once, nothing
is seen twice, the order is the list's own, and a cursor is refused by any other list."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from api_case_helpers import TOKENS, case_app, case_json, client, example
from cm_fhir.fhir.pas_request import pas_request_bundle
from cm_fhir.mapping.payer_exchange import default_payer_exchange
from cm_fhir.mapping.registry import default_registry
from cm_fhir.store.tables import InboxState, inbox_messages
from pas_samples import review, stroke_case
from worker_fixtures import ingest
from workflow_messages import Visit, hours

__all__ = ["case_app"]

Json = dict[str, Any]
_serial = itertools.count(1)


@pytest.fixture(autouse=True)
def _claim_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(TOKENS, "claim-token", frozenset({"system/Claim.c"}))


@dataclass
class Lister:
    """How to add one item to a list, and what identifies an item of it."""

    path: str
    add: Callable[[FastAPI, AsyncEngine], Awaitable[None]]
    key: Callable[[Json], str]
    order: Callable[[Json], Any]


async def _message(app: FastAPI, engine: AsyncEngine) -> None:
    n = next(_serial)
    visit = Visit(mrn=f"MRN-PG-{n}", visit=f"V-PG-{n}")
    await ingest(engine, [visit.raw("A01", f"CTRL-PG-{n}", hours(0))])


async def _dead_letter(app: FastAPI, engine: AsyncEngine) -> None:
    n = next(_serial)
    visit = Visit(mrn=f"MRN-DL-{n}", visit=f"V-DL-{n}")
    await ingest(engine, [visit.raw("A01", f"CTRL-DL-{n}", hours(0))])
    async with engine.begin() as connection:  # the state the worker leaves a failed message in
        await connection.execute(
            update(inbox_messages)
            .where(inbox_messages.c.control_id == f"CTRL-DL-{n}")
            .values(state=InboxState.DEAD_LETTERED.value, reason="FhirUnavailableError")
        )


async def _case(app: FastAPI, engine: AsyncEngine) -> None:
    n = next(_serial)
    # Ids that sort before and after those already listed: an insert lands on both sides.
    case_id = f"{'A' if n % 2 else 'Z'}-PAGE-{n:04d}"
    case = example("stroke-inpatient-rehab").model_copy(update={"id": case_id})
    async with client(app) as http:
        created = await http.post("/api/cases", json=case_json(case))
    assert created.status_code == 201, created.text


async def _review(app: FastAPI, engine: AsyncEngine) -> None:
    n = next(_serial)
    body = pas_request_bundle(
        stroke_case(),
        review(id=f"ur{n}", requested=review().requested.replace(hour=n % 24)),
        default_payer_exchange(),
        default_registry().canonical_base,
    )
    async with client(app, "claim-token") as http:
        answer = await http.post("/fhir/Claim/$submit", json=body)
    assert answer.status_code == 200, answer.text


def _newest_first(item: Json) -> Any:
    return -int(item["id"])


LISTS = {
    "messages": Lister("/api/messages", _message, lambda i: str(i["id"]), _newest_first),
    "dead-letters": Lister(
        "/api/dead-letters", _dead_letter, lambda i: str(i["id"]), _newest_first
    ),
    "outbox": Lister("/api/outbox/items", _case, lambda i: str(i["id"]), _newest_first),
    "cases": Lister("/api/cases", _case, lambda i: str(i["id"]), lambda i: i["id"]),
    "tasks": Lister(
        "/api/tasks",
        _case,
        lambda i: f"{i['case_id']}/{i['id']}",
        lambda i: (i["due"], i["case_id"], i["id"]),
    ),
    "reviews": Lister(
        "/api/utilization-reviews",
        _review,
        lambda i: f"{i['case_id']}/{i['review']['id']}",
        lambda i: (i["review"]["decision"] != "pended", i["deadline"], i["review"]["id"]),
    ),
}


async def _everything(app: FastAPI, path: str) -> list[Json]:
    async with client(app) as http:
        answer = await http.get(path, params={"limit": 200})
    assert answer.status_code == 200, answer.text
    items: list[Json] = answer.json()["items"]
    return items


@pytest.mark.parametrize("name", sorted(LISTS))
async def test_paging_sees_every_item_once_while_items_are_inserted(
    name: str, case_app: FastAPI, worker_engine: AsyncEngine
) -> None:
    lister = LISTS[name]
    for _ in range(5):
        await lister.add(case_app, worker_engine)
    before = [lister.key(i) for i in await _everything(case_app, lister.path)]
    assert len(before) >= 5
    seen: list[Json] = []
    url: str | None = f"{lister.path}?limit=2"
    cursors: list[str] = []
    async with client(case_app) as http:
        while url is not None:
            answer = await http.get(url)
            assert answer.status_code == 200, answer.text
            page = answer.json()
            assert len(page["items"]) <= 2
            seen += page["items"]
            assert (page["next"] is None) == (page["next_cursor"] is None)
            if page["next_cursor"] is not None:
                assert f"cursor={page['next_cursor']}" in page["next"]
                cursors.append(page["next_cursor"])
            url = page["next"]
            await lister.add(case_app, worker_engine)  # a busy feed: more arrive meanwhile
    keys = [lister.key(i) for i in seen]
    assert len(keys) == len(set(keys)), "an item was listed twice"
    assert set(before) <= set(keys), "an item listed before the walk was missed"
    orders = [lister.order(i) for i in seen]
    assert orders == sorted(orders)
    after = {lister.key(i) for i in await _everything(case_app, lister.path)}
    assert len(after) > len(before)  # the inserts happened, and landed in the list
    assert len(cursors) >= 2

    # The same walk by sending next_cursor back as `cursor`: the same items, page by page.
    async with client(case_app) as http:
        first = (await http.get(lister.path, params={"limit": 2})).json()
        again = (
            await http.get(lister.path, params={"limit": 2, "cursor": first["next_cursor"]})
        ).json()
        assert again == (await http.get(first["next"])).json()


async def test_a_cursor_is_refused_by_another_list_and_when_forged(case_app: FastAPI) -> None:
    for _ in range(3):
        await _case(case_app, None)  # type: ignore[arg-type]
    async with client(case_app) as http:
        cursor = (await http.get("/api/cases", params={"limit": 1})).json()["next_cursor"]
        assert cursor is not None
        for path in ("/api/messages", "/api/outbox/items", "/api/tasks", "/api/dead-letters"):
            refused = await http.get(path, params={"cursor": cursor})
            assert refused.status_code == 422, (path, refused.text)
            assert "cursor" in refused.json()["error"]["message"]
        for forged in ("!!", "e30", "WyJjYXNlcyJd", "x" * 700):
            refused = await http.get("/api/cases", params={"cursor": forged})
            assert refused.status_code == 422, forged
        outbox = (await http.get("/api/outbox/items", params={"limit": 1})).json()
        assert outbox["next_cursor"] is not None
        assert "before" not in outbox["next"]
        assert "next_before" not in outbox


async def test_the_review_queue_lists_pended_reviews_first(case_app: FastAPI) -> None:
    for _ in range(3):
        await _review(case_app, None)  # type: ignore[arg-type]
    queue = await _everything(case_app, "/api/utilization-reviews")
    soonest = queue[0]["review"]["id"]
    async with client(case_app, "writer-token") as http:
        decided = await http.post(
            f"/api/utilization-reviews/{soonest}/decision", json={"decision": "denied"}
        )
    assert decided.status_code == 200, decided.text
    again = await _everything(case_app, "/api/utilization-reviews")
    assert [i["review"]["decision"] for i in again] == ["pended", "pended", "denied"]
    assert again[-1]["review"]["id"] == soonest
    deadlines = [i["deadline"] for i in again[:2]]
    assert deadlines == sorted(deadlines)


async def test_a_paging_parameter_of_earlier_versions_is_refused_by_name(
    case_app: FastAPI,
) -> None:
    """Ignored, ``after`` or ``before`` would give a client that pages with them the first page
    for ever; every list names the parameter and the one to use."""
    await _case(case_app, None)  # type: ignore[arg-type]
    lists = (
        "/api/cases",
        "/api/tasks",
        "/api/messages",
        "/api/dead-letters",
        "/api/outbox/items",
        "/api/utilization-reviews",
    )
    async with client(case_app) as http:
        for path in lists:
            for retired in ("after", "before", "next_before"):
                refused = await http.get(path, params={retired: "x"})
                assert refused.status_code == 400, (path, retired, refused.text)
                message = refused.json()["error"]["message"]
                assert f"'{retired}'" in message
                assert "cursor" in message
            assert (await http.get(path, params={"limit": 1})).status_code == 200
