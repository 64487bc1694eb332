"""Provenance resources built from the workflow trace: one per case change. Pure.

A *change* is the trace rows one inbound message (or one API request) wrote for one case. Its
Provenance names as ``target`` the case's EpisodeOfCare and every resource the rows name (a task,
a goal, a plan, a referral's ServiceRequest and fulfilment Task), ``recorded`` is when the change
was committed, the ``agent`` is cm-fhir (who changed a case through the API is in the audit
trail), and the ``entity`` is the HL7v2 inbox message: ``what.identifier`` has the system
``<base>/sid/hl7v2-message`` and the value ``<MSH-3>|<MSH-4>|<MSH-10>|<received at>`` (see
:func:`cm_fhir.store.queue.message_key`; a control id alone is reused by real senders), and
``what.display`` names the inbox row id. Trace rows written before that key existed give the bare
control id (system ``<base>/sid/hl7v2-message-control-id``). A change read back from an EHR
(status back: trace ``message_key`` from :func:`fhir_source_key`) has the EHR endpoint as a
second agent (``author``) and the Task version at the endpoint as its ``source`` entity
(``what.reference``). The id is ``trace-<n>``, ``n`` the first trace row of the change, so it
never changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cm_fhir.domain import Case
from cm_fhir.fhir.context import CaseContext, ReferenceStyle
from cm_fhir.fhir.ids import resource_id
from cm_fhir.fhir.work import FULFILMENT
from cm_fhir.mapping.registry import MappingRegistry

__all__ = [
    "PROVENANCE_PREFIX",
    "ChangeStep",
    "fhir_source_key",
    "provenance",
    "provenance_number",
    "targets_of",
]

Json = dict[str, Any]
PROVENANCE_PREFIX = "trace-"
_DATA_OPERATION = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"
_PARTICIPANT = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
#: Prefix of a trace ``message_key`` naming a resource version at a FHIR endpoint.
_FHIR_SOURCE = "fhir|"


def fhir_source_key(endpoint: str, url: str) -> str:
    """The trace ``message_key`` of a change read from ``url`` (a resource version) at the FHIR
    endpoint named ``endpoint``; its Provenance names the endpoint as author and the version as
    source."""
    return f"{_FHIR_SOURCE}{endpoint}|{url}"


@dataclass(frozen=True, slots=True)
class ChangeStep:
    """One trace row of a change (no patient data: ids, rule paths, actions)."""

    rule: str
    action: str
    target: str | None
    event: str | None
    message_control_id: str | None
    message_key: str | None = None
    inbox_message_id: int | None = None


def provenance_number(resource_id: str) -> int | None:
    """The first trace row id behind a Provenance id, or None if it is not one of ours."""
    number = resource_id.removeprefix(PROVENANCE_PREFIX)
    if number == resource_id or not number.isdigit() or len(number) > 18:
        return None
    return int(number)


def targets_of(
    registry: MappingRegistry, case_id: str, case: Case | None, local_ids: Sequence[str]
) -> list[Json]:
    """References to the EpisodeOfCare and to each resource the local ids name in ``case``."""
    if case is None:  # the case is gone: its EpisodeOfCare id is still known
        system = registry.system("case")
        rid = resource_id(registry.canonical_base, "EpisodeOfCare", system, case_id)
        return [{"reference": f"EpisodeOfCare/{rid}"}]
    ctx = CaseContext(registry, case_id, case.patient, ReferenceStyle.RELATIVE)
    out = [ctx.episode_ref()]
    plans = {p.id for p in (case.care_plan, case.discharge_plan) if p is not None}
    for local in dict.fromkeys(local_ids):
        if any(t.id == local for t in case.tasks):
            out.append(ctx.ref("Task", "task", local))
        elif any(g.id == local for g in case.goals):
            out.append(ctx.ref("Goal", "goal", local))
        elif local in plans:
            out.append(ctx.ref("CarePlan", "care_plan", local))
        elif any(r.id == local for r in case.referrals):
            out.append(ctx.ref("ServiceRequest", "referral", local))
            out.append(ctx.ref("Task", "task", local, FULFILMENT))
        elif any(a.id == local for a in case.assessments):
            out.append(ctx.ref("Task", "assessment", local))
    return out


def provenance(
    registry: MappingRegistry,
    number: int,
    case_id: str,
    case: Case | None,
    recorded: datetime,
    steps: Sequence[ChangeStep],
) -> Json:
    """The Provenance of one change; ``case`` (its current state) resolves the targets' types."""
    targets = targets_of(registry, case_id, case, [s.target for s in steps if s.target])
    agents: list[Json] = [
        {
            "type": {
                "coding": [{"system": _PARTICIPANT, "code": "assembler", "display": "Assembler"}]
            },
            "who": {"display": "cm-fhir"},
        }
    ]
    for step in steps:
        if step.message_key and step.message_key.startswith(_FHIR_SOURCE):
            endpoint = step.message_key[len(_FHIR_SOURCE) :].split("|", 1)[0]
            author = {
                "type": {
                    "coding": [{"system": _PARTICIPANT, "code": "author", "display": "Author"}]
                },
                "who": {"display": f"EHR endpoint '{endpoint}'"},
            }
            if author not in agents:
                agents.append(author)
    stamp = recorded.isoformat()
    out: Json = {
        "resourceType": "Provenance",
        "id": f"{PROVENANCE_PREFIX}{number}",
        "meta": {"lastUpdated": stamp},
        "target": targets,
        "recorded": stamp,
        "activity": {
            "coding": [{"system": _DATA_OPERATION, "code": "UPDATE", "display": "revise"}],
            "text": "; ".join(dict.fromkeys(f"{s.rule}: {s.action}" for s in steps)),
        },
        "agent": agents,
    }
    entities = [
        _message_entity(registry, s) for s in steps if s.message_key or s.message_control_id
    ]
    if entities:
        out["entity"] = list({_entity_key(e): e for e in entities}.values())
    return out


def _entity_key(entity: Json) -> str:
    what = entity["what"]
    return str(what.get("reference") or what["identifier"]["value"])


def _message_entity(registry: MappingRegistry, step: ChangeStep) -> Json:
    """The inbound message a change came from, as a Provenance ``entity`` (role ``source``)."""
    if step.message_key and step.message_key.startswith(_FHIR_SOURCE):
        endpoint, _, url = step.message_key[len(_FHIR_SOURCE) :].partition("|")
        display = f"{step.event or 'resource'} at EHR endpoint '{endpoint}'"
        return {"role": "source", "what": {"reference": url, "display": display}}
    kind = f"HL7v2 {step.event or 'ADT'} message"
    if step.message_key:
        system = f"{registry.canonical_base}/sid/hl7v2-message"
        value = step.message_key
        inbox = f", inbox #{step.inbox_message_id}" if step.inbox_message_id is not None else ""
        display = f"{kind}{inbox}"
    else:
        system = f"{registry.canonical_base}/sid/hl7v2-message-control-id"
        value = step.message_control_id or ""
        display = kind
    return {
        "role": "source",
        "what": {"identifier": {"system": system, "value": value}, "display": display},
    }
