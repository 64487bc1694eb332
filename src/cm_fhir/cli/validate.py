"""Profile commands: ``validate`` and ``profiles snapshot``. I/O edge: reads and writes files.

``cm-fhir validate FILE...`` checks JSON resources or Bundles against their ``meta.profile``
profiles (or the R4 base) and prints the errors (``-v`` adds warnings, ``-vv`` information) and
one summary line per file; exit status 0 without errors, 1 with errors, 2 when a file cannot be
read. ``cm-fhir profiles snapshot`` regenerates the snapshots of the
project's StructureDefinitions from their differentials (``--check`` only reports stale ones).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from cm_fhir.cli._app import app
from cm_fhir.cli.errors import read_json
from cm_fhir.errors import ProfileError

if TYPE_CHECKING:
    from cm_fhir.profiles import (
        ProfileValidator,
    )


profiles_app = typer.Typer(help="Profiles: regenerate snapshots.", no_args_is_help=True)
app.add_typer(profiles_app, name="profiles")


def _read(path: Path) -> Any:
    return read_json(path)


def _summary(path: Path, errors: int, warnings: int, hidden: int) -> str:
    if not errors and not warnings:
        return f"{path}: OK"
    parts = [f"{errors} error{'s' if errors != 1 else ''}"] if errors else []
    if warnings:
        parts.append(f"{warnings} warning{'s' if warnings != 1 else ''}")
    note = f" ({hidden} not shown; -v shows warnings)" if hidden else ""
    return f"{path}: {', '.join(parts)}{note}"


def _validator(profiles_dir: Path | None) -> ProfileValidator:
    from cm_fhir.profiles import ProfileValidator, default_validator

    try:
        return ProfileValidator.load(profiles_dir) if profiles_dir else default_validator()
    except ProfileError as exc:
        typer.echo(f"profiles cannot be loaded: {exc}", err=True)
        raise typer.Exit(2) from exc


@app.command("validate")
def validate_command(
    files: list[Path] = typer.Argument(..., help="JSON resources or Bundles."),
    profile: str | None = typer.Option(None, "--profile", help="Also check against this URL."),
    profiles_dir: Path | None = typer.Option(
        None, "--profiles-dir", help="Profile folder (default: the bundled profiles)."
    ),
    verbose: int = typer.Option(
        0, "--verbose", "-v", count=True, help="-v: also warnings; -vv: also information."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only the summary line per file."),
    as_json: bool = typer.Option(False, "--json", help="Print the OperationOutcome(s) as JSON."),
) -> None:
    """Validate FHIR resources against their profiles.

    Prints each error, then one summary line per file; exit status 0 when no file has errors,
    1 when one has, 2 when a file or the profiles cannot be read.
    """
    from cm_fhir.profiles import error_issues

    documents = [(path, _read(path)) for path in files]
    validator = _validator(profiles_dir)
    failed = False
    for path, document in documents:
        try:
            outcome = validator.validate(document, profile)
        except ProfileError as exc:
            typer.echo(f"{path}: a profile cannot be used: {exc}", err=True)
            raise typer.Exit(2) from exc
        errors = error_issues(outcome)
        failed = failed or bool(errors)
        if as_json:
            typer.echo(json.dumps({"file": str(path), "outcome": outcome}, indent=2))
            continue
        hidden = 0
        for issue in outcome["issue"]:
            severity = issue["severity"]
            shown = not quiet and (
                severity in {"error", "fatal"}
                or (verbose >= 1 and severity == "warning")
                or verbose >= 2
            )
            if not shown:
                hidden += severity == "warning"
                continue
            where = ", ".join(issue.get("expression", ["-"]))
            typer.echo(f"{path}: {severity} {where}: {issue['details']['text']}")
        warnings = sum(1 for i in outcome["issue"] if i["severity"] == "warning")
        typer.echo(_summary(path, len(errors), warnings, hidden if not quiet else 0))
    raise typer.Exit(1 if failed else 0)


@profiles_app.command("snapshot")
def snapshot_command(
    profiles_dir: Path | None = typer.Option(
        None, "--dir", help="Profile folder (default: the bundled profiles)."
    ),
    check: bool = typer.Option(False, "--check", help="Only report stale snapshots (exit 1)."),
) -> None:
    """Regenerate the snapshots of our StructureDefinitions from their differentials."""
    from cm_fhir.profiles import ConformanceRegistry, bundled_profiles_dir, generate_snapshots

    folder = profiles_dir or bundled_profiles_dir()
    try:
        registry = ConformanceRegistry.from_directory(folder)
        snapshots = generate_snapshots(registry.own_profiles(), registry.structure_definition)
    except ProfileError as exc:
        typer.echo(f"cannot generate snapshots: {exc}", err=True)
        raise typer.Exit(2) from exc
    stale = []
    for url, elements in sorted(snapshots.items()):
        path = folder / registry.sources[url]
        sd = json.loads(path.read_text(encoding="utf-8"))
        if sd.get("snapshot", {}).get("element") == elements:
            continue
        stale.append(path.name)
        if not check:
            sd["snapshot"] = {"element": elements}
            path.write_text(json.dumps(sd, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    verb = "stale" if check else "updated"
    typer.echo(f"{len(snapshots)} profiles, {len(stale)} {verb}: {', '.join(stale) or '-'}")
    raise typer.Exit(1 if check and stale else 0)
