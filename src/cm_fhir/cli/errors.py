"""How the CLI reports errors: one readable line per problem on stderr, a status, no traceback.

Exit statuses: 0 success, 1 the input was read but has problems (a failed check: validation
errors, a message that did not parse, a dead letter that is not one), 2 the input is
unusable (bad usage, a missing file, bad JSON, a bad setting, a port in use, a database that
cannot be opened). :func:`explain` turns any exception that reaches the command line into such a
line: the messages of cm-fhir's own errors, the file and reason of an ``OSError``; never a class
name or a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NoReturn

import pydantic
import typer

from cm_fhir.errors import CmFhirError, ConfigError, StoreError

EXIT_PROBLEMS = 1
EXIT_UNUSABLE = 2


def fail(message: str, status: int = EXIT_UNUSABLE) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(status)


def explain(exc: BaseException) -> tuple[int, str]:
    """The exit status and the one-line message for an error that reached the command line."""
    if isinstance(exc, (ConfigError, StoreError)):
        return EXIT_UNUSABLE, str(exc)
    if isinstance(exc, CmFhirError):
        return EXIT_PROBLEMS, str(exc)
    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc) or "operating system error"
        where = f"{exc.filename}: " if exc.filename else ""
        return EXIT_UNUSABLE, f"{where}{reason}"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return EXIT_PROBLEMS, f"unexpected failure: {first or 'no detail'} (a bug: please report it)"


def json_path(loc: tuple[int | str, ...]) -> str:
    """A JSON path (``$.tasks[0].status``) for a pydantic error location."""
    out = "$"
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def read_json(path: Path) -> Any:
    """Read a JSON file; unreadable files and syntax errors exit 2 naming file, line and column."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"{path}: cannot read ({exc.strerror or 'unreadable'})")
    except UnicodeDecodeError:
        fail(f"{path}: not UTF-8 text")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"{path}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}")


def report_validation(path: Path, exc: pydantic.ValidationError) -> NoReturn:
    """Print every schema problem with its JSON path, then exit 2."""
    for error in exc.errors():
        where = json_path(tuple(error["loc"]))
        typer.echo(f"error: {path}: {where}: {error['msg']}", err=True)
    raise typer.Exit(EXIT_UNUSABLE)
