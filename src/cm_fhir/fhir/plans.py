"""Goals and care plans <-> Goal and CarePlan. Pure.

Care plans point at their work with ``activity.reference`` (a Task or ServiceRequest), never
``activity.detail``: R5 removed ``detail`` and the MCC eCare Plan IG forbids it. The discharge plan
is a second CarePlan in the ``discharge-plan`` category whose specifics (expected date, disposition,
post-acute provider, needs, barriers, follow-up) sit in the ``cm-discharge-plan`` extension.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cm_fhir.domain.case import Case
from cm_fhir.domain.codes import (
    GoalAchievement,
    GoalLifecycle,
    GoalPriority,
    PlanStatus,
)
from cm_fhir.domain.plan import CarePlan, Goal, GoalTarget
from cm_fhir.domain.referral import DischargeNeedItem, DischargePlan
from cm_fhir.errors import MappingError
from cm_fhir.fhir import datatypes as dt
from cm_fhir.fhir.context import (
    CaseContext,
    complex_extension,
    extensions,
    narrative,
    sub_value,
    sub_values,
)
from cm_fhir.fhir.episode import contained_conditions, parse_contained_conditions

Json = dict[str, Any]
ACHIEVEMENT = "http://terminology.hl7.org/CodeSystem/goal-achievement"
GOAL_PRIORITY = "http://terminology.hl7.org/CodeSystem/goal-priority"
US_CORE_CAREPLAN_CATEGORY = "http://hl7.org/fhir/us/core/CodeSystem/careplan-category"


#: The Goal.note of a strength the goal builds on: its id is this prefix and the strength's id.
STRENGTH_NOTE_PREFIX = "strength-"


def goal(ctx: CaseContext, g: Goal, strengths: Mapping[str, str] | None = None) -> Json:
    """The Goal; ``strengths`` (id -> description) word the notes of the strengths it builds on."""
    out = ctx.head("Goal", ctx.id_for("Goal", "goal", g.id), "goal")
    if g.addresses:
        out["contained"] = contained_conditions(ctx, "addr", g.addresses)
    if g.qualitative_reason is not None:
        url = ctx.registry.extension("goal_qualitative_reason")
        out["extension"] = [{"url": url, "valueString": g.qualitative_reason}]
    out["identifier"] = [ctx.identifier("goal", g.id)]
    out["lifecycleStatus"] = g.lifecycle.value
    if g.achievement is not None:
        out["achievementStatus"] = {
            "coding": [{"system": ACHIEVEMENT, "code": g.achievement.value}]
        }
    out["category"] = [{"coding": [ctx.registry.coding("goal_category", g.category)]}]
    out["priority"] = {"coding": [{"system": GOAL_PRIORITY, "code": g.priority.value}]}
    out["description"] = {"text": g.description}
    out["subject"] = ctx.patient_ref()
    if g.start is not None:
        out["startDate"] = dt.day(g.start)
    target: Json = {}
    if g.target is not None:
        target["measure"] = dt.codeable(g.target.measure)
        if g.target.value is not None:
            target["detailQuantity"] = dt.quantity(g.target.value)
        elif g.target.range is not None:
            target["detailRange"] = dt.range_(g.target.range)
        else:
            target["detailString"] = g.target.text
    target["dueDate"] = dt.day(g.due)
    out["target"] = [target]
    if g.expressed_by is not None:
        out["expressedBy"] = dt.reference(g.expressed_by)
    if g.addresses:
        out["addresses"] = [{"reference": f"#addr-{i}"} for i in range(1, len(g.addresses) + 1)]
    if g.builds_on:
        known = strengths or {}
        out["note"] = [
            {
                "id": f"{STRENGTH_NOTE_PREFIX}{sid}",
                "text": f"Builds on the patient's strength: {known.get(sid, sid)}",
            }
            for sid in g.builds_on
        ]
    return out


def _activities(ctx: CaseContext, case: Case, plan_id: str) -> list[Json]:
    refs = [
        {"reference": ctx.ref("Task", "task", t.id)} for t in case.tasks if t.care_plan == plan_id
    ]
    refs += [
        {"reference": ctx.ref("ServiceRequest", "referral", r.id)}
        for r in case.referrals
        if r.care_plan == plan_id
    ]
    return refs


def _plan_head(ctx: CaseContext, case: Case, plan_id: str, category: str, title: str) -> Json:
    out = ctx.head("CarePlan", ctx.id_for("CarePlan", "care_plan", plan_id), "care_plan")
    out["text"] = narrative(title)
    out["extension"] = [ctx.episode_extension()]
    out["identifier"] = [ctx.identifier("care_plan", plan_id)]
    out["_category"] = [
        {"coding": [ctx.registry.coding("care_plan_category", category)]},
        {"coding": [{"system": US_CORE_CAREPLAN_CATEGORY, "code": "assess-plan"}]},
    ]
    return out


def _finish(out: Json, ctx: CaseContext, case: Case, plan_id: str) -> Json:
    activities = _activities(ctx, case, plan_id)
    if activities:
        out["activity"] = activities
    return out


def care_plan(ctx: CaseContext, case: Case, plan: CarePlan) -> Json:
    out = _plan_head(ctx, case, plan.id, "case-management", plan.title)
    category = out.pop("_category")
    out["status"] = plan.status.value
    out["intent"] = "plan"
    out["category"] = category
    out["title"] = plan.title
    if plan.description is not None:
        out["description"] = plan.description
    out["subject"] = ctx.patient_ref()
    if plan.period is not None:
        period = {"start": dt.instant(plan.period.start)}
        if plan.period.end is not None:
            period["end"] = dt.instant(plan.period.end)
        out["period"] = period
    if plan.author is not None:
        out["author"] = dt.reference(plan.author)
    if case.care_team is not None:
        out["careTeam"] = [ctx.ref("CareTeam", "care_team", case.care_team.id)]
    if plan.goals:
        out["goal"] = [ctx.ref("Goal", "goal", g) for g in plan.goals]
    return _finish(out, ctx, case, plan.id)


def discharge_care_plan(ctx: CaseContext, case: Case, plan: DischargePlan) -> Json:
    out = _plan_head(ctx, case, plan.id, "discharge-plan", "Discharge plan")
    category = out.pop("_category")
    reg = ctx.registry
    provider = plan.post_acute_provider
    expected = dt.day(plan.expected_discharge) if plan.expected_discharge else None
    disposition = (
        reg.coding("discharge_disposition", plan.disposition) if plan.disposition else None
    )
    provider_ref = dt.reference(provider) if provider else None
    parts: list[tuple[str, str, Any]] = [
        ("expectedDate", "valueDate", expected),
        ("disposition", "valueCoding", disposition),
        ("postAcuteProvider", "valueReference", provider_ref),
        *[_need(ctx, n) for n in plan.needs],
        *[("barrier", "valueString", b) for b in plan.barriers],
        *[("followUp", "valueString", f) for f in plan.follow_up],
    ]
    specifics = complex_extension(reg.extension("discharge_plan"), parts)
    if specifics["extension"]:  # ext-1: a plan with no specifics yet has no extension at all
        out["extension"].append(specifics)
    out["status"] = plan.status.value
    out["intent"] = "plan"
    out["category"] = category
    out["title"] = "Discharge plan"
    out["subject"] = ctx.patient_ref()
    out["created"] = dt.instant(plan.created)
    if plan.author is not None:
        out["author"] = dt.reference(plan.author)
    if case.care_team is not None:
        out["careTeam"] = [ctx.ref("CareTeam", "care_team", case.care_team.id)]
    return _finish(out, ctx, case, plan.id)


def _need(ctx: CaseContext, item: DischargeNeedItem) -> tuple[str, str, Any]:
    concept: Json = {"coding": [ctx.registry.coding("discharge_need", item.need)]}
    if item.detail is not None:
        concept["text"] = item.detail
    return ("need", "valueCodeableConcept", concept)


# ---------------------------------------------------------------- reverse direction


def parse_goal(resource: Json, local_id: str) -> Goal:
    path = f"Goal[{local_id}]"
    target_data = (resource.get("target") or [{}])[0]
    target = None
    if "measure" in target_data:
        target = GoalTarget(
            measure=dt.parse_codeable(target_data["measure"], f"{path}.target.measure"),
            value=dt.parse_quantity(target_data["detailQuantity"], f"{path}.target")
            if "detailQuantity" in target_data
            else None,
            range=dt.parse_range(target_data["detailRange"], f"{path}.target")
            if "detailRange" in target_data
            else None,
            text=target_data.get("detailString"),
        )
    reasons = [e.get("valueString") for e in resource.get("extension", []) if "valueString" in e]
    achievement = resource.get("achievementStatus")
    expressed = resource.get("expressedBy")
    return Goal(
        id=local_id,
        description=resource.get("description", {}).get("text", ""),
        category=resource["category"][0]["coding"][0]["code"],
        target=target,
        qualitative_reason=reasons[0] if reasons else None,
        start=dt.parse_day(resource["startDate"], f"{path}.startDate")
        if "startDate" in resource
        else None,
        due=dt.parse_day(target_data.get("dueDate"), f"{path}.target.dueDate"),
        lifecycle=GoalLifecycle(resource["lifecycleStatus"]),
        achievement=GoalAchievement(achievement["coding"][0]["code"]) if achievement else None,
        priority=GoalPriority(resource["priority"]["coding"][0]["code"]),
        expressed_by=dt.parse_reference(expressed, f"{path}.expressedBy") if expressed else None,
        addresses=parse_contained_conditions(
            resource, resource.get("addresses", []), f"{path}.addresses"
        ),
        builds_on=tuple(
            note["id"].removeprefix(STRENGTH_NOTE_PREFIX)
            for note in resource.get("note", [])
            if str(note.get("id", "")).startswith(STRENGTH_NOTE_PREFIX)
        ),
    )


def plan_category(ctx: CaseContext, resource: Json) -> str:
    system = ctx.registry.code_systems["care_plan_category"].url
    for concept in resource.get("category", []):
        for coding in concept.get("coding", []):
            if coding.get("system") == system:
                return str(coding.get("code"))
    raise MappingError("care plan lacks a case-management category", path="CarePlan.category")


def parse_care_plan(resource: Json, local_id: str, goal_ids: list[str]) -> CarePlan:
    path = f"CarePlan[{local_id}]"
    period = resource.get("period")
    author = resource.get("author")
    return CarePlan.model_validate(
        {
            "id": local_id,
            "title": resource.get("title"),
            "description": resource.get("description"),
            "status": PlanStatus(resource["status"]),
            "period": {
                "start": dt.parse_instant(period.get("start"), f"{path}.period.start"),
                "end": dt.parse_instant(period["end"], f"{path}.period.end")
                if "end" in period
                else None,
            }
            if period
            else None,
            "author": dt.parse_reference(author, f"{path}.author") if author else None,
            "goals": tuple(goal_ids),
        }
    )


def parse_discharge_plan(ctx: CaseContext, resource: Json, local_id: str) -> DischargePlan:
    path = f"CarePlan[{local_id}]"
    ext = extensions(resource, ctx.registry.extension("discharge_plan"))
    data: Json = ext[0] if ext else {}
    expected = sub_value(data, "expectedDate", "valueDate")
    disposition = sub_value(data, "disposition", "valueCoding")
    provider = sub_value(data, "postAcuteProvider", "valueReference")
    needs = [
        DischargeNeedItem(need=concept["coding"][0]["code"], detail=concept.get("text"))
        for concept in sub_values(data, "need", "valueCodeableConcept")
    ]
    author = resource.get("author")
    return DischargePlan(
        id=local_id,
        status=PlanStatus(resource["status"]),
        expected_discharge=dt.parse_day(expected, f"{path}.expectedDate") if expected else None,
        disposition=disposition["code"] if disposition else None,
        post_acute_provider=dt.parse_reference(provider, f"{path}.postAcuteProvider")
        if provider
        else None,
        needs=tuple(needs),
        barriers=tuple(sub_values(data, "barrier", "valueString")),
        follow_up=tuple(sub_values(data, "followUp", "valueString")),
        created=dt.parse_instant(resource.get("created"), f"{path}.created"),
        author=dt.parse_reference(author, f"{path}.author") if author else None,
    )
