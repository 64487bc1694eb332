"""Tasks, assessments, referrals and risk <-> Task, ServiceRequest and RiskAssessment. Pure.

Interventions and assessments are Tasks tied to the case with the core ``workflow-episodeOfCare``
extension; the due date is ``restriction.period.end``, a start (``not_before``) its ``start``. A
referral follows the Gravity SDOH pattern: a ServiceRequest plus a fulfilment Task (intent
``order``, code ``fulfill``, focus the request, owner the performer) whose status closes the loop.
"""

from __future__ import annotations

from typing import Any

from cm_fhir.domain.assessment import Assessment, RiskEvaluation, Strength
from cm_fhir.domain.codes import (
    AssessmentKind,
    AssessmentStatus,
    PlanStatus,
    Priority,
    RiskLevel,
    TaskIntent,
    TaskStatus,
)
from cm_fhir.domain.referral import Referral
from cm_fhir.domain.task import Task
from cm_fhir.fhir import datatypes as dt
from cm_fhir.fhir.context import CaseContext
from cm_fhir.mapping.registry import assessment_task_code

Json = dict[str, Any]
TASK_CODE_FHIR = "http://hl7.org/fhir/CodeSystem/task-code"
RISK_PROBABILITY = "http://terminology.hl7.org/CodeSystem/risk-probability"
FULFILMENT = "fulfilment"


def _due(when: Any, start: Any = None) -> Json:
    period = {"end": dt.instant(when)}
    if start is not None:
        period["start"] = dt.instant(start)
    return {"period": period}


def task(ctx: CaseContext, t: Task) -> Json:
    out = ctx.head("Task", ctx.id_for("Task", "task", t.id), "task")
    out["extension"] = [ctx.episode_extension()]
    out["identifier"] = [ctx.identifier("task", t.id)]
    if t.care_plan is not None:
        out["basedOn"] = [ctx.ref("CarePlan", "care_plan", t.care_plan)]
    out["status"] = t.status.value
    if t.status_reason is not None:
        out["statusReason"] = {"text": t.status_reason}
    if t.business_status is not None:
        out["businessStatus"] = {"text": t.business_status}
    out["intent"] = t.intent.value
    out["priority"] = t.priority.value
    out["code"] = {"coding": [ctx.registry.coding("task_code", t.kind)]}
    out["description"] = t.description
    if t.focus_goal is not None:
        out["focus"] = ctx.ref("Goal", "goal", t.focus_goal)
    out["for"] = ctx.patient_ref()
    if t.completed_at is not None:
        out["executionPeriod"] = {"end": dt.instant(t.completed_at)}
    out["authoredOn"] = dt.instant(t.authored_on)
    if t.requester is not None:
        out["requester"] = dt.reference(t.requester)
    out["owner"] = dt.reference(t.owner)
    if t.notes:
        out["note"] = [{"text": n} for n in t.notes]
    out["restriction"] = _due(t.due, t.not_before)
    return out


def assessment(ctx: CaseContext, a: Assessment) -> Json:
    code = assessment_task_code(a.kind)
    out = ctx.head("Task", ctx.id_for("Task", "assessment", a.id), "task")
    out["extension"] = [ctx.episode_extension()]
    out["identifier"] = [ctx.identifier("assessment", a.id)]
    out["status"] = ctx.registry.assessment_status_to_task[a.status]
    out["intent"] = "order"
    out["priority"] = "routine"
    coding = ctx.registry.coding("task_code", code)
    out["code"] = {"coding": [coding]}
    out["description"] = coding["display"]
    out["for"] = ctx.patient_ref()
    out["authoredOn"] = dt.instant(a.requested)
    out["owner"] = dt.reference(a.performer)
    out["restriction"] = _due(a.due)
    outputs = []
    if a.summary is not None:
        outputs.append({"type": {"text": "summary"}, "valueString": a.summary})
    outputs += [{"type": {"text": "finding"}, "valueString": f} for f in a.findings]
    outputs += [
        {"id": s.id, "type": {"text": "strength"}, "valueString": s.description}
        for s in a.strengths
    ]
    if outputs:
        out["output"] = outputs
    return out


