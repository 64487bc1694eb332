"""SMART goals and the invariants of the case aggregate, with the messages people see."""

from __future__ import annotations

from datetime import date
from typing import Any

import pydantic
import pytest

from cm_fhir.domain import Case, Code, Goal, Period, Range
from cm_fhir.domain import Task as Task_

SYSTEM = "http://loinc.org"
PERSON = {"kind": "Practitioner", "display": "Case manager"}


def _goal(**extra: Any) -> dict[str, Any]:
    return {
        "id": "g1",
        "description": "HbA1c below 7% within three months",
        "category": "clinical",
        "target": {
            "measure": {"system": SYSTEM, "code": "4548-4"},
            "range": {"high": {"value": "7", "unit": "%"}},
        },
        "due": "2026-06-01",
        **extra,
    }


def _task(task_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": task_id,
        "kind": "follow-up-call",
        "description": "Call",
        "owner": PERSON,
        "authored_on": "2026-03-01T09:00:00+00:00",
        "due": "2026-03-02T09:00:00+00:00",
        **extra,
    }


def _case(**extra: Any) -> dict[str, Any]:
    return {
        "id": "C-3",
        "patient": {"identifiers": [{"system": "urn:oid:1.2.3", "value": "M1"}]},
        "programme": "payer-case-management",
        "status": "active",
        "status_history": [{"status": "active", "start": "2026-03-01T09:00:00+00:00"}],
        **extra,
    }


def _message(document: dict[str, Any], model: type[pydantic.BaseModel] = Case) -> str:
    with pytest.raises(pydantic.ValidationError) as caught:
        model.model_validate(document)
    return str(caught.value.errors()[0]["msg"])


# ---------------------------------------------------------------- SMART goals


def test_smart_goal_with_a_range_target_is_valid() -> None:
    goal = Goal.model_validate(_goal(start="2026-03-01"))
    assert goal.target is not None
    assert goal.target.range is not None
    assert goal.due == date(2026, 6, 1)


def test_goal_needs_a_target_or_a_reason() -> None:
    assert _message(_goal(target=None), Goal) == (
        "Value error, a SMART goal needs a measurable target, "
        "or a qualitative_reason saying why not"
    )
    assert (
        Goal.model_validate(_goal(target=None, qualitative_reason="Self-reported")).target is None
    )


def test_goal_needs_a_due_date() -> None:
    document = _goal()
    del document["due"]
    with pytest.raises(pydantic.ValidationError) as caught:
        Goal.model_validate(document)
    assert caught.value.errors()[0]["loc"] == ("due",)


def test_goal_cannot_be_due_before_it_starts() -> None:
    assert (
        _message(_goal(start="2026-07-01"), Goal) == "Value error, the goal is due before it starts"
    )


@pytest.mark.parametrize(
    "target",
    [
        {"measure": {"system": SYSTEM, "code": "x"}},
        {"measure": {"system": SYSTEM, "code": "x"}, "text": "yes", "value": {"value": "1"}},
    ],
)
def test_goal_target_needs_exactly_one_detail(target: dict[str, Any]) -> None:
    assert _message(_goal(target=target), Goal) == (
        "Value error, a goal target needs exactly one of value, range or text"
    )


def test_range_bounds() -> None:
    assert _message({}, Range) == "Value error, a range needs a low or a high bound"
    assert _message({"low": {"value": "9"}, "high": {"value": "7"}}, Range) == (
        "Value error, the range's low bound is above its high bound"
    )


# ---------------------------------------------------------------- case invariants


@pytest.mark.parametrize(
    ("field", "items", "what"),
    [
        ("tasks", [_task("t1"), _task("t1")], "task"),
        ("goals", [_goal(), _goal()], "goal"),
    ],
)
def test_duplicate_ids(field: str, items: list[dict[str, Any]], what: str) -> None:
    assert (
        _message(_case(**{field: items}))
        == f"Value error, {what} id '{items[0]['id']}' is used twice"
    )


def test_task_names_an_absent_care_plan() -> None:
    assert _message(_case(tasks=[_task("t1", care_plan="plan")])) == (
        "Value error, 't1' names care plan 'plan', which is absent"
    )


def test_task_focuses_on_an_absent_goal() -> None:
    assert _message(_case(tasks=[_task("t1", focus_goal="g9")])) == (
        "Value error, task 't1' focuses on goal 'g9', absent"
    )


def test_care_plan_names_absent_goals() -> None:
    plan = {"id": "plan", "title": "Plan", "goals": ["g1", "g2"]}
    assert _message(_case(goals=[_goal()], care_plan=plan)) == (
        "Value error, the care plan names absent goals: ['g2']"
    )


def test_care_plan_and_discharge_plan_need_different_ids() -> None:
    plan = {"id": "plan", "title": "Plan"}
    discharge = {"id": "plan", "created": "2026-03-01T09:00:00+00:00"}
    assert _message(_case(care_plan=plan, discharge_plan=discharge)) == (
        "Value error, the care plan and the discharge plan need different ids"
    )


def test_status_history_must_end_in_the_current_status() -> None:
    history = [{"status": "referred", "start": "2026-03-01T09:00:00+00:00"}]
    assert _message(_case(status_history=history)) == (
        "Value error, the last status_history entry must be the current, open status"
    )


def test_status_history_periods_in_order() -> None:
    history = [
        {
            "status": "referred",
            "start": "2026-03-01T09:00:00+00:00",
            "end": "2026-03-03T09:00:00+00:00",
        },
        {"status": "active", "start": "2026-03-02T09:00:00+00:00"},
    ]
    assert _message(_case(status_history=history)) == (
        "Value error, status_history periods must be closed and in order"
    )
    backwards = [
        {
            "status": "referred",
            "start": "2026-03-03T09:00:00+00:00",
            "end": "2026-03-01T09:00:00+00:00",
        }
    ]
    assert _message(_case(status_history=[*backwards, history[1]])) == (
        "Value error, a status change ends before it starts"
    )


def test_closed_is_set_exactly_for_final_cases() -> None:
    assert _message(_case(closed="2026-03-05T09:00:00+00:00")) == (
        "Value error, 'closed' is set exactly when the case is closed or cancelled"
    )
    closed = [{"status": "closed", "start": "2026-03-01T09:00:00+00:00"}]
    assert _message(_case(status="closed", status_history=closed)) == (
        "Value error, 'closed' is set exactly when the case is closed or cancelled"
    )
    assert (
        _message(_case(status="closed", status_history=closed, closed="2026-02-01T09:00:00+00:00"))
        == "Value error, the case is closed before it was opened"
    )


def test_period_order() -> None:
    assert _message(
        {"start": "2026-03-02T09:00:00+00:00", "end": "2026-03-01T09:00:00+00:00"}, Period
    ) == ("Value error, the period ends before it starts")


def test_instants_need_an_offset() -> None:
    assert _message(_task("t1", due="2026-03-02T09:00:00"), Task_) == (
        "Value error, a timezone offset is required (e.g. 2026-03-01T08:00:00+00:00)"
    )


def test_empty_text_and_spaced_codes_are_refused() -> None:
    assert _message(_case(tasks=[_task("t1", business_status="  ")])) == (
        "String should have at least 1 character"
    )
    with pytest.raises(pydantic.ValidationError):
        Code(system=SYSTEM, code="4548  4")
    assert Code(system=SYSTEM, code="4548 4").code == "4548 4"
