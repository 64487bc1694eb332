"""The ``cm-fhir`` command line. I/O edge: reads files, prints, exits with a status.

Every command builds its settings the same way (:mod:`cm_fhir.cli.options`), and every error
becomes one readable line on stderr and an exit status (:mod:`cm_fhir.cli.errors`: 2 for
unusable input or usage, 1 for a failed check); no traceback reaches the user.
"""

from __future__ import annotations

# Command modules register on import. Keep this list sorted.
from cm_fhir.cli import (  # noqa: F401
    adt_inspect,
    adt_send,
    cases,
    config,
    db,
    demo,
    intake,
    keys,
    outbox,
    retention,
    serve,
    validate,
    worker,
)
from cm_fhir.cli._app import app


def main() -> None:
    """Console-script entry point."""
    app()


__all__ = ["app", "main"]
