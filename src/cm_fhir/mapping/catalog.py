"""The catalogue of mapping files: which file holds what, and the model that checks it. Pure apart
from reading files.

``check_mappings`` is what ``cm-fhir mappings check`` runs: it loads every known file (bundled,
merged with a site folder), runs the cross-file checks (every code a rule or concept map names is
listed in ``code-systems.yaml``), and returns the problems found instead of
stopping at the first file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pydantic

from cm_fhir.errors import MappingSpecError
from cm_fhir.mapping.adt_maps import ADT_CONCEPT_MAPS_FILE, AdtConceptMaps, load_adt_concept_maps
from cm_fhir.mapping.loader import load_with_overrides
from cm_fhir.mapping.payer_exchange import PAYER_EXCHANGE_FILE, PayerExchange
from cm_fhir.mapping.programmes import PROGRAMMES_FILE, ProgrammesSpec, load_programmes
from cm_fhir.mapping.registry import (
    CODE_SYSTEMS_FILE,
    IDENTITY_FILE,
    STATUS_MAPS_FILE,
    load_registry,
)
from cm_fhir.mapping.rules import DISCHARGE_RULES_FILE, DischargeRules, load_discharge_rules
from cm_fhir.mapping.spec import CodeSystemsSpec, FhirIdentitySpec, StatusMapsSpec
from cm_fhir.mapping.vocabulary import check_vocabulary

#: Every mapping file cm-fhir reads, with the model that validates it.
MAPPING_FILES: dict[str, type[pydantic.BaseModel]] = {
    IDENTITY_FILE: FhirIdentitySpec,
    CODE_SYSTEMS_FILE: CodeSystemsSpec,
    STATUS_MAPS_FILE: StatusMapsSpec,
    ADT_CONCEPT_MAPS_FILE: AdtConceptMaps,
    DISCHARGE_RULES_FILE: DischargeRules,
    PAYER_EXCHANGE_FILE: PayerExchange,
    PROGRAMMES_FILE: ProgrammesSpec,
}


@dataclass(frozen=True, slots=True)
class MappingReport:
    checked: list[str]
    problems: list[MappingSpecError]

    @property
    def ok(self) -> bool:
        return not self.problems


def check_mappings(site_dir: Path | None = None) -> MappingReport:
    """Load every mapping file (with ``site_dir`` overrides) and collect the problems."""
    problems: list[MappingSpecError] = []
    checked: list[str] = []
    if site_dir is not None:
        if not site_dir.is_dir():
            err = MappingSpecError(str(site_dir), "", "not a folder")
            return MappingReport(checked, [err])
        for path in sorted(site_dir.glob("*.y*ml")):
            if path.name not in MAPPING_FILES:
                known = ", ".join(sorted(MAPPING_FILES))
                problems.append(MappingSpecError(str(path), "", f"unknown file; known: {known}"))
    for name, model in MAPPING_FILES.items():
        try:
            load_with_overrides(name, model, site_dir)
            checked.append(name)
        except MappingSpecError as exc:
            problems.append(exc)
    if not problems:
        try:
            rules, maps = load_discharge_rules(site_dir), load_adt_concept_maps(site_dir)
            check_vocabulary(
                load_registry(site_dir), rules, maps, site_dir, load_programmes(site_dir)
            )
        except MappingSpecError as exc:
            problems.append(exc)
    return MappingReport(checked, problems)