def referral_request(ctx: CaseContext, r: Referral) -> Json:
    rid = ctx.id_for("ServiceRequest", "referral", r.id)
    out = ctx.head("ServiceRequest", rid, "referral_service_request")
    out["extension"] = [ctx.episode_extension()]
    out["identifier"] = [ctx.identifier("referral", r.id)]
    if r.care_plan is not None:
        out["basedOn"] = [ctx.ref("CarePlan", "care_plan", r.care_plan)]
    out["status"] = r.status.value
    out["intent"] = "order"
    out["category"] = [{"coding": [ctx.registry.coding("referral_type", r.type)]}]
    out["priority"] = r.priority.value
    if r.service is not None:
        out["code"] = dt.codeable(r.service)
    out["subject"] = ctx.patient_ref()
    out["occurrenceDateTime"] = dt.instant(r.due)
    out["authoredOn"] = dt.instant(r.authored_on)
    if r.requester is not None:
        out["requester"] = dt.reference(r.requester)
    out["performer"] = [dt.reference(r.performer)]
    if r.reasons:
        out["reasonCode"] = [dt.codeable(c) for c in r.reasons]
    if r.note is not None:
        out["note"] = [{"text": r.note}]
    return out


def referral_task(ctx: CaseContext, r: Referral) -> Json:
    out = ctx.head("Task", ctx.id_for("Task", "task", r.id, FULFILMENT), "referral_task")
    out["extension"] = [ctx.episode_extension()]
    out["identifier"] = [ctx.identifier("task", r.id, FULFILMENT)]
    out["status"] = r.fulfilment_status.value
    if r.fulfilment_business_status is not None:
        out["businessStatus"] = {"text": r.fulfilment_business_status}
    out["intent"] = "order"
    out["priority"] = r.priority.value
    out["code"] = {"coding": [{"system": TASK_CODE_FHIR, "code": "fulfill"}]}
    out["focus"] = ctx.ref("ServiceRequest", "referral", r.id)
    out["for"] = ctx.patient_ref()
    out["authoredOn"] = dt.instant(r.authored_on)
    if r.requester is not None:
        out["requester"] = dt.reference(r.requester)
    out["owner"] = dt.reference(r.performer)
    out["restriction"] = _due(r.due)
    return out


def risk_assessment(ctx: CaseContext, risk: RiskEvaluation) -> Json:
    rid = ctx.id_for("RiskAssessment", "risk_assessment", risk.id)
    out = ctx.head("RiskAssessment", rid, "risk_assessment")
    out["identifier"] = [ctx.identifier("risk_assessment", risk.id)]
    out["status"] = "final"
    out["subject"] = ctx.patient_ref()
    out["occurrenceDateTime"] = dt.instant(risk.evaluated)
    if risk.performer is not None:
        out["performer"] = dt.reference(risk.performer)
    if risk.drivers:
        out["reasonCode"] = [dt.codeable(c) for c in risk.drivers]
    prediction: Json = {
        "qualitativeRisk": {"coding": [{"system": RISK_PROBABILITY, "code": risk.level.value}]}
    }
    if risk.score is not None:
        prediction["probabilityDecimal"] = dt.number(risk.score)
    out["prediction"] = [prediction]
    if risk.note is not None:
        out["note"] = [{"text": risk.note}]
    return out


# ---------------------------------------------------------------- reverse direction


def _due_of(resource: Json, path: str) -> Any:
    end = resource.get("restriction", {}).get("period", {}).get("end")
    return dt.parse_instant(end, f"{path}.restriction.period.end")


def _start_of(resource: Json, path: str) -> Any:
    start = resource.get("restriction", {}).get("period", {}).get("start")
    return dt.parse_instant(start, f"{path}.restriction.period.start") if start else None


def _party(resource: Json, key: str, path: str) -> Any:
    value = resource.get(key)
    return dt.parse_reference(value, f"{path}.{key}") if value else None


