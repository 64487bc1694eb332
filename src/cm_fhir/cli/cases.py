"""Case commands: ``map``, ``schema`` and ``mappings check``. I/O edge.

``map`` and ``mappings check`` use the site mappings of the ``mappings_dir`` setting
(``--mappings``, ``CM_FHIR_MAPPINGS_DIR``, or the config file). ``mappings check`` exits 1 when a
file has problems and 2 when the folder itself is unusable.
"""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import pydantic
import typer

from cm_fhir.cli._app import app, mappings_app
from cm_fhir.cli.errors import EXIT_PROBLEMS, fail, read_json, report_validation
from cm_fhir.cli.options import ConfigOption, MappingsOption, settings_from
from cm_fhir.errors import CmFhirError, MappingSpecError, ValidationError

if TYPE_CHECKING:
    from cm_fhir.domain import Case
    from cm_fhir.mapping.registry import MappingRegistry


class CliWriteMode(StrEnum):
    """The values of :class:`cm_fhir.fhir.WriteMode`, so that ``--help`` loads no FHIR model."""

    CONDITIONAL_UPDATE = "conditional-update"
    CONDITIONAL_CREATE = "conditional-create"
    UPDATE = "update"


class SchemaName(StrEnum):
    case = "case"


def load_case(path: Path) -> Case:
    """Read and validate a case document; problems exit 2 with the JSON path."""
    from cm_fhir.domain import Case

    data = read_json(path)
    try:
        return Case.model_validate(data)
    except pydantic.ValidationError as exc:
        report_validation(path, exc)


def registry_for(mappings: Path | None) -> MappingRegistry:
    from cm_fhir.mapping.registry import default_registry, load_registry

    try:
        return load_registry(mappings) if mappings is not None else default_registry()
    except MappingSpecError as exc:
        fail(f"mappings: {exc}")


@app.command("map")
def map_command(
    case_file: Annotated[Path, typer.Argument(help="A case document (JSON).")],
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write here instead of stdout.")
    ] = None,
    mode: Annotated[CliWriteMode, typer.Option(help="How entries write.")] = (
        CliWriteMode.CONDITIONAL_UPDATE
    ),
    validate: Annotated[
        bool,
        typer.Option(
            "--validate/--no-validate",
            help="Check with the FHIR R4 models and against the cm-fhir profiles.",
        ),
    ] = True,
    pretty: Annotated[bool, typer.Option(help="Indent the JSON.")] = False,
    verbose: Annotated[
        bool, typer.Option("-v", "--verbose", help="Also print profile warnings.")
    ] = False,
    mappings: MappingsOption = None,
    config: ConfigOption = None,
) -> None:
    """Print the FHIR R4 transaction Bundle for a case document."""
    from cm_fhir.fhir import WriteMode, map_case_json
    from cm_fhir.profiles import default_validator, error_issues

    settings = settings_from(config, mappings_dir=mappings)
    case = load_case(case_file)
    registry = registry_for(settings.mappings_dir)
    try:
        data = map_case_json(case, registry, validate=validate, mode=WriteMode(mode.value))
    except ValidationError as exc:
        for issue in exc.outcome.get("issue", []):
            where = ", ".join(issue.get("expression", []))
            typer.echo(f"error: {case_file}: {where}: {issue['details']['text']}", err=True)
        raise typer.Exit(EXIT_PROBLEMS) from exc
    except CmFhirError as exc:
        fail(f"{case_file}: {exc}", EXIT_PROBLEMS)
    if validate:
        # Nothing leaves without a profile check: errors stop the output.
        outcome = default_validator().validate(json.loads(data))
        shown = ("error", "fatal", "warning") if verbose else ("error", "fatal")
        for issue in outcome["issue"]:
            if issue["severity"] in shown:
                where = ", ".join(issue.get("expression", []))
                text = issue.get("details", {}).get("text", "")
                typer.echo(f"{issue['severity']}: {case_file}: {where}: {text}", err=True)
        if error_issues(outcome):
            raise typer.Exit(EXIT_PROBLEMS)
    if pretty:
        data = json.dumps(json.loads(data), indent=2, ensure_ascii=False).encode() + b"\n"
    else:
        data += b"\n"
    if output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        output.write_bytes(data)


@app.command("schema")
def schema_command(
    name: Annotated[SchemaName, typer.Argument(help="Which document.")] = SchemaName.case,
) -> None:
    """Print the JSON Schema of the case document."""
    from cm_fhir.domain import Case

    schema = Case.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    typer.echo(json.dumps(schema, indent=2))


@mappings_app.command("check")
def mappings_check(
    site_dir: Annotated[
        Path | None,
        typer.Argument(help="A site folder of overrides to check with the bundled files."),
    ] = None,
    mappings: MappingsOption = None,
    config: ConfigOption = None,
) -> None:
    """Load every mapping file and report problems (file, key path, reason)."""
    from cm_fhir.mapping.catalog import check_mappings

    if site_dir is not None and mappings is not None and site_dir != mappings:
        fail("give the site folder once: as an argument or as --mappings")
    folder = site_dir or mappings
    if folder is not None and not folder.is_dir():
        fail(f"{folder}: not a folder (mappings_dir)")
    report = check_mappings(settings_from(config, mappings_dir=folder).mappings_dir)
    for problem in report.problems:
        typer.echo(f"error: {problem}", err=True)
    if not report.ok:
        raise typer.Exit(EXIT_PROBLEMS)
    typer.echo(f"ok: {len(report.checked)} mapping files: {', '.join(report.checked)}")


@mappings_app.command("code-systems")
def mappings_code_systems(
    output: Annotated[Path, typer.Argument(help="The folder to write CodeSystem-<id>.json into.")],
    mappings: MappingsOption = None,
    config: ConfigOption = None,
) -> None:
    """Write the CodeSystem resources of code-systems.yaml (bundled plus a site's overrides)."""
    from cm_fhir.fhir.code_systems import code_system_json, code_system_resources

    folder = settings_from(config, mappings_dir=mappings).mappings_dir
    resources = code_system_resources(registry_for(folder))
    if not output.is_dir():
        fail(f"{output}: not a folder")
    written = []
    for resource in resources:
        path = output / f"CodeSystem-{resource['id']}.json"
        try:
            path.write_text(code_system_json(resource), encoding="utf-8")
        except OSError as exc:
            fail(f"{path}: cannot write ({exc.strerror})")
        written.append(path.name)
    typer.echo(f"ok: {len(written)} CodeSystems written to {output}")
