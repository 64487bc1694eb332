"""``cm-fhir demo``: the main job on embedded defaults. I/O edge.

For now the demo maps every bundled example case to a validated FHIR R4 transaction Bundle, reads
each back, and prints what it did. Later it grows into the full service demo (ADT over MLLP, cases
and tasks through the API).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated

import typer

from cm_fhir.bundled import bundled_dir
from cm_fhir.cli._app import app
from cm_fhir.cli.cases import load_case
from cm_fhir.cli.errors import EXIT_PROBLEMS, fail
from cm_fhir.errors import CmFhirError
from cm_fhir.fhir import case_from_bundle, dumps, map_case
from cm_fhir.mapping.registry import default_registry


@app.command("demo")
def demo_command(
    once: Annotated[bool, typer.Option("--once", help="Run once and exit.")] = False,
    examples: Annotated[
        Path | None, typer.Option(help="A folder of case documents (default: the bundled ones).")
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Also write each Bundle here as JSON.")
    ] = None,
) -> None:
    """Map the example cases to FHIR R4 transaction Bundles and print a summary."""
    folder = examples or bundled_dir("examples")
    files = sorted(folder.glob("*.json"))
    if not files:
        fail(f"{folder}: no case documents (*.json)")
    registry = default_registry()
    typer.echo(f"cm-fhir demo: mapping {len(files)} example cases from {folder}\n")
    failures = 0
    for path in files:
        case = load_case(path)
        try:
            bundle = map_case(case, registry)
            back = case_from_bundle(bundle, registry)
        except CmFhirError as exc:
            failures += 1
            typer.echo(f"  FAILED {path.name}: {exc}")
            continue
        kinds = Counter(e["resource"]["resourceType"] for e in bundle["entry"])
        body = dumps(bundle)
        open_tasks = sum(1 for t in case.tasks if t.is_open)
        typer.echo(
            f"  {case.id:<18} {case.programme.value:<28} {case.status.value:<10} "
            f"{len(bundle['entry']):>3} resources  {len(body):>6} bytes  "
            f"round trip {'ok' if back == case else 'DIFFERS'}"
        )
        typer.echo(
            "      "
            + ", ".join(f"{n} {t}" for t, n in sorted(kinds.items()))
            + f"; {open_tasks} open task(s)"
        )
        if back != case:
            failures += 1
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / f"{case.id}.bundle.json").write_bytes(body)
    typer.echo("")
    if failures:
        typer.echo(f"{failures} case(s) failed")
        raise typer.Exit(EXIT_PROBLEMS)
    typer.echo(
        "Every Bundle passed fhir.resources R4B validation and read back to the same case.\n"
        "Next: `cm-fhir map examples/<case>.json --pretty` prints one Bundle; "
        "`cm-fhir schema case` prints the case document's JSON Schema."
    )
    if not once:
        typer.echo("(nothing keeps running yet: the service demo arrives with `cm-fhir serve`)")
