"""What the read-only FHIR facade answers: each type's search parameters, sorts and includes. Pure.

:data:`SEARCH_PARAMETERS` is the one table of the searchable types and their parameters (besides
the result parameters ``_count``, ``_page`` and ``_format``); :data:`SORTS` and :data:`INCLUDES`
name the ``_sort`` keys and ``_include`` values beyond the common ones. The parser
(:mod:`cm_fhir.facade.search`), the store query and the CapabilityStatement
(:mod:`cm_fhir.facade.capability`) all read them, so they cannot disagree. Each parameter names
the :class:`Field` (the stored column) it compares.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "INCLUDES",
    "RESOURCE_TYPES",
    "SEARCH_PARAMETERS",
    "SORTS",
    "Field",
    "SearchParam",
]

_HL7_SP = "http://hl7.org/fhir/SearchParameter/"
_CM_SP = "http://cm-fhir.org/fhir/SearchParameter/"


class Field(StrEnum):
    """What a criterion compares: the columns the store keeps for every served resource."""

    ID = "id"
    IDENTIFIER = "identifier"
    PATIENT = "patient"
    STATUS = "status"
    LAST_UPDATED = "last_updated"
    TARGET = "target"
    OWNER = "owner"
    DUE = "due"


@dataclass(frozen=True, slots=True)
class SearchParam:
    """One supported search parameter of one resource type."""

    name: str
    type: str  # FHIR search parameter type: token, reference, date
    field: Field
    definition: str
    documentation: str
    modifiers: frozenset[str] = frozenset()


def _common(
    identifier: str | None, patient: str, status: tuple[str, str] | None
) -> list[SearchParam]:
    params = [
        SearchParam("_id", "token", Field.ID, _HL7_SP + "Resource-id", "Logical id(s)"),
        SearchParam(
            "_lastUpdated",
            "date",
            Field.LAST_UPDATED,
            _HL7_SP + "Resource-lastUpdated",
            "When the resource last changed; prefixes eq, gt, ge, lt, le; no offset means UTC",
        ),
        SearchParam(
            "patient",
            "reference",
            Field.PATIENT,
            _HL7_SP + patient,
            "The patient, by identifier: patient:identifier=system|value (or patient=system|value)",
            frozenset({"identifier"}),
        ),
    ]
    if identifier is not None:
        params.append(
            SearchParam(
                "identifier",
                "token",
                Field.IDENTIFIER,
                _HL7_SP + identifier,
                "Business identifier: system|value, |value, system| or value",
            )
        )
    if status is not None:
        name, definition = status
        params.append(
            SearchParam(name, "token", Field.STATUS, _HL7_SP + definition, "Status code(s)")
        )
    return params


#: Every searchable type and its parameters (besides ``_count``, ``_page`` and ``_format``).
SEARCH_PARAMETERS: dict[str, tuple[SearchParam, ...]] = {
    "EpisodeOfCare": tuple(
        _common("clinical-identifier", "clinical-patient", ("status", "EpisodeOfCare-status"))
    ),
    "CarePlan": tuple(
        _common("clinical-identifier", "clinical-patient", ("status", "CarePlan-status"))
    ),
    "Goal": tuple(
        _common(
            "clinical-identifier", "clinical-patient", ("lifecycle-status", "Goal-lifecycle-status")
        )
    ),
    "Task": (
        *_common("Task-identifier", "Task-patient", ("status", "Task-status")),
        SearchParam(
            "owner",
            "reference",
            Field.OWNER,
            _HL7_SP + "Task-owner",
            "Who does the task: Type/id, or owner:identifier=system|value",
            frozenset({"identifier"}),
        ),
        SearchParam(
            "due",
            "date",
            Field.DUE,
            _CM_SP + "Task-due",
            "When the task is due (restriction.period.end); prefixes eq, gt, ge, lt, le",
        ),
    ),
    "CareTeam": tuple(
        _common("clinical-identifier", "clinical-patient", ("status", "CareTeam-status"))
    ),
    "ServiceRequest": tuple(
        _common("clinical-identifier", "clinical-patient", ("status", "ServiceRequest-status"))
    ),
    "Provenance": (
        *_common(None, "Provenance-patient", None),
        SearchParam(
            "target",
            "reference",
            Field.TARGET,
            _HL7_SP + "Provenance-target",
            "A changed resource, as Type/id",
        ),
    ),
}
RESOURCE_TYPES: tuple[str, ...] = tuple(SEARCH_PARAMETERS)


#: ``_sort`` keys per type (besides ``_lastUpdated``, which every type takes).
SORTS: dict[str, dict[str, Field]] = {"Task": {"due": Field.DUE}}
#: ``_include`` values per type and the element each follows.
INCLUDES: dict[str, dict[str, str]] = {"Task": {"Task:focus": "focus", "Task:based-on": "basedOn"}}
