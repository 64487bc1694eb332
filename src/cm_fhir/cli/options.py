"""The options every command shares, and the one way a command gets its settings. I/O edge.

Every command that touches the database, the mappings or the service takes the same flags
(``--config``, ``--database-url``, ``--data-dir``, ``--database-schema``; ``--mappings`` and
``--timezone`` where messages are read; ``--log-level`` where a service runs) and builds its
:class:`~cm_fhir.settings.Settings` with :func:`settings_from`: flags > ``CM_FHIR_`` environment >
config file > defaults. A command that opens the database declares the first four once, as a
``store: StoreOptions`` parameter under :func:`store_options`, and builds its settings with
:meth:`StoreOptions.settings`. So ``serve``, ``listen``, ``worker``, ``replay``, ``db ...`` and
``adt inspect --dry-run`` all find the same database. :func:`existing_database` opens it for
commands that only read or repair it, refusing (in one line) a database that is not there.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from cm_fhir.errors import ConfigError
from cm_fhir.logs import LEVELS, LogFormat
from cm_fhir.logs import configure_logging as configure_log_lines
from cm_fhir.settings import Settings, load_settings

if TYPE_CHECKING:  # the database layer is imported by the commands that open one
    from sqlalchemy.ext.asyncio import AsyncEngine


__all__ = [
    "ConfigOption",
    "DataDirOption",
    "DatabaseSchemaOption",
    "DatabaseUrlOption",
    "LogFormatOption",
    "LogLevelOption",
    "MappingsOption",
    "StoreOptions",
    "TimezoneOption",
    "cannot_open",
    "configure_logging",
    "database_label",
    "existing_database",
    "settings_from",
    "store_options",
]

# Help texts end with the default in brackets, escaped: rich would take "[word]" for markup.
_PANEL = "Settings (flags > CM_FHIR_ environment > --config file > defaults)"

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        envvar="CM_FHIR_CONFIG",
        help="TOML or YAML config file.",
        rich_help_panel=_PANEL,
        show_default=False,
    ),
]
DatabaseUrlOption = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="sqlite:///file.db or postgresql://user@host/db \\[cm-fhir.sqlite3 in the data dir].",
        rich_help_panel=_PANEL,
        show_default=False,
    ),
]
DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Folder of the embedded SQLite database \\[cm-fhir-data].",
        rich_help_panel=_PANEL,
        show_default=False,
    ),
]
DatabaseSchemaOption = Annotated[
    str | None,
    typer.Option(
        "--database-schema",
        help="PostgreSQL schema cm-fhir lives in \\[the server's search_path].",
        rich_help_panel=_PANEL,
        show_default=False,
    ),
]
MappingsOption = Annotated[
    Path | None,
    typer.Option(
        "--mappings",
        help="Site folder whose mapping files override the bundled ones.",
        rich_help_panel=_PANEL,
        show_default=False,
    ),
]
TimezoneOption = Annotated[
    str | None,
    typer.Option(
        "--timezone",
        help="IANA zone of HL7 times without an offset \\[discharge-rules.yaml: UTC].",
        rich_help_panel=_PANEL,
        show_default=False,
    ),
]
LogLevelOption = Annotated[
    str | None,
    typer.Option(
        "--log-level",
        help=f"{', '.join(LEVELS)} \\[INFO].",
        rich_help_panel=_PANEL,
        show_default=False,
    ),
]

LogFormatOption = Annotated[
    LogFormat | None,
    typer.Option(
        "--log-format",
        help="text, or json: one JSON object per line \\[text].",
        rich_help_panel=_PANEL,
        show_default=False,
    ),
]


def _given(values: dict[str, Any]) -> dict[str, Any]:
    """The values a user gave (None: not given); nested sections keep only theirs."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            value = _given(value)
            if not value:
                continue
        if value is not None:
            out[key] = value
    return out


def settings_from(config: Path | None, **flags: Any) -> Settings:
    """The settings of one command: ``flags`` (None = not given) over env, file and defaults.

    Sections are passed as dicts: ``settings_from(config, http={"port": port})``. A bad value
    exits 2 naming the setting.
    """
    return load_settings(config, _given(flags))


