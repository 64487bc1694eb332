"""Process-wide logging: text or one JSON object per line, request ids, quiet libraries. I/O edge.

:func:`configure_logging` is called once by each long-running command (``serve``, ``listen``,
``worker``). It puts one handler on the root logger, so every line goes through the same formatter:
cm-fhir's own, uvicorn's and Alembic's. With ``format="json"`` each line is one JSON object with
``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message`` and the structured fields passed as
``extra=`` (``inbox_id``, ``control_id``, ``ack_code``, ...); text lines carry the same fields as
``key=value`` after the message. A request id set by the API (:data:`request_id`) is added to every
line logged while that request runs.

What may be logged is decided where the line is written: ids, codes, counts, addresses, error
types and positions; never message content, patient data, tokens or exception messages of other
libraries (they may quote the input). The formatter adds nothing of a record beyond its message,
its fields and, for an exception, its type and stack frames (not its message).
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from contextvars import ContextVar
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

__all__ = [
    "LEVELS",
    "JsonFormatter",
    "LogFormat",
    "TextFormatter",
    "configure_logging",
    "console_json",
    "fields_of",
    "request_id",
]

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: The id of the HTTP request being handled (set by the API's access-log middleware).
request_id: ContextVar[str | None] = ContextVar("cm_fhir_request_id", default=None)

# Libraries that narrate their start-up at INFO: heard only at DEBUG.
_CHATTY = ("alembic", "uvicorn", "uvicorn.error", "uvicorn.access")
_RESERVED = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "taskName"}
)


class LogFormat(StrEnum):
    """How log lines are written."""

    TEXT = "text"
    JSON = "json"


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields of a record: what was passed as ``extra=``, plus the request id."""
    fields = {k: v for k, v in record.__dict__.items() if k not in _RESERVED}
    rid = request_id.get()
    if rid is not None:
        fields.setdefault("request_id", rid)
    return fields


def _exception(record: logging.LogRecord) -> dict[str, Any]:
    if not record.exc_info or record.exc_info[0] is None:
        return {}
    kind, _value, tb = record.exc_info
    # The exception's message is left out: errors of parsers and drivers may quote their input.
    return {"exc_type": kind.__name__, "stack": "".join(traceback.format_tb(tb)).rstrip()}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, then the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in fields_of(record).items():
            line.setdefault(key, value)
        line.update(_exception(record))
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``time level logger message key=value ...`` on one line (exception: type and frames)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text
        record.exc_info, record.exc_text = None, None  # the message of an exception stays out
        try:
            text = super().format(record)
        finally:
            record.exc_info, record.exc_text = saved
        fields = fields_of(record)
        if fields:
            text += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        error = _exception(record)
        if error:
            text += f" exc_type={error['exc_type']}\n{error['stack']}"
        return text


def console_json(message: str, logger: str) -> str:
    """A console line (stdout) as the JSON object a log line would be, for ``--log-format json``."""
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    line = {"time": now, "level": "INFO", "logger": logger, "message": message}
    return json.dumps(line, ensure_ascii=False)


def configure_logging(level: str = "INFO", fmt: LogFormat | str = LogFormat.TEXT) -> None:
    """Route every logger through one stderr handler with the chosen format and level.

    Replaces handlers set before (a second call reconfigures). Alembic and uvicorn log only
    warnings unless ``level`` is DEBUG.
    """
    name = level.upper()
    if name not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if LogFormat(fmt) is LogFormat.JSON else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(name)
    quiet = logging.DEBUG if name == "DEBUG" else max(logging.WARNING, logging.getLevelName(name))
    for library in _CHATTY:
        logger = logging.getLogger(library)
        logger.setLevel(quiet)
        for old in list(logger.handlers):  # uvicorn and alembic bring their own handlers
            logger.removeHandler(old)
        logger.propagate = True