def parse_task(resource: Json, local_id: str, plan_id: str | None, goal_id: str | None) -> Task:
    path = f"Task[{local_id}]"
    business = resource.get("businessStatus")
    reason = resource.get("statusReason")
    ended = resource.get("executionPeriod", {}).get("end")
    return Task(
        id=local_id,
        kind=resource["code"]["coding"][0]["code"],
        description=resource.get("description", ""),
        status=TaskStatus(resource["status"]),
        intent=TaskIntent(resource["intent"]),
        priority=Priority(resource.get("priority", "routine")),
        owner=dt.parse_reference(resource.get("owner", {}), f"{path}.owner"),
        requester=_party(resource, "requester", path),
        authored_on=dt.parse_instant(resource.get("authoredOn"), f"{path}.authoredOn"),
        not_before=_start_of(resource, path),
        due=_due_of(resource, path),
        business_status=business.get("text") if business else None,
        status_reason=reason.get("text") if reason else None,
        completed_at=dt.parse_instant(ended, f"{path}.executionPeriod.end") if ended else None,
        care_plan=plan_id,
        focus_goal=goal_id,
        notes=tuple(n["text"] for n in resource.get("note", [])),
    )


def parse_assessment(ctx: CaseContext, resource: Json, local_id: str) -> Assessment:
    path = f"Task[{local_id}]"
    code = resource["code"]["coding"][0]["code"]
    kind = next(k for k in AssessmentKind if assessment_task_code(k) == code)
    reverse = {v: k for k, v in ctx.registry.assessment_status_to_task.items()}
    outputs = resource.get("output", [])
    summaries = [o["valueString"] for o in outputs if o.get("type", {}).get("text") == "summary"]
    return Assessment(
        id=local_id,
        kind=kind,
        status=reverse.get(resource["status"], AssessmentStatus.REQUESTED),
        requested=dt.parse_instant(resource.get("authoredOn"), f"{path}.authoredOn"),
        due=_due_of(resource, path),
        performer=dt.parse_reference(resource.get("owner", {}), f"{path}.owner"),
        summary=summaries[0] if summaries else None,
        findings=tuple(
            o["valueString"] for o in outputs if o.get("type", {}).get("text") == "finding"
        ),
        strengths=tuple(
            Strength(id=o["id"], description=o["valueString"])
            for o in outputs
            if o.get("type", {}).get("text") == "strength"
        ),
    )


def parse_referral(
    request: Json, fulfilment: Json | None, local_id: str, plan_id: str | None
) -> Referral:
    path = f"ServiceRequest[{local_id}]"
    business = (fulfilment or {}).get("businessStatus")
    return Referral(
        id=local_id,
        type=request["category"][0]["coding"][0]["code"],
        service=dt.parse_codeable(request["code"], f"{path}.code") if "code" in request else None,
        status=PlanStatus(request["status"]),
        priority=Priority(request.get("priority", "routine")),
        performer=dt.parse_reference(request["performer"][0], f"{path}.performer[0]"),
        requester=_party(request, "requester", path),
        authored_on=dt.parse_instant(request.get("authoredOn"), f"{path}.authoredOn"),
        due=dt.parse_instant(request.get("occurrenceDateTime"), f"{path}.occurrenceDateTime"),
        reasons=tuple(
            dt.parse_codeable(c, f"{path}.reasonCode[{i}]")
            for i, c in enumerate(request.get("reasonCode", []))
        ),
        note=request["note"][0]["text"] if request.get("note") else None,
        care_plan=plan_id,
        fulfilment_status=TaskStatus(fulfilment["status"]) if fulfilment else TaskStatus.REQUESTED,
        fulfilment_business_status=business.get("text") if business else None,
    )


def parse_risk(resource: Json, local_id: str) -> RiskEvaluation:
    path = f"RiskAssessment[{local_id}]"
    prediction = (resource.get("prediction") or [{}])[0]
    score = prediction.get("probabilityDecimal")
    return RiskEvaluation(
        id=local_id,
        evaluated=dt.parse_instant(
            resource.get("occurrenceDateTime"), f"{path}.occurrenceDateTime"
        ),
        level=RiskLevel(prediction["qualitativeRisk"]["coding"][0]["code"]),
        score=dt.parse_number(score, f"{path}.prediction") if score is not None else None,
        drivers=tuple(
            dt.parse_codeable(c, f"{path}.reasonCode[{i}]")
            for i, c in enumerate(resource.get("reasonCode", []))
        ),
        performer=_party(resource, "performer", path),
        note=resource["note"][0]["text"] if resource.get("note") else None,
    )
