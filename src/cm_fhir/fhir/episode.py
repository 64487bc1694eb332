"""Case <-> EpisodeOfCare, CareTeam and the intake referral ServiceRequest. Pure.

The EpisodeOfCare carries the case: its status (plus the finer case-management status in the
``cm-case-status`` extension, because ``active`` and ``transition`` share one FHIR status), the
status history, programme and models as ``type``, reasons as contained Conditions in ``diagnosis``,
case manager, team, managing organisation, the intake referral, and screening, outcome, coverage,
extra patient identifiers and encounters as extensions.
"""

from __future__ import annotations

from typing import Any

from cm_fhir.domain.assessment import OutcomeEvaluation, Screening
from cm_fhir.domain.case import FINAL_CASE_STATUSES as FINAL
from cm_fhir.domain.case import CareTeam, CareTeamMember, Case, Coverage, ReferralSource
from cm_fhir.domain.codes import CaseStatus, ClosingReason
from cm_fhir.domain.common import Code
from cm_fhir.errors import MappingError
from cm_fhir.fhir import datatypes as dt
from cm_fhir.fhir.context import (
    CaseContext,
    complex_extension,
    extensions,
    sub_value,
    sub_values,
)

Json = dict[str, Any]


def contained_conditions(ctx: CaseContext, prefix: str, codes: tuple[Code, ...]) -> list[Json]:
    return [
        {
            "resourceType": "Condition",
            "id": f"{prefix}-{i}",
            "code": dt.codeable(code),
            "subject": ctx.patient_ref(),
        }
        for i, code in enumerate(codes, start=1)
    ]


def parse_contained_conditions(resource: Json, refs: list[Json], path: str) -> tuple[Code, ...]:
    contained = {c.get("id"): c for c in resource.get("contained", [])}
    codes = []
    for i, ref in enumerate(refs):
        local = str(ref.get("reference", "")).lstrip("#")
        condition = contained.get(local)
        if condition is None or "code" not in condition:
            raise MappingError("reference to a missing contained Condition", path=f"{path}[{i}]")
        codes.append(dt.parse_codeable(condition["code"], f"{path}[{i}].code"))
    return tuple(codes)


def _case_status_ext(ctx: CaseContext, status: CaseStatus) -> Json:
    return {"url": ctx.registry.extension("case_status"), "valueCode": status.value}


def _screening(ctx: CaseContext, s: Screening) -> Json:
    return complex_extension(
        ctx.registry.extension("screening"),
        [
            ("date", "valueDateTime", dt.instant(s.performed)),
            ("eligible", "valueBoolean", s.eligible),
            *[("criterion", "valueCoding", dt.coding(c)) for c in s.criteria],
            ("note", "valueString", s.note),
        ],
    )


def _outcome(ctx: CaseContext, o: OutcomeEvaluation) -> Json:
    return complex_extension(
        ctx.registry.extension("outcome_evaluation"),
        [
            ("evaluatedOn", "valueDate", dt.day(o.evaluated_on)),
            ("goalsMet", "valueInteger", o.goals_met),
            ("goalsTotal", "valueInteger", o.goals_total),
            ("readmissions", "valueInteger", o.readmissions),
            ("edVisits", "valueInteger", o.ed_visits),
            ("summary", "valueString", o.summary),
            (
                "closingReason",
                "valueCoding",
                ctx.registry.coding("closing_reason", o.closing_reason.value)
                if o.closing_reason is not None
                else None,
            ),
        ],
    )


def _coverage(ctx: CaseContext, c: Coverage) -> Json:
    return complex_extension(
        ctx.registry.extension("coverage"),
        [
            ("payer", "valueReference", dt.reference(c.payer)),
            ("memberId", "valueString", c.member_id),
            ("plan", "valueString", c.plan),
        ],
    )


