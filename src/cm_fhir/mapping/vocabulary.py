"""Cross-file vocabulary check: every code the rules and concept maps use is a listed code. Pure.

The open vocabularies (task kinds, programmes, models, referral types, dispositions, needs, goal
categories) are data in ``code-systems.yaml``; the rules and the ADT concept maps only name their
codes. :func:`check_vocabulary` runs once at start-up (and in ``cm-fhir mappings check``) so that a
rule naming a code the code systems do not list fails with the file, the key path and the code,
instead of failing on the first message that fires the rule.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from cm_fhir.errors import MappingSpecError
from cm_fhir.mapping.adt_maps import ADT_CONCEPT_MAPS_FILE, AdtConceptMaps
from cm_fhir.mapping.loader import bundled_mappings_dir
from cm_fhir.mapping.programmes import PROGRAMMES_FILE, ProgrammesSpec
from cm_fhir.mapping.registry import MappingRegistry
from cm_fhir.mapping.rule_types import TaskRule
from cm_fhir.mapping.rules import DISCHARGE_RULES_FILE, DischargeRules

__all__ = ["check_vocabulary", "map_codes", "programme_codes", "rule_codes"]

#: (key path in the file, code system key in code-systems.yaml, code)
CodeUse = tuple[str, str, str]


def _tasks(path: str, tasks: dict[str, TaskRule]) -> Iterator[CodeUse]:
    for name, task in tasks.items():
        yield f"{path}.{name}.kind", "task_code", task.kind


def rule_codes(rules: DischargeRules) -> Iterator[CodeUse]:
    """Every code ``discharge-rules.yaml`` names, with where it names it."""
    yield "programme", "programme", rules.programme
    admission = rules.admission
    yield "admission.initial_assessment.kind", "task_code", admission.initial_assessment.kind
    if admission.payer_notification is not None:
        kind = admission.payer_notification.kind
        yield "admission.payer_notification.kind", "task_code", kind
    yield from _tasks("admission.tasks", admission.tasks)
    for i, rule in enumerate(admission.post_acute):
        yield f"admission.post_acute[{i}].disposition", "discharge_disposition", rule.disposition
    yield from _tasks("pre_admission.tasks", rules.pre_admission.tasks)
    yield from _tasks("pending_discharge.tasks", rules.pending_discharge.tasks)
    yield from _tasks("discharge.tasks", rules.discharge.tasks)
    yield from _tasks("death.tasks", rules.death.tasks)
    for disposition, referral in rules.discharge.referrals.items():
        where = f"discharge.referrals.{disposition}"
        yield where, "discharge_disposition", disposition
        yield f"{where}.type", "referral_type", referral.type


def programme_codes(programmes: ProgrammesSpec) -> Iterator[CodeUse]:
    """Every programme and model code ``programmes.yaml`` names."""
    for name, programme in programmes.programmes.items():
        yield f"programmes.{name}", "programme", name
        for model, rules in programme.models.items():
            where = f"programmes.{name}.models.{model}"
            yield where, "case_management_model", model
            for i, contact in enumerate(rules.contacts):
                yield f"{where}.contacts[{i}].kind", "task_code", contact.kind


def map_codes(maps: AdtConceptMaps) -> Iterator[CodeUse]:
    """Every disposition code the ADT concept maps produce."""
    disposition = maps.discharge_disposition
    for source, target in disposition.map.items():
        yield f"discharge_disposition.map.{source}", "discharge_disposition", target
    if disposition.default is not None:
        yield "discharge_disposition.default", "discharge_disposition", disposition.default


def _source(name: str, override_dir: Path | None) -> str:
    if override_dir is not None and (override_dir / name).is_file():
        return f"{override_dir / name} (over {name})"
    return str(bundled_mappings_dir() / name)


def check_vocabulary(
    registry: MappingRegistry,
    rules: DischargeRules,
    maps: AdtConceptMaps | None = None,
    override_dir: Path | None = None,
    programmes: ProgrammesSpec | None = None,
) -> None:
    """Refuse a rule or concept-map target naming a code ``code-systems.yaml`` does not list.

    ``override_dir`` is the site folder the files were loaded with; errors name its file when it
    has one.

    Raises:
        MappingSpecError: names the file, the key path, the code and its code system.
    """
    rules_file = _source(DISCHARGE_RULES_FILE, override_dir)
    uses = [(rules_file, use) for use in rule_codes(rules)]
    if maps is not None:
        maps_file = _source(ADT_CONCEPT_MAPS_FILE, override_dir)
        uses += [(maps_file, use) for use in map_codes(maps)]
    if programmes is not None:
        programmes_file = _source(PROGRAMMES_FILE, override_dir)
        uses += [(programmes_file, use) for use in programme_codes(programmes)]
    for file, (where, system, code) in uses:
        if not registry.knows(system, code):
            raise MappingSpecError(
                file,
                where,
                f"unknown code '{code}': list it in code-systems.yaml under {system}.concepts",
            )
