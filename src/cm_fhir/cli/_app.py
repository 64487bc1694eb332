"""The typer application and its command groups. I/O edge.

Command modules register themselves on these objects; ``cm_fhir.cli`` imports them all. The root
group turns any error a command lets through into one line on stderr and an exit status
(:func:`cm_fhir.cli.errors.explain`), so no traceback reaches the user; ``CM_FHIR_DEBUG=1`` lets
the traceback through for a bug report.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

import cm_fhir
from cm_fhir.cli.errors import explain

__all__ = ["adt_app", "app", "db_app", "mappings_app"]

# The CLI's own exceptions (usage errors, exits) are handled by typer itself.
_CLICK_EXCEPTION: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"
)
_PASS_THROUGH: tuple[type[Exception], ...] = (typer.Exit, typer.Abort, _CLICK_EXCEPTION)


class _GuardedGroup(TyperGroup):
    """The root group: every error that escapes a command becomes one line and a status."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except _PASS_THROUGH:
            raise
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        except Exception as exc:
            if os.environ.get("CM_FHIR_DEBUG"):
                raise
            status, message = explain(exc)
            typer.echo(f"error: {message}", err=True)
            raise typer.Exit(status) from None


app = typer.Typer(
    name="cm-fhir",
    cls=_GuardedGroup,
    help="FHIR R4 integration layer for case management.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
mappings_app = typer.Typer(
    help="Check the declarative mapping files; write the CodeSystems of their codes.",
    no_args_is_help=True,
)
adt_app = typer.Typer(help="HL7v2 ADT tools: inspect files, send over MLLP.", no_args_is_help=True)
db_app = typer.Typer(help="Database migrations: upgrade, current, history.", no_args_is_help=True)
app.add_typer(mappings_app, name="mappings")
app.add_typer(adt_app, name="adt")
app.add_typer(db_app, name="db")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cm-fhir {cm_fhir.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """FHIR R4 integration layer for case management."""
