"""Service settings (pydantic-settings): the one configuration of every ``cm-fhir`` command.

No global instance; reads the environment and files. :func:`load_settings` builds one
:class:`Settings` from, highest priority first: explicit values (the command-line flags), the
environment (``CM_FHIR_`` prefix, nested fields joined with ``__``, e.g.
``CM_FHIR_HTTP__PORT=8081``; a plain ``DATABASE_URL`` is used when ``CM_FHIR_DATABASE_URL`` is
unset), an optional TOML or YAML config file, then the defaults below. Nothing is read at import
time: the CLI and the tests each call :func:`load_settings`. Secrets (API keys) are
:class:`~pydantic.SecretStr`, so they never appear in a repr or a log line.

The defaults of the listener (:class:`MllpSettings`) and of the workers (:class:`WorkerSettings`)
live here only; :class:`cm_fhir.listener_config.ListenerConfig` and
:class:`cm_fhir.worker.WorkerConfig` take theirs from these models. A new settings section is a
``_Section`` subclass plus one field on :class:`Settings`; ``cm-fhir config example`` and the
``CM_FHIR_<SECTION>__<KEY>`` variables follow from the model.
"""

from __future__ import annotations

import os
import re
import tomllib
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic import ValidationError as PydanticValidationError
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from cm_fhir.errors import ConfigError
from cm_fhir.logs import LEVELS, LogFormat
from cm_fhir.mllp_peers import parse_networks
from cm_fhir.retention_policy import RetentionSettings
from cm_fhir.sync.config import (
    EhrSettings,
    EndpointSettings,
    PayerEndpointSettings,
    PayerSettings,
    configured_endpoints,
    configured_payers,
)

__all__ = [
    "DATABASE_DRIVERS",
    "AuthSettings",
    "HealthSettings",
    "HttpSettings",
    "LogSettings",
    "MllpSettings",
    "RetentionSettings",
    "Role",
    "Settings",
    "WorkerSettings",
    "load_settings",
    "read_config_file",
]

SQLITE_FILE_NAME = "cm-fhir.sqlite3"
#: URL schemes cm-fhir accepts -> the async driver it uses for them.
DATABASE_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+pysqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+psycopg2": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "postgresql+psycopg": "postgresql+psycopg",
}
#: Setting names of earlier releases, and the name that replaced each.
RENAMED = {"database_search_path": "database_schema", "log_level": "log.level"}
_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class Role(StrEnum):
    """What one ``cm-fhir serve`` process runs."""

    API = "api"
    LISTENER = "listener"
    WORKER = "worker"
    SYNC = "sync"
    ALL = "all"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HttpSettings(_Section):
    """The HTTP API (FastAPI under uvicorn)."""

    host: str = Field(
        "127.0.0.1", description="Address to bind; beyond loopback needs API keys or a JWKS."
    )
    port: int = Field(8080, ge=0, le=65535, description="0 picks a free port.")
    max_body_bytes: int = Field(
        1_048_576,
        gt=0,
        description="Largest request body accepted on any route (HL7v2 over HTTP included); "
        "larger is 413, read no further.",
    )
    graceful_timeout: float = Field(10.0, gt=0, description="Seconds to finish open requests.")
    root_path: str = Field("", description="Prefix when served behind a reverse proxy.")


