"""Contact cadence: the recurring contacts a case's models ask for (``programmes.yaml``). Pure.

Intensive case management means frequent contact: a model can list contacts such as a weekly home
visit. :func:`with_contacts` keeps exactly one open task per contact on an active case (or one in
transition): when the last one is done (or there is none), the next is added, due ``every`` after
the previous one was due, the first ``every`` after the case opened. Task ids are
``contact-<model>-<kind>-<n>``; the owner is the case manager. A case without a case manager, or
not active, gets none. The cases API applies it after every change it makes.
"""

from __future__ import annotations

from datetime import datetime

from cm_fhir.domain.case import Case
from cm_fhir.domain.codes import CaseStatus
from cm_fhir.domain.task import Task
from cm_fhir.mapping.programmes import ProgrammesSpec

__all__ = ["with_contacts"]

_WORKING = frozenset({CaseStatus.ACTIVE, CaseStatus.TRANSITION})


def with_contacts(case: Case, programmes: ProgrammesSpec, now: datetime) -> Case:
    """``case`` with the next task of each recurring contact it lacks (``now``: authored on)."""
    owner = case.case_manager
    if case.status not in _WORKING or owner is None:
        return case
    added: list[Task] = []
    for name, contact in programmes.contacts(case.programme, case.models):
        prefix = f"contact-{name}-"
        earlier = [t for t in case.tasks if t.id.startswith(prefix) and t.kind == contact.kind]
        if any(t.is_open for t in earlier):
            continue
        base = max((t.due for t in earlier), default=case.opened)
        added.append(
            Task(
                id=f"{prefix}{len(earlier) + 1}",
                kind=contact.kind,
                description=contact.description,
                owner=owner,
                authored_on=now,
                due=base + contact.every,
            )
        )
    if not added:
        return case
    return Case.model_validate({**dict(case), "tasks": (*case.tasks, *added)})
