"""The facade's CapabilityStatement, built from the same table the search parser uses. Pure.

It states exactly what ``/fhir`` answers: the served types with their profiles (from the mapping
registry's ``profiles``), the ``read`` and ``search-type`` interactions, each type's search
parameters (:data:`~cm_fhir.facade.parameters.SEARCH_PARAMETERS`), JSON only, and SMART backend
services scopes (``system/*.read`` or ``system/<Type>.read``).
"""

from __future__ import annotations

from typing import Any

from cm_fhir.facade.parameters import INCLUDES, RESOURCE_TYPES, SEARCH_PARAMETERS
from cm_fhir.fhir.subscription import PAS_TOPIC, SUBSCRIPTION_PROFILE
from cm_fhir.mapping.registry import MappingRegistry

__all__ = ["FHIR_VERSION", "PROFILE_KEYS", "capability_statement", "read_scopes"]

Json = dict[str, Any]
FHIR_VERSION = "4.0.1"

#: Registry profile keys per served type: the first is the type's profile, the rest supported.
PROFILE_KEYS: dict[str, tuple[str, ...]] = {
    "EpisodeOfCare": ("episode_of_care",),
    "CarePlan": ("care_plan",),
    "Goal": ("goal",),
    "Task": ("task", "referral_task"),
    "CareTeam": ("care_team",),
    "ServiceRequest": ("referral_service_request",),
    "Provenance": (),
}

_SECURITY_SERVICE = "http://terminology.hl7.org/CodeSystem/restful-security-service"


def read_scopes(resource_type: str) -> tuple[str, str]:
    """The SMART scopes that allow reading ``resource_type``: the wildcard and the type's own."""
    return ("system/*.read", f"system/{resource_type}.read")


def _resource(registry: MappingRegistry, resource_type: str) -> Json:
    keys = PROFILE_KEYS[resource_type]
    out: Json = {"type": resource_type}
    if keys:
        out["profile"] = registry.profile(keys[0])
        out["supportedProfile"] = [registry.profile(k) for k in keys]
    out.update(
        {
            "documentation": (
                "Read-only. Scopes: " + " or ".join(read_scopes(resource_type)) + ". Results are "
                "ordered by id (after the _sort key); follow the Bundle's next/previous links."
            ),
            "interaction": [{"code": "read"}, {"code": "search-type"}],
            "versioning": "no-version",
            "readHistory": False,
            "updateCreate": False,
            "conditionalCreate": False,
            "conditionalRead": "not-supported",
            "conditionalUpdate": False,
            "conditionalDelete": "not-supported",
            "searchParam": [
                {
                    "name": p.name,
                    "definition": p.definition,
                    "type": p.type,
                    "documentation": p.documentation,
                }
                for p in SEARCH_PARAMETERS[resource_type]
            ],
        }
    )
    includes = list(INCLUDES.get(resource_type, {}))
    if includes:
        out["searchInclude"] = includes
    return out


#: The operations the payer side serves.
PAS_SUBMIT = "http://hl7.org/fhir/us/davinci-pas/OperationDefinition/Claim-submit"
PAS_INQUIRE = "http://hl7.org/fhir/us/davinci-pas/OperationDefinition/Claim-inquiry"
PROCESS_MESSAGE = "http://hl7.org/fhir/OperationDefinition/MessageHeader-process-message"
SUBSCRIPTION_STATUS = (
    "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-status"
)
TOPIC_CANONICAL = (
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
    "capabilitystatement-subscriptiontopic-canonical"
)


def capability_statement(
    base_url: str, registry: MappingRegistry, *, software_version: str, date: str
) -> Json:
    """The CapabilityStatement for a facade served at ``base_url`` (ending in ``/fhir``)."""
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": date,
        "publisher": "cm-fhir",
        "kind": "instance",
        "software": {"name": "cm-fhir", "version": software_version},
        "implementation": {
            "description": "cm-fhir read-only FHIR facade over case-management data",
            "url": base_url,
        },
        "fhirVersion": FHIR_VERSION,
        "format": ["application/fhir+json", "json"],
        "rest": [
            {
                "mode": "server",
                "documentation": (
                    "Resources are exactly what the cm-fhir mapping library emits for the current "
                    "state of each case (references relative, Type/id). Search parameters: those "
                    "listed per type, plus _count (page size, at most 100), _page (a cursor "
                    "the links carry), _summary=count, _total, _elements and _sort (one key: "
                    "_lastUpdated, or due on Task). Unsupported parameters are ignored (the "
                    "self link shows what was applied) unless Prefer: handling=strict, which "
                    "refuses them with 400 and an OperationOutcome."
                ),
                "security": {
                    "cors": False,
                    "service": [
                        {
                            "coding": [
                                {
                                    "system": _SECURITY_SERVICE,
                                    "code": "SMART-on-FHIR",
                                    "display": "SMART-on-FHIR",
                                }
                            ]
                        }
                    ],
                    "description": (
                        "Bearer tokens with SMART backend services scopes: system/*.read reads "
                        "every type, system/<Type>.read one type. The payer operations take "
                        "system/Claim.c ($submit), system/ClaimResponse.r ($inquire), "
                        "system/MessageHeader.c ($process-message) and system/Subscription.c, "
                        ".r, .d (Subscription); v1 .read/.write and v2 "
                        "permission letters alike."
                    ),
                },
                "resource": [
                    *(_resource(registry, t) for t in RESOURCE_TYPES),
                    {
                        "type": "Claim",
                        "documentation": (
                            "Payer side of Da Vinci Prior Authorization Support: no REST "
                            "interactions, only the operations."
                        ),
                        "operation": [
                            {"name": "submit", "definition": PAS_SUBMIT},
                            {"name": "inquire", "definition": PAS_INQUIRE},
                        ],
                    },
                    {
                        "type": "Subscription",
                        "supportedProfile": [SUBSCRIPTION_PROFILE],
                        "extension": [{"url": TOPIC_CANONICAL, "valueCanonical": PAS_TOPIC}],
                        "documentation": (
                            "Subscriptions R5 Backport to the Da Vinci PAS topic: rest-hook, "
                            "id-only or full-resource, optionally filtered by orgIdentifier; a "
                            "subscription hears only of the reviews its owner submitted."
                        ),
                        "interaction": [{"code": "create"}, {"code": "read"}, {"code": "delete"}],
                        "operation": [{"name": "status", "definition": SUBSCRIPTION_STATUS}],
                    },
                ],
                "operation": [
                    {
                        "name": "process-message",
                        "definition": PROCESS_MESSAGE,
                        "documentation": (
                            "Da Vinci Unsolicited Notifications (admit, transfer, discharge): "
                            "stored before they are answered, applied by the worker."
                        ),
                    }
                ],
            }
        ],
    }