class MllpSettings(_Section):
    """The MLLP listener (0 disables a limit or a timeout)."""

    host: str = Field(
        "127.0.0.1",
        description="Address to bind; beyond loopback needs TLS, allowed_networks or "
        "allow_public_bind.",
    )
    port: int = Field(2575, ge=0, le=65535, description="0 picks a free port.")
    max_connections: int = Field(64, gt=0, description="Connections at once.")
    max_connections_per_peer: int = Field(
        8, ge=0, description="Per client address, and per TLS client certificate subject."
    )
    max_message_bytes: int = Field(
        1_048_576, gt=0, description="Largest frame; larger is refused with an AR."
    )
    idle_timeout: float = Field(600.0, ge=0, description="Seconds without a whole frame.")
    frame_timeout: float = Field(60.0, ge=0, description="Seconds for a begun frame to end.")
    shutdown_grace: float = Field(10.0, gt=0, description="Seconds to finish in-flight frames.")
    tls_cert: Path | None = Field(None, description="PEM certificate chain: MLLP over TLS.")
    tls_key: Path | None = Field(None, description="PEM private key for tls_cert.")
    tls_client_ca: Path | None = Field(
        None, description="PEM CA: require client certificates it signed (mutual TLS)."
    )
    allowed_networks: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="Client addresses/CIDR networks allowed (comma-separated); empty: all."
    )
    allowed_senders: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="MSH-3|MSH-4 senders allowed ('APP|FAC', 'APP', '*|FAC'); empty: all."
    )
    allow_public_bind: bool = Field(
        False, description="Listen beyond loopback without TLS or allowed_networks."
    )
    unreadable_keep_bytes: int = Field(
        4096, ge=0, description="Bytes of an unreadable message stored (with its SHA-256)."
    )
    unreadable_limit: int = Field(
        10, ge=0, description="Unreadable frames from one address per window: then a cool-down."
    )
    unreadable_window: float = Field(60.0, gt=0, description="Seconds.")
    cooldown: float = Field(300.0, ge=0, description="Seconds a peer's connections are refused.")

    @field_validator("allowed_networks", "allowed_senders", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("allowed_networks")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        parse_networks(value)  # raises ValueError naming the bad entry
        return value


class WorkerSettings(_Section):
    """The inbox workers."""

    concurrency: int = Field(
        2, gt=0, description="Worker loops on PostgreSQL (SQLite always runs one)."
    )
    batch_size: int = Field(200, gt=0, description="Inbox rows claimed per transaction.")
    batch_seconds: float | None = Field(
        None,
        ge=0,
        description="Seconds a batch's writing transaction should take while messages arrive: "
        "the worker then claims fewer rows when its batches took longer, so the inbox writer's "
        "ACKs wait less behind it; with nothing arriving it claims batch_size (0: always "
        "batch_size; unset: 0.005 on SQLite, whose one write lock ACKs wait on, and 0 on "
        "PostgreSQL).",
    )
    max_attempts: int = Field(5, gt=0, description="Attempts before a row is dead-lettered.")
    retry_delay: float = Field(5.0, ge=0, description="Seconds between attempts of a row.")
    poll_interval: float = Field(0.5, gt=0, description="Seconds between polls when idle.")
    shutdown_grace: float = Field(30.0, gt=0, description="Seconds to finish the batch in flight.")
    close_check_seconds: float = Field(
        60.0, gt=0, le=3600, description="Seconds between checks for cases due to close."
    )
    apply_processing_ids: Annotated[tuple[str, ...], NoDecode] = Field(
        ("P",),
        description="MSH-11 processing ids applied to cases (P, T, D; comma-separated in the "
        "environment); messages with others are stored, acknowledged and ignored.",
    )

    @field_validator("apply_processing_ids", mode="before")
    @classmethod
    def _split_ids(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("apply_processing_ids")
    @classmethod
    def _known_ids(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        ids = tuple(dict.fromkeys(v.upper() for v in value))
        unknown = [v for v in ids if v not in ("P", "T", "D")]
        if unknown:
            raise ValueError("processing ids are P (production), T (training), D (debugging)")
        return ids


class HealthSettings(_Section):
    """What ``/ready`` checks besides the database, the schema and the roles."""

    max_inbox_age_seconds: float = Field(
        300.0,
        ge=0,
        description="/ready is 503 when the oldest unprocessed inbox message is older; 0 disables.",
    )
    write_probe_timeout: float = Field(
        2.0, gt=0, description="Seconds the inbox write probe may wait for the inbox's lock."
    )


class AuthSettings(_Section):
    """OAuth2 bearer tokens (JWT) checked against a JWKS; static keys are ``api_keys``."""

    jwks_url: str | None = Field(None, description="JWKS of the authorisation server.")
    issuer: str | None = Field(None, description="Required `iss` claim.")
    audience: str | None = Field(None, description="Required `aud` claim.")
    algorithms: tuple[str, ...] = Field(
        ("RS256", "ES256", "PS256"), description="Signature algorithms accepted (asymmetric)."
    )
    leeway: float = Field(30.0, ge=0, description="Clock skew allowed on exp/nbf, seconds.")
    jwks_cache_seconds: int = Field(300, gt=0, description="Seconds the JWKS is cached.")
    jwks_timeout: float = Field(5.0, gt=0, description="Seconds to fetch the JWKS.")

    @property
    def jwt_enabled(self) -> bool:
        return self.jwks_url is not None


class LogSettings(_Section):
    """Log lines of ``serve``, ``listen`` and ``worker`` (stderr)."""

    level: str = Field("INFO", description="DEBUG, INFO, WARNING, ERROR or CRITICAL.")
    format: LogFormat = Field(LogFormat.TEXT, description="text, or json: one object per line.")

    @field_validator("level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        if value.upper() not in LEVELS:
            raise ValueError(f"{value!r} is not one of {', '.join(LEVELS)}")
        return value.upper()


class Settings(BaseSettings):
    """Everything ``cm-fhir serve`` needs; build it with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="CM_FHIR_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        validate_default=True,
    )

    data_dir: Path = Field(
        Path("cm-fhir-data"), description="Folder of the embedded SQLite database."
    )
    database_url: str | None = Field(
        None,
        description="sqlite:///file.db, postgresql://user@host/db (or with an explicit async "
        "driver); unset: cm-fhir.sqlite3 in data_dir.",
    )
    database_schema: str | None = Field(
        None,
        description="PostgreSQL schema cm-fhir lives in (db upgrade creates it); unset: the "
        "server's search_path (public).",
    )
    mappings_dir: Path | None = Field(
        None, description="Site folder whose mapping files override the bundled ones."
    )
    timezone: str | None = Field(
        None,
        description="IANA zone of HL7 times without an offset; unset: discharge-rules.yaml (UTC).",
    )
    api_keys: Annotated[tuple[SecretStr, ...], NoDecode] = Field(
        (), description="Static API keys, 16+ characters (comma-separated in the environment)."
    )
    http: HttpSettings = HttpSettings()
    mllp: MllpSettings = MllpSettings()
    worker: WorkerSettings = WorkerSettings()
    auth: AuthSettings = AuthSettings()
    health: HealthSettings = HealthSettings()
    log: LogSettings = LogSettings()
    retention: RetentionSettings = RetentionSettings()
    ehr_url: str | None = Field(
        None, pattern=r"^https?://", description="FHIR base URL of the EHR (endpoint 'default')."
    )
    ehr: EhrSettings = EhrSettings()
    payer_url: str | None = Field(
        None,
        pattern=r"^https?://",
        description="FHIR base URL of the payer notified of admissions and asked for reviews "
        "(payer endpoint 'payer').",
    )
    payer: PayerSettings = PayerSettings()

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str | None) -> str | None:
        if value is None:
            return None
        scheme, separator, _ = value.partition("://")
        if not separator:
            raise ValueError("not a database URL (sqlite:///file.db or postgresql://user@host/db)")
        if scheme.lower() not in DATABASE_DRIVERS:
            raise ValueError(f"{scheme}:// is not supported; use sqlite:// or postgresql://")
        return value

    @field_validator("database_schema")
    @classmethod
    def _schema_name(cls, value: str | None) -> str | None:
        if value is not None and not _SCHEMA_NAME.match(value):
            raise ValueError("one PostgreSQL schema name: letters, digits and _ (not quoted)")
        return value

    @field_validator("mappings_dir")
    @classmethod
    def _mappings_folder(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_dir():
            raise ValueError(f"{value} is not a folder")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (an IANA name: Europe/Berlin)") from exc
        return value

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("api_keys")
    @classmethod
    def _keys_long_enough(cls, value: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        for key in value:
            if len(key.get_secret_value()) < 16:
                raise ValueError("every API key needs at least 16 characters")
        return value

    @property
    def embedded_database(self) -> bool:
        """True when no URL is configured: the SQLite file under ``data_dir`` is used."""
        return self.database_url is None

    @property
    def effective_database_url(self) -> str:
        """The configured URL, or the embedded SQLite file (absolute path) under ``data_dir``."""
        if self.database_url is not None:
            return self.database_url
        return f"sqlite:///{(self.data_dir / SQLITE_FILE_NAME).resolve()}"

    @property
    def endpoints(self) -> tuple[EndpointSettings, ...]:
        """The FHIR endpoints the outbox is delivered to (``ehr_url`` is ``default``)."""
        return configured_endpoints(self.ehr_url, self.ehr)

    @property
    def payer_endpoints(self) -> tuple[PayerEndpointSettings, ...]:
        """The payers messages go to (``payer_url`` is ``payer``)."""
        return configured_payers(self.payer_url, self.payer, self.endpoints)

    @property
    def credentials_configured(self) -> bool:
        """Whether any way to authenticate is configured (API keys or a JWKS)."""
        return bool(self.api_keys) or self.auth.jwt_enabled


def read_config_file(path: Path) -> dict[str, Any]:
    """Read a TOML (``.toml``) or YAML (``.yaml``/``.yml``) config file into a dict."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror})") from exc
    try:
        if path.suffix == ".toml":
            data: Any = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
        else:
            raise ConfigError(f"{path}: config files are .toml, .yaml or .yml")
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: not valid {path.suffix[1:].upper()}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the config file must hold a table/mapping at the top")
    return data


class _FileSource(PydanticBaseSettingsSource):
    """A dict of values (the config file, or ``DATABASE_URL``) as one source of settings."""

    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._data = data

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


def _check_renamed(file_data: dict[str, Any], config_file: Path | None) -> None:
    for old, new in RENAMED.items():
        variable = f"CM_FHIR_{old.upper()}"
        if variable in os.environ:
            replacement = f"CM_FHIR_{new.upper().replace('.', '__')}"
            raise ConfigError(f"{variable} is now {replacement}: rename the variable")
        if old in file_data:
            raise ConfigError(f"{config_file}: the key {old} is now {new}: rename it")


def _problems(exc: PydanticValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in error['loc']) or '(top)'}: "
        f"{error['msg'].removeprefix('Value error, ')}"
        for error in exc.errors()
    )


def load_settings(
    config_file: Path | None = None, overrides: dict[str, Any] | None = None
) -> Settings:
    """Settings from ``overrides`` > environment > ``config_file`` > defaults.

    ``overrides`` may be nested (``{"http": {"port": 0}}``); a nested override replaces only the
    keys it names. ``DATABASE_URL`` counts as ``CM_FHIR_DATABASE_URL`` when that is unset.
    Raises :class:`ConfigError` naming every bad key (never its value).
    """
    file_data = read_config_file(config_file) if config_file is not None else {}
    _check_renamed(file_data, config_file)
    plain_url = os.environ.get("DATABASE_URL")
    plain = {"database_url": plain_url} if plain_url else {}

    class _Loaded(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (
                init_settings,
                env_settings,
                _FileSource(settings_cls, plain),
                _FileSource(settings_cls, file_data),
            )

    try:
        loaded = _Loaded(**(overrides or {}))
    except PydanticValidationError as exc:
        raise ConfigError(f"invalid settings: {_problems(exc)}") from exc
    # A plain Settings (validated above), so instances compare and print as Settings.
    return Settings.model_construct(_fields_set=loaded.model_fields_set, **dict(loaded))
