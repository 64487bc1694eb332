"""Status back, pure parts: the state machine's verdicts, reading an EHR's Task and applying it to
a case, reading Backport notifications, and telling missed events from a notification's counts."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cm_fhir.domain import Case, TaskStatus
from cm_fhir.domain.task_states import (
    TASK_REACHABLE,
    TASK_TRANSITIONS,
    Verdict,
    judge_transition,
)
from cm_fhir.errors import MappingError, ValidationError
from cm_fhir.fhir import datatypes as dt
from cm_fhir.mapping.registry import default_registry
from cm_fhir.store.ehr_status import EndpointCursor
from cm_fhir.sync.notifications import read_notification, type_and_id
from cm_fhir.sync.status_parts import events_seen as _events_seen
from cm_fhir.sync.task_states import Outcome, apply_remote_task, read_remote_task

S = TaskStatus
SYSTEM = default_registry().system("task")
BASE = "https://ehr.example/fhir"
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "stroke-inpatient-rehab.json"
Json = dict[str, Any]


def case() -> Case:
    return Case.model_validate_json(EXAMPLE.read_text())


def remote(local: str, status: str, **fields: Any) -> Json:
    c = case()
    return {
        "resourceType": "Task",
        "id": "srv-1",
        "meta": {"versionId": "7", "lastUpdated": "2026-03-20T10:00:00Z"},
        "identifier": [{"system": SYSTEM, "value": f"{c.id}.{local}"}],
        "status": status,
        "intent": "order",
        **fields,
    }


# -- the state machine ----------------------------------------------------------------------------


@pytest.mark.parametrize("status", list(S))
def test_staying_is_no_move(status: TaskStatus) -> None:
    assert judge_transition(status, status) is Verdict.SAME


@pytest.mark.parametrize(("current", "target"), [(a, b) for a in S for b in S if a != b])
def test_one_step_verdicts_follow_the_table(current: TaskStatus, target: TaskStatus) -> None:
    legal = current != S.ENTERED_IN_ERROR and (
        target == S.ENTERED_IN_ERROR or target in TASK_TRANSITIONS[current]
    )
    assert judge_transition(current, target) is (Verdict.LEGAL if legal else Verdict.ILLEGAL)


def test_moves_through_unseen_statuses_are_legal_only_forward() -> None:
    assert judge_transition(S.REQUESTED, S.COMPLETED) is Verdict.ILLEGAL
    assert judge_transition(S.REQUESTED, S.COMPLETED, through=True) is Verdict.LEGAL
    assert judge_transition(S.IN_PROGRESS, S.REQUESTED, through=True) is Verdict.ILLEGAL
    assert judge_transition(S.COMPLETED, S.IN_PROGRESS, through=True) is Verdict.ILLEGAL
    assert judge_transition(S.ENTERED_IN_ERROR, S.REQUESTED, through=True) is Verdict.ILLEGAL


def test_reachability_contains_every_step_and_ends_at_terminal_statuses() -> None:
    for status, steps in TASK_TRANSITIONS.items():
        assert steps <= TASK_REACHABLE[status]
        for step in steps:
            assert TASK_REACHABLE[step] <= TASK_REACHABLE[status]
    assert all(not TASK_REACHABLE[s] for s in (S.COMPLETED, S.FAILED, S.CANCELLED, S.REJECTED))


# -- reading a remote Task ------------------------------------------------------------------------


def test_a_task_of_ours_is_read_with_its_case_and_local_id() -> None:
    got = read_remote_task(
        remote(
            "t-auth",
            "completed",
            owner={"reference": "Practitioner/p9", "display": "Dr Nine"},
            statusReason={"coding": [{"code": "done", "display": "Done by phone"}]},
            businessStatus={"text": "called"},
            lastModified="2026-03-20T09:59:00Z",
        ),
        SYSTEM,
        BASE,
    )
    assert got is not None
    assert (got.case_id, got.local_id, got.fulfilment) == (case().id, "t-auth", False)
    assert got.status is S.COMPLETED
    assert got.status_reason == "Done by phone"
    assert got.business_status == "called"
    assert got.ended_at == datetime(2026, 3, 20, 9, 59, tzinfo=UTC)
    assert got.owner is not None
    assert got.owner.identifier is not None
    assert (got.owner.identifier.system, got.owner.identifier.value) == (
        f"{BASE}/Practitioner",
        "p9",
    )
    assert got.reference == "Task/srv-1/_history/7"


def test_an_open_task_has_no_end_and_a_fulfilment_task_is_told_apart() -> None:
    got = read_remote_task(
        remote(
            "r-rehab.fulfilment", "in-progress", executionPeriod={"end": "2026-03-21T00:00:00Z"}
        ),
        SYSTEM,
        BASE,
    )
    assert got is not None
    assert got.fulfilment
    assert got.local_id == "r-rehab"
    assert got.ended_at is None


@pytest.mark.parametrize(
    "identifier",
    [[], [{"system": "urn:other", "value": "X.t1"}], [{"system": SYSTEM, "value": "X.a.b.c"}]],
)
def test_tasks_not_ours_are_skipped(identifier: list[Json]) -> None:
    assert (
        read_remote_task({**remote("t1", "requested"), "identifier": identifier}, SYSTEM, BASE)
        is None
    )


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"status": "finished"}, "Task.status"),
        ({"owner": {"reference": "Device/d1"}}, "Task.owner"),
        ({"meta": {"lastUpdated": "yesterday"}}, "Task.meta.lastUpdated"),
        ({"id": None}, "Task.id"),
    ],
)
def test_an_unreadable_task_of_ours_names_the_element(fields: Json, path: str) -> None:
    with pytest.raises(MappingError) as caught:
        read_remote_task({**remote("t-auth", "requested"), **fields}, SYSTEM, BASE)
    assert caught.value.path == path
    assert "MRN" not in str(caught.value)


# -- applying it ----------------------------------------------------------------------------------


def apply(local: str, status: str, **fields: Any) -> Any:
    got = read_remote_task(remote(local, status, **fields), SYSTEM, BASE)
    assert got is not None
    return apply_remote_task(case(), got)


def test_a_legal_move_changes_status_reason_and_end() -> None:
    done = apply("t-bp-call", "completed", statusReason={"text": "reached"})  # via in-progress
    assert done.outcome is Outcome.APPLIED
    task = done.case.task("t-bp-call")
    assert task.status is S.COMPLETED
    assert task.status_reason == "reached"
    assert task.completed_at == datetime(2026, 3, 20, 10, 0, tzinfo=UTC)
    assert done.actions == ("status:completed", "reason")


def test_an_illegal_move_leaves_the_case_as_it_was() -> None:
    done = apply("t-rehab-options", "in-progress")
    assert done.outcome is Outcome.ILLEGAL
    assert done.case == case()
    assert done.moved == (S.COMPLETED, S.IN_PROGRESS)


def test_the_same_task_again_is_unchanged_and_an_unknown_one_unknown() -> None:
    c = case()
    ours = c.task("t-auth")
    business = {"businessStatus": {"text": ours.business_status}} if ours.business_status else {}
    same = apply("t-auth", ours.status.value, owner=dt.reference(ours.owner), **business)
    assert same.outcome is Outcome.UNCHANGED, same.actions
    assert apply("t-nobody", "completed").outcome is Outcome.UNKNOWN


def test_a_fulfilment_task_moves_the_referral() -> None:
    done = apply("r-rehab.fulfilment", "completed", businessStatus={"text": "admitted to rehab"})
    assert done.outcome is Outcome.APPLIED
    referral = next(r for r in done.case.referrals if r.id == "r-rehab")
    assert referral.fulfilment_status is S.COMPLETED
    assert referral.fulfilment_business_status == "admitted to rehab"


# -- notifications --------------------------------------------------------------------------------


def notification(kind: str, since: str | None, *events: tuple[str, str | None]) -> Json:
    parameters: list[Json] = [
        {"name": "subscription", "valueReference": {"reference": "https://ehr/Subscription/s1"}},
        {"name": "status", "valueCode": "active"},
        {"name": "type", "valueCode": kind},
    ]
    if since is not None:
        parameters.append({"name": "events-since-subscription-start", "valueString": since})
    for number, focus in events:
        parts: list[Json] = [{"name": "event-number", "valueString": number}]
        if focus:
            parts.append({"name": "focus", "valueReference": {"reference": focus}})
        parameters.append({"name": "notification-event", "part": parts})
    return {
        "resourceType": "Bundle",
        "type": "history",
        "entry": [{"resource": {"resourceType": "Parameters", "parameter": parameters}}],
    }


def test_an_id_only_notification_is_read() -> None:
    got = read_notification(notification("event-notification", "3", ("3", f"{BASE}/Task/9")))
    assert (got.subscription, got.type, got.events_since_start) == (
        "https://ehr/Subscription/s1",
        "event-notification",
        3,
    )
    assert [(e.number, e.focus, e.resource) for e in got.events] == [(3, f"{BASE}/Task/9", None)]


def test_a_full_resource_payload_is_matched_to_its_event() -> None:
    body = notification("event-notification", "1", ("1", f"{BASE}/Task/9/_history/2"))
    body["entry"].append(
        {"fullUrl": f"{BASE}/Task/9", "resource": {"resourceType": "Task", "id": "9"}}
    )
    got = read_notification(body)
    assert got.events[0].resource == {"resourceType": "Task", "id": "9"}
    assert type_and_id(f"{BASE}/Task/9/_history/2") == "Task/9"


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (lambda b: b.update(type="searchset"), "Bundle.type"),
        (
            lambda b: b["entry"][0]["resource"].update(resourceType="Basic"),
            "Bundle.entry[0].resource",
        ),
        (lambda b: b["entry"][0]["resource"]["parameter"].pop(0), "Parameters.parameter"),
        (
            lambda b: b["entry"][0]["resource"]["parameter"][2].update(valueCode="gossip"),
            "Parameters.parameter[2]",
        ),
        (
            lambda b: b["entry"][0]["resource"]["parameter"][3].update(valueString="-1"),
            "Parameters.parameter[3]",
        ),
        (
            lambda b: b["entry"][0]["resource"]["parameter"][4].update(part=[]),
            "Parameters.parameter[4].part",
        ),
    ],
)
def test_a_bad_notification_names_the_element(mutate: Any, where: str) -> None:
    body = notification("event-notification", "1", ("1", "Task/1"))
    mutate(body)
    with pytest.raises(ValidationError) as caught:
        read_notification(body)
    assert caught.value.outcome["issue"][0]["expression"] == [where]


# -- missed events --------------------------------------------------------------------------------


def seen(
    since: str,
    *numbers: str,
    kind: str = "event-notification",
    after: int | None = None,
    subscription: str = "https://ehr/Subscription/s1",
) -> tuple[bool, int | None]:
    cursor = EndpointCursor("ehr", subscription=subscription, events_seen=after)
    body = notification(kind, since, *((n, "Task/1") for n in numbers))
    gap, updated = _events_seen(cursor, read_notification(body))
    return gap, updated.events_seen


def test_consecutive_events_show_no_gap() -> None:
    assert seen("1", "1", after=0) == (False, 1)
    assert seen("4", "3", "4", after=2) == (False, 4)


def test_a_skipped_event_is_a_gap() -> None:
    assert seen("5", "5", after=3) == (True, 5)
    assert seen("2", "2", after=None) == (True, 2)


def test_heartbeats_show_events_that_never_came() -> None:
    assert seen("3", kind="heartbeat", after=3) == (False, 3)
    assert seen("4", kind="heartbeat", after=3) == (True, 4)
    assert seen("0", kind="handshake", after=None) == (False, 0)


def test_a_replayed_notification_is_no_gap_and_a_new_subscription_counts_afresh() -> None:
    assert seen("2", "2", after=5) == (False, 5)
    assert seen("1", "1", after=5, subscription="https://ehr/Subscription/old") == (False, 1)