@dataclass(frozen=True, slots=True)
class StoreOptions:
    """The flags that find the database (``--config``, ``--database-url``, ``--data-dir``,
    ``--database-schema``), as one value; None means not given."""

    config: Path | None = None
    database_url: str | None = None
    data_dir: Path | None = None
    database_schema: str | None = None

    def settings(self, **flags: Any) -> Settings:
        """:func:`settings_from` with these flags and the command's own ``flags``."""
        return settings_from(
            self.config,
            database_url=self.database_url,
            data_dir=self.data_dir,
            database_schema=self.database_schema,
            **flags,
        )


_STORE_ANNOTATIONS: dict[str, Any] = {
    "config": ConfigOption,
    "database_url": DatabaseUrlOption,
    "data_dir": DataDirOption,
    "database_schema": DatabaseSchemaOption,
}
_R = TypeVar("_R")


def store_options(command: Callable[..., _R]) -> Callable[..., _R]:
    """Give a typer command the :class:`StoreOptions` flags in place of its ``store`` parameter.

    Put it under ``@app.command()``. The command declares ``store: StoreOptions`` where the four
    flags belong on its help screen, and receives them in one :class:`StoreOptions`.
    """
    signature = inspect.signature(command, eval_str=True)
    if "store" not in signature.parameters:
        raise TypeError(f"{command.__name__} has no `store` parameter")
    names = [f.name for f in fields(StoreOptions)]
    params: list[inspect.Parameter] = []
    for param in signature.parameters.values():
        if param.name == "store":
            params += [
                inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=a)
                for name, a in _STORE_ANNOTATIONS.items()
            ]
        else:
            params.append(param.replace(kind=inspect.Parameter.KEYWORD_ONLY))

    @functools.wraps(command)
    def with_store(**values: Any) -> _R:
        store = StoreOptions(**{name: values.pop(name) for name in names})
        return command(store=store, **values)

    with_store.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    with_store.__annotations__ = {p.name: p.annotation for p in params}
    return with_store


def configure_logging(settings: Settings) -> None:
    """Log lines on stderr per the ``log`` settings (level, text or JSON); Alembic's and
    uvicorn's chatter only at DEBUG."""
    configure_log_lines(settings.log.level, settings.log.format)


def database_label(settings: Settings) -> str:
    """The database for messages: the SQLite file, or the URL without its password."""
    from cm_fhir.store.engine import async_url

    url = async_url(settings.effective_database_url)
    if url.get_backend_name() == "sqlite":
        return str(url.database)
    label = url.set(drivername=url.get_backend_name()).render_as_string(hide_password=True)
    return f"{label} (schema {settings.database_schema})" if settings.database_schema else label


def cannot_open(settings: Settings, exc: BaseException) -> ConfigError:
    """The one-line error for a database that cannot be reached (the driver's words)."""
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return ConfigError(
        f"cannot open the database {database_label(settings)}: {reason[0] if reason else 'refused'}"
    )


async def existing_database(settings: Settings) -> AsyncEngine:
    """An engine on the configured database, which must exist and be migrated.

    Raises:
        ConfigError: no SQLite file there, the server cannot be reached, or no cm-fhir schema;
            the message names the database and the command that fixes it.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from cm_fhir.store.engine import async_url, current_revision, engine_for

    url = async_url(settings.effective_database_url)
    label = database_label(settings)
    if url.get_backend_name() == "sqlite" and not Path(str(url.database)).is_file():
        raise ConfigError(
            f"no database at {label}: start `cm-fhir serve` or run `cm-fhir db upgrade` first, "
            "or point --database-url / --data-dir at yours"
        )
    engine = engine_for(settings, pool_size=1)
    try:
        revision = await current_revision(engine)
    except (SQLAlchemyError, OSError) as exc:
        await engine.dispose()
        raise cannot_open(settings, exc) from exc
    if revision is None:
        await engine.dispose()
        raise ConfigError(f"the database {label} has no cm-fhir schema: run `cm-fhir db upgrade`")
    return engine
