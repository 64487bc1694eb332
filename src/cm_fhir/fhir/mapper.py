"""Case <-> the FHIR R4 resources that carry it, in both directions. Pure.

``case_to_resources`` gives the resources of one case in a fixed order (EpisodeOfCare, intake
ServiceRequest, CareTeam, Goals, CarePlans, assessments, Tasks, referrals, RiskAssessment).
``resources_to_case`` reads them back; for everything the domain holds the round trip is lossless,
which a property test checks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import pydantic

from cm_fhir.domain.case import Case
from cm_fhir.domain.common import PatientRef
from cm_fhir.errors import MappingError
from cm_fhir.fhir import datatypes as dt
from cm_fhir.fhir import episode, plans, work
from cm_fhir.fhir.context import CaseContext, ReferenceStyle, reference_id
from cm_fhir.fhir.ids import split_local_value
from cm_fhir.fhir.work import FULFILMENT
from cm_fhir.mapping.registry import MappingRegistry, default_registry

Json = dict[str, Any]
_T = TypeVar("_T")


def case_to_resources(
    case: Case,
    registry: MappingRegistry | None = None,
    style: ReferenceStyle = ReferenceStyle.URN_UUID,
) -> list[Json]:
    """Every FHIR resource of one case, as plain dicts, in a deterministic order.

    ``registry``: the mappings to use; None (the default) means the bundled ones.
    """
    ctx = CaseContext(registry or default_registry(), case.id, case.patient, style)
    out = [episode.episode_of_care(ctx, case)]
    if case.referral_source is not None:
        out.append(episode.intake_referral(ctx, case.referral_source, case))
    if case.care_team is not None:
        out.append(episode.care_team(ctx, case.care_team, case.status))
    strengths = {s.id: s.description for a in case.assessments for s in a.strengths}
    out += [plans.goal(ctx, g, strengths) for g in case.goals]
    if case.care_plan is not None:
        out.append(plans.care_plan(ctx, case, case.care_plan))
    if case.discharge_plan is not None:
        out.append(plans.discharge_care_plan(ctx, case, case.discharge_plan))
    out += [work.assessment(ctx, a) for a in case.assessments]
    out += [work.task(ctx, t) for t in case.tasks]
    for referral in case.referrals:
        out.append(work.referral_request(ctx, referral))
        out.append(work.referral_task(ctx, referral))
    if case.risk is not None:
        out.append(work.risk_assessment(ctx, case.risk))
    return out


class _Index:
    """The resources of one case, by id and by business identifier system."""

    def __init__(self, resources: list[Json], registry: MappingRegistry) -> None:
        self.by_id = {str(r.get("id")): r for r in resources}
        self.registry = registry
        episodes = [r for r in resources if r.get("resourceType") == "EpisodeOfCare"]
        if len(episodes) != 1:
            raise MappingError(f"expected one EpisodeOfCare, found {len(episodes)}")
        self.episode = episodes[0]
        case_ids = self.values(self.episode, "case")
        if not case_ids:
            raise MappingError("EpisodeOfCare lacks the case identifier", path="identifier")
        self.case_id = case_ids[0]
        self.resources = resources

    def values(self, resource: Json, system_key: str) -> list[str]:
        system = self.registry.system(system_key)
        return [
            str(i["value"]) for i in resource.get("identifier", []) if i.get("system") == system
        ]

    def with_system(self, resource_type: str, system_key: str) -> list[tuple[list[str], Json]]:
        found = []
        for r in self.resources:
            if r.get("resourceType") != resource_type:
                continue
            for value in self.values(r, system_key):
                if value != self.case_id:
                    path = f"{resource_type}/{r.get('id')}.identifier"
                    found.append((split_local_value(value, self.case_id, path), r))
        return found

    def local_of(self, ref: Json | None, system_key: str) -> str | None:
        target = self.by_id.get(reference_id(ref) or "")
        if target is None:
            return None
        values = self.values(target, system_key)
        return split_local_value(values[0], self.case_id, "reference")[0] if values else None


def resources_to_case(resources: list[Json], registry: MappingRegistry | None = None) -> Case:
    """Read a case back from its resources (e.g. the entries of a transaction Bundle).

    ``registry``: the mappings they were made with; None (the default) means the bundled ones.
    """
    try:
        return _to_case(resources, registry or default_registry())
    except MappingError:
        raise
    except _STRUCTURAL as exc:
        raise _mapping_error(exc, None) from exc


_STRUCTURAL = (KeyError, IndexError, TypeError, ValueError, AttributeError, StopIteration)


def _mapping_error(exc: Exception, where: str | None) -> MappingError:
    if isinstance(exc, pydantic.ValidationError):
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        path = ".".join(p for p in (where, loc) if p)
        return MappingError(first["msg"], path=path or None)
    return MappingError(f"resources do not hold a case ({type(exc).__name__}: {exc})", path=where)


def _parse(resource: Json, parse: Callable[..., _T], *args: Any) -> _T:
    """Run one resource's parser; a structural problem names the resource it was found in."""
    try:
        return parse(*args)
    except MappingError:
        raise
    except _STRUCTURAL as exc:
        where = f"{resource.get('resourceType')}/{resource.get('id')}"
        raise _mapping_error(exc, where) from exc


