"""The clinical summary of a utilization review, read from the EHR for the encounter. I/O.

:func:`read_clinical_summary` finds the EHR's Encounter by the visit number (``identifier``), then
reads its Conditions, Observations and MedicationRequests (``encounter=Encounter/<id>``) and
writes them as text (:func:`~cm_fhir.fhir.clinical_summary.clinical_summary`). None when the EHR
does not know the encounter or holds nothing for it.
"""

from __future__ import annotations

from typing import Any

from cm_fhir.domain.common import Identifier
from cm_fhir.fhir.clinical_summary import clinical_summary
from cm_fhir.fhir_client import FhirClient

__all__ = ["SUMMARY_TYPES", "read_clinical_summary"]

Json = dict[str, Any]
SUMMARY_TYPES = ("Condition", "Observation", "MedicationRequest")


async def _all(client: FhirClient, rtype: str, params: dict[str, str], cap: int) -> list[Json]:
    found: list[Json] = []
    async for resource in client.search(rtype, params):
        found.append(resource)
        if len(found) >= cap:
            break
    return found


async def read_clinical_summary(
    client: FhirClient, encounter: Identifier, *, cap: int = 200
) -> str | None:
    """The summary of the encounter's clinical data in the EHR (at most ``cap`` of each type)."""
    key = f"{encounter.system}|{encounter.value}"
    encounters = await _all(client, "Encounter", {"identifier": key}, 2)
    if len(encounters) != 1 or not encounters[0].get("id"):
        return None  # unknown, or not one encounter: nothing is guessed
    ref = f"Encounter/{encounters[0]['id']}"
    found = {
        t: await _all(client, t, {"encounter": ref, "_count": "100"}, cap) for t in SUMMARY_TYPES
    }
    return clinical_summary(found["Condition"], found["Observation"], found["MedicationRequest"])
