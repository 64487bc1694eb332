"""The typer application and its command groups. I/O edge.

Command modules register themselves on these objects; ``cm_fhir.cli`` imports them all.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="cm-fhir",
    help="FHIR R4 integration layer for case management.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
mappings_app = typer.Typer(help="Check the declarative mapping files.", no_args_is_help=True)
adt_app = typer.Typer(help="HL7v2 ADT tools: inspect files, send over MLLP.", no_args_is_help=True)
db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
app.add_typer(mappings_app, name="mappings")
app.add_typer(adt_app, name="adt")
app.add_typer(db_app, name="db")