def episode_of_care(ctx: CaseContext, case: Case) -> Json:
    reg = ctx.registry
    out = ctx.head("EpisodeOfCare", ctx.id_for("EpisodeOfCare", "case"), "episode_of_care")
    if case.reasons:
        out["contained"] = contained_conditions(ctx, "dx", case.reasons)
    ext = [_case_status_ext(ctx, case.status)]
    if case.screening is not None:
        ext.append(_screening(ctx, case.screening))
    if case.outcome is not None:
        ext.append(_outcome(ctx, case.outcome))
    ext += [_coverage(ctx, c) for c in case.coverage]
    ext += [
        {"url": reg.extension("patient_identifier"), "valueIdentifier": dt.identifier(i)}
        for i in case.patient.identifiers[1:]
    ]
    ext += [
        {
            "url": reg.extension("encounter"),
            "valueReference": {"type": "Encounter", "identifier": dt.identifier(e)},
        }
        for e in case.encounters
    ]
    if case.next_review is not None:
        ext.append({"url": reg.extension("next_review"), "valueDate": dt.day(case.next_review)})
    out["extension"] = ext
    out["identifier"] = [ctx.identifier("case")]
    out["status"] = reg.case_status_to_fhir[case.status]
    history = []
    for change in case.status_history:
        period = {"start": dt.instant(change.start)}
        if change.end is not None:
            period["end"] = dt.instant(change.end)
        history.append(
            {
                "extension": [_case_status_ext(ctx, change.status)],
                "status": reg.case_status_to_fhir[change.status],
                "period": period,
            }
        )
    out["statusHistory"] = history
    out["type"] = [{"coding": [reg.coding("programme", case.programme)]}] + [
        {"coding": [reg.coding("case_management_model", m)]} for m in case.models
    ]
    if case.reasons:
        out["diagnosis"] = [
            {"condition": {"reference": f"#dx-{i}"}, "rank": i}
            for i in range(1, len(case.reasons) + 1)
        ]
    out["patient"] = ctx.patient_ref()
    if case.managing_organization is not None:
        out["managingOrganization"] = dt.reference(case.managing_organization)
    period = {"start": dt.instant(case.opened)}
    if case.closed is not None:
        period["end"] = dt.instant(case.closed)
    out["period"] = period
    if case.referral_source is not None:
        out["referralRequest"] = [ctx.ref("ServiceRequest", "referral")]
    if case.case_manager is not None:
        out["careManager"] = dt.reference(case.case_manager)
    if case.care_team is not None:
        out["team"] = [ctx.ref("CareTeam", "care_team", case.care_team.id)]
    return out


def care_team(ctx: CaseContext, team: CareTeam, case_status: CaseStatus) -> Json:
    out = ctx.head("CareTeam", ctx.id_for("CareTeam", "care_team", team.id), "care_team")
    out["extension"] = [ctx.episode_extension()]
    out["identifier"] = [ctx.identifier("care_team", team.id)]
    out["status"] = _void_or(case_status, "inactive" if case_status in FINAL else "active")
    if team.name is not None:
        out["name"] = team.name
    out["subject"] = ctx.patient_ref()
    if team.members:  # no empty arrays in R4 JSON: a team without members has no participant
        out["participant"] = [
            {"role": [dt.codeable(m.role)], "member": dt.reference(m.party)} for m in team.members
        ]
    return out


def _void_or(case_status: CaseStatus, status: str) -> str:
    """``entered-in-error`` for every resource of a case entered in error, else ``status``."""
    return "entered-in-error" if case_status == CaseStatus.ENTERED_IN_ERROR else status


def intake_referral(ctx: CaseContext, source: ReferralSource, case: Case) -> Json:
    """The referral into case management (EpisodeOfCare.referralRequest)."""
    pending = case.status in (CaseStatus.REFERRED, CaseStatus.SCREENING)
    out = ctx.head(
        "ServiceRequest", ctx.id_for("ServiceRequest", "referral"), "referral_service_request"
    )
    out["extension"] = [ctx.episode_extension()]
    out["identifier"] = [ctx.identifier("referral")]
    out["status"] = _void_or(case.status, "active" if pending else "completed")
    out["intent"] = "order"
    out["category"] = [{"coding": [ctx.registry.coding("referral_type", "case-management")]}]
    out["subject"] = ctx.patient_ref()
    out["authoredOn"] = dt.instant(source.received)
    if source.party is not None:
        out["requester"] = dt.reference(source.party)
    if source.reasons:
        out["reasonCode"] = [dt.codeable(r) for r in source.reasons]
    if source.note is not None:
        out["note"] = [{"text": source.note}]
    return out


# ---------------------------------------------------------------- reverse direction