def _to_case(resources: list[Json], registry: MappingRegistry) -> Case:
    idx = _Index(resources, registry)
    eoc = idx.episode
    primary = _parse(
        eoc, lambda: dt.parse_identifier(eoc["patient"]["identifier"], "EpisodeOfCare.patient")
    )
    head_ctx = CaseContext(registry, idx.case_id, PatientRef(identifiers=(primary,)))
    head = _parse(eoc, episode.parse_case_head, head_ctx, eoc)
    patient = PatientRef(identifiers=(primary, *head.pop("extra_identifiers")))
    ctx = CaseContext(registry, idx.case_id, patient)
    data: Json = {"id": idx.case_id, "patient": patient, **head}

    for parts, r in idx.with_system("CareTeam", "care_team"):
        data["care_team"] = _parse(r, episode.parse_care_team, r, parts[0])
    intake = [
        r
        for r in resources
        if r.get("resourceType") == "ServiceRequest" and idx.values(r, "referral") == [idx.case_id]
    ]
    if intake:
        data["referral_source"] = _parse(intake[0], episode.parse_intake_referral, intake[0])
    data["goals"] = tuple(
        _parse(r, plans.parse_goal, r, parts[0]) for parts, r in idx.with_system("Goal", "goal")
    )
    for parts, r in idx.with_system("CarePlan", "care_plan"):
        if plans.plan_category(ctx, r) == "discharge-plan":
            data["discharge_plan"] = _parse(r, plans.parse_discharge_plan, ctx, r, parts[0])
        else:
            goal_ids = [idx.local_of(g, "goal") or "" for g in r.get("goal", [])]
            data["care_plan"] = _parse(r, plans.parse_care_plan, r, parts[0], goal_ids)
    data["assessments"] = tuple(
        _parse(r, work.parse_assessment, ctx, r, parts[0])
        for parts, r in idx.with_system("Task", "assessment")
    )
    tasks, fulfilments = [], {}
    for parts, r in idx.with_system("Task", "task"):
        if parts[1:] == [FULFILMENT]:
            fulfilments[parts[0]] = r
            continue
        plan = idx.local_of((r.get("basedOn") or [None])[0], "care_plan")
        goal = idx.local_of(r.get("focus"), "goal")
        tasks.append(_parse(r, work.parse_task, r, parts[0], plan, goal))
    data["tasks"] = tuple(tasks)
    data["referrals"] = tuple(
        _parse(
            r,
            work.parse_referral,
            r,
            fulfilments.get(parts[0]),
            parts[0],
            idx.local_of((r.get("basedOn") or [None])[0], "care_plan"),
        )
        for parts, r in idx.with_system("ServiceRequest", "referral")
    )
    for parts, r in idx.with_system("RiskAssessment", "risk_assessment"):
        data["risk"] = _parse(r, work.parse_risk, r, parts[0])
    return Case.model_validate(data)
