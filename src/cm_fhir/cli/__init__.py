"""The ``cm-fhir`` command line. I/O edge: reads files, prints, exits with a status.

Every command translates :class:`cm_fhir.errors.CmFhirError` into a readable message on stderr and
an exit status (2 for unusable input); no traceback reaches the user.
"""

from __future__ import annotations

# Command modules register on import. Keep this list sorted.
from cm_fhir.cli import (  # noqa: F401
    adt_inspect,
    adt_send,
    cases,
    demo,
    intake,
    keys,
    outbox,
    serve,
    validate,
    worker,
)
from cm_fhir.cli._app import app


def main() -> None:
    """Console-script entry point."""
    app()


__all__ = ["app", "main"]