def parse_case_head(ctx: CaseContext, eoc: Json) -> dict[str, Any]:
    """The case fields an EpisodeOfCare holds (everything but the linked resources)."""
    reg = ctx.registry
    path = "EpisodeOfCare"
    status_url = reg.extension("case_status")
    reverse = {fhir: dom for dom, fhir in reversed(reg.case_status_to_fhir.items())}

    def status_of(element: Json, where: str) -> CaseStatus:
        ext = extensions(element, status_url)
        if ext:
            return CaseStatus(ext[0]["valueCode"])
        if element.get("status") not in reverse:
            raise MappingError("unknown episode-of-care status", path=f"{where}.status")
        return reverse[element["status"]]

    history = []
    for i, item in enumerate(eoc.get("statusHistory", [])):
        where = f"{path}.statusHistory[{i}]"
        period = item.get("period", {})
        history.append(
            {
                "status": status_of(item, where),
                "start": dt.parse_instant(period.get("start"), f"{where}.period.start"),
                "end": dt.parse_instant(period["end"], f"{where}.period.end")
                if "end" in period
                else None,
            }
        )
    if not history:
        start = eoc.get("period", {}).get("start")
        history = [{"status": status_of(eoc, path), "start": dt.parse_instant(start, path)}]
    programme, models = None, []
    for i, concept in enumerate(eoc.get("type", [])):
        coding = concept.get("coding", [{}])[0]
        if coding.get("system") == reg.code_systems["programme"].url:
            programme = coding["code"]
        elif coding.get("system") == reg.code_systems["case_management_model"].url:
            models.append(coding["code"])
        else:
            raise MappingError("unknown case type coding", path=f"{path}.type[{i}]")
    head: dict[str, Any] = {
        "status": status_of(eoc, path),
        "status_history": history,
        "programme": programme,
        "models": tuple(models),
        "reasons": parse_contained_conditions(
            eoc, [d["condition"] for d in eoc.get("diagnosis", [])], f"{path}.diagnosis"
        ),
    }
    end = eoc.get("period", {}).get("end")
    head["closed"] = dt.parse_instant(end, f"{path}.period.end") if end else None
    for key, field in (
        ("careManager", "case_manager"),
        ("managingOrganization", "managing_organization"),
    ):
        if key in eoc:
            head[field] = dt.parse_reference(eoc[key], f"{path}.{key}")
    head.update(_parse_extensions(ctx, eoc))
    return head


def _parse_extensions(ctx: CaseContext, eoc: Json) -> dict[str, Any]:
    reg = ctx.registry
    out: dict[str, Any] = {}
    for ext in extensions(eoc, reg.extension("screening")):
        out["screening"] = Screening(
            performed=dt.parse_instant(sub_value(ext, "date", "valueDateTime"), "screening.date"),
            eligible=sub_value(ext, "eligible", "valueBoolean"),
            criteria=tuple(
                dt.parse_coding(c, "screening.criterion")
                for c in sub_values(ext, "criterion", "valueCoding")
            ),
            note=sub_value(ext, "note", "valueString"),
        )
    for ext in extensions(eoc, reg.extension("outcome_evaluation")):
        out["outcome"] = OutcomeEvaluation(
            evaluated_on=dt.parse_day(sub_value(ext, "evaluatedOn", "valueDate"), "outcome"),
            goals_met=sub_value(ext, "goalsMet", "valueInteger"),
            goals_total=sub_value(ext, "goalsTotal", "valueInteger"),
            readmissions=sub_value(ext, "readmissions", "valueInteger"),
            ed_visits=sub_value(ext, "edVisits", "valueInteger"),
            summary=sub_value(ext, "summary", "valueString"),
            closing_reason=_closing_reason(sub_value(ext, "closingReason", "valueCoding")),
        )
    out["coverage"] = tuple(
        Coverage(
            payer=dt.parse_reference(sub_value(ext, "payer", "valueReference"), "coverage.payer"),
            member_id=sub_value(ext, "memberId", "valueString"),
            plan=sub_value(ext, "plan", "valueString"),
        )
        for ext in extensions(eoc, reg.extension("coverage"))
    )
    out["extra_identifiers"] = tuple(
        dt.parse_identifier(ext["valueIdentifier"], "patient-identifier")
        for ext in extensions(eoc, reg.extension("patient_identifier"))
    )
    out["encounters"] = tuple(
        dt.parse_identifier(ext["valueReference"]["identifier"], "encounter")
        for ext in extensions(eoc, reg.extension("encounter"))
    )
    for ext in extensions(eoc, reg.extension("next_review")):
        out["next_review"] = dt.parse_day(ext.get("valueDate"), "next-review")
    return out


def _closing_reason(coding: Json | None) -> ClosingReason | None:
    if coding is None:
        return None
    return ClosingReason(dt.parse_coding(coding, "outcome.closingReason").code)


def parse_care_team(resource: Json, local_id: str) -> CareTeam:
    members = tuple(
        CareTeamMember(
            role=dt.parse_codeable(p["role"][0], f"CareTeam.participant[{i}].role"),
            party=dt.parse_reference(p["member"], f"CareTeam.participant[{i}].member"),
        )
        for i, p in enumerate(resource.get("participant", []))
    )
    return CareTeam(id=local_id, name=resource.get("name"), members=members)


def parse_intake_referral(resource: Json) -> ReferralSource:
    path = "ServiceRequest"
    requester = resource.get("requester")
    return ReferralSource(
        party=dt.parse_reference(requester, f"{path}.requester") if requester else None,
        received=dt.parse_instant(resource.get("authoredOn"), f"{path}.authoredOn"),
        reasons=tuple(
            dt.parse_codeable(r, f"{path}.reasonCode[{i}]")
            for i, r in enumerate(resource.get("reasonCode", []))
        ),
        note=resource["note"][0]["text"] if resource.get("note") else None,
    )
