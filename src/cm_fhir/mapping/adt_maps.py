"""Concept maps for ADT intake: patient class, discharge disposition and destination. Pure.

The spec lives in ``mappings/adt-concept-maps.yaml``. HL7 table 0004 (patient class, PV1-2) maps to
the FHIR v3 ActCode encounter classes; table 0112 (discharge disposition, PV1-36) is site-defined,
so its map targets the disposition codes of ``code-systems.yaml`` (``discharge_disposition``;
checked across files by :mod:`cm_fhir.mapping.vocabulary`) and a site is expected to override it (a
file of the same name in the override folder is deep-merged over the bundled one, see
:func:`cm_fhir.mapping.loader.load_with_overrides`). Every map states what happens to a code it
does not know: ``report`` (kept as unmapped), ``default`` (mapped to ``default`` but flagged
unmapped) or ``error`` (a :class:`~cm_fhir.errors.MappingError` naming the field position, never
the value). Loading reads a file; mapping a code is pure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cm_fhir.errors import MappingError
from cm_fhir.mapping.loader import load_with_overrides

__all__ = [
    "ADT_CONCEPT_MAPS_FILE",
    "ENCOUNTER_CLASSES",
    "AdtConceptMaps",
    "CodeMap",
    "MappedCode",
    "load_adt_concept_maps",
]

ADT_CONCEPT_MAPS_FILE: Final = "adt-concept-maps.yaml"

ENCOUNTER_CLASSES: Final[frozenset[str]] = frozenset(
    {"AMB", "EMER", "FLD", "HH", "IMP", "ACUTE", "NONAC", "OBSENC", "PRENC", "SS", "VR"}
)
"""FHIR R4 Encounter.class codes (v3 ActCode, value set v3-ActEncounterCode)."""

UnmappedPolicy = Literal["report", "default", "error"]


class MappedCode(BaseModel):
    """A source code and its concept-map target; ``mapped`` is False when the map has no entry.

    ``target`` may be set on an unmapped code when the map's unmapped policy names a default.
    Defined here, with the maps that make it, so that mapping never imports ``hl7v2``;
    :mod:`cm_fhir.hl7v2.events` re-exports it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str
    target: str | None = None
    mapped: bool
    display: str | None = None


class CodeMap(BaseModel):
    """One concept map: source code -> target code, plus the policy for unknown codes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    description: str = ""
    map: dict[str, str] = Field(default_factory=dict)
    unmapped: UnmappedPolicy = "report"
    default: str | None = None
    case_sensitive: bool = False

    @model_validator(mode="after")
    def _default_matches_policy(self) -> CodeMap:
        if self.unmapped == "default" and not self.default:
            raise ValueError("unmapped: default needs a 'default' target code")
        if self.unmapped != "default" and self.default is not None:
            raise ValueError("'default' is only used with unmapped: default")
        return self

    def targets(self) -> set[str]:
        """Every target this map can produce."""
        found = set(self.map.values())
        if self.default is not None:
            found.add(self.default)
        return found

    def lookup(self, code: str, location: str, display: str | None = None) -> MappedCode:
        """Map ``code`` (from field ``location``, e.g. "PV1-36") following the unmapped policy.

        Raises:
            MappingError: the code is unknown and the policy is ``error``.
        """
        key = code.strip()
        target = self.map.get(key)
        if target is None and not self.case_sensitive:
            upper = key.upper()
            target = next((t for s, t in self.map.items() if s.upper() == upper), None)
        if target is not None:
            return MappedCode(source=key, target=target, mapped=True, display=display)
        if self.unmapped == "error":
            raise MappingError("code is not in the concept map", path=location)
        return MappedCode(source=key, target=self.default, mapped=False, display=display)


class AdtConceptMaps(BaseModel):
    """The ADT concept maps (``mappings/adt-concept-maps.yaml``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    patient_class: CodeMap
    discharge_disposition: CodeMap
    discharge_destination: CodeMap = Field(default_factory=CodeMap)

    @field_validator("patient_class")
    @classmethod
    def _encounter_classes(cls, value: CodeMap) -> CodeMap:
        unknown = value.targets() - ENCOUNTER_CLASSES
        if unknown:
            raise ValueError(f"targets must be v3 ActCode encounter classes, not {sorted(unknown)}")
        return value


def load_adt_concept_maps(override_dir: Path | None = None) -> AdtConceptMaps:
    """Load the bundled ADT concept maps, deep-merged with a site's file of the same name.

    ``override_dir`` defaults to the folder named by ``CM_FHIR_MAPPINGS_DIR``.

    Raises:
        MappingSpecError: the file (or the merged result) is invalid; names file, key and reason.
    """
    return load_with_overrides(ADT_CONCEPT_MAPS_FILE, AdtConceptMaps, override_dir)
