"""Settings: precedence of flags, environment, config file and defaults; file formats; errors."""

from __future__ import annotations

import os
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from cm_fhir.cli import app
from cm_fhir.errors import ConfigError
from cm_fhir.listener_config import ListenerConfig
from cm_fhir.service_roles import site_mappings
from cm_fhir.settings import MllpSettings, Settings, WorkerSettings, load_settings
from cm_fhir.store.engine import async_url
from cm_fhir.worker import WorkerConfig

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("CM_FHIR_") or name == "DATABASE_URL":
            monkeypatch.delenv(name)


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cm-fhir.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_flags_beat_environment_beat_file_beat_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _toml(
        tmp_path,
        '[http]\nport = 8001\nhost = "127.0.0.2"\n[mllp]\nport = 3001\nmax_connections = 7\n',
    )
    monkeypatch.setenv("CM_FHIR_HTTP__PORT", "8002")
    monkeypatch.setenv("CM_FHIR_MLLP__PORT", "3002")
    settings = load_settings(config, {"mllp": {"port": 3003}})
    assert settings.mllp.port == 3003  # flag over environment
    assert settings.http.port == 8002  # environment over file
    assert settings.http.host == "127.0.0.2"  # file over default
    assert settings.mllp.max_connections == 7  # a nested flag leaves the file's siblings alone
    assert settings.worker.batch_size == Settings.model_fields["worker"].default.batch_size


def test_yaml_file_and_comma_separated_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "cm-fhir.yaml"
    path.write_text("auth:\n  jwks_url: https://auth.example.org/jwks\n  audience: cm\n")
    monkeypatch.setenv("CM_FHIR_API_KEYS", "first-key-0123456789, second-key-0123456789")
    settings = load_settings(path)
    assert settings.auth.jwks_url == "https://auth.example.org/jwks"
    assert [k.get_secret_value() for k in settings.api_keys] == [
        "first-key-0123456789",
        "second-key-0123456789",
    ]
    assert "first-key" not in repr(settings)


def test_embedded_database_lives_in_the_data_dir(tmp_path: Path) -> None:
    settings = load_settings(overrides={"data_dir": tmp_path})
    assert settings.embedded_database
    assert settings.effective_database_url.endswith(f"{tmp_path}/cm-fhir.sqlite3")
    other = load_settings(overrides={"database_url": "postgresql+asyncpg://db/cm"})
    assert not other.embedded_database
    assert other.effective_database_url == "postgresql+asyncpg://db/cm"


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[http]\nport = 'eighty'\n", "http.port"),
        ("[http]\nprot = 80\n", "http.prot"),
        ("api_keys = ['short']\n", "api_keys"),
        ("[http\n", "not valid TOML"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_settings(_toml(tmp_path, text))


def test_other_file_types_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "cm-fhir.ini"
    path.write_text("[http]\n")
    with pytest.raises(ConfigError, match=r"\.toml, \.yaml or \.yml"):
        load_settings(path)


def test_config_example_loads_and_matches_the_defaults(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["config", "example"])
    assert result.exit_code == 0
    example = load_settings(_toml(tmp_path, result.output))
    assert example == load_settings()
    for section in ("[http]", "[mllp]", "[worker]", "[auth]"):
        assert section in result.output


def _setting_keys() -> list[str]:
    """Every setting as a config key: ``data_dir``, ``http.port``, ..."""
    keys: list[str] = []
    defaults = Settings.model_construct()
    for name in Settings.model_fields:
        value = getattr(defaults, name)
        if isinstance(value, BaseModel):
            keys += [f"{name}.{sub}" for sub in type(value).model_fields]
        else:
            keys.append(name)
    return keys


def test_config_example_names_every_setting() -> None:
    example = CliRunner().invoke(app, ["config", "example"]).output
    section = ""
    found: set[str] = set()
    for line in example.splitlines():
        if match := re.match(r"^\[(\w+)\]", line):
            section = match.group(1) + "."
        elif match := re.match(r"^#? ?(\w+) = ", line):
            found.add(section + match.group(1))
    assert set(_setting_keys()) <= found


def test_readme_settings_table_lists_every_setting() -> None:
    table = [line for line in README.read_text().splitlines() if line.startswith("| `")]
    listed = {m.group(1) for line in table if (m := re.match(r"^\| `([\w.]+)`", line))}
    missing = [key for key in _setting_keys() if key not in listed]
    assert not missing, f"README settings table lacks {missing}"


def test_plain_database_url_is_used_below_the_cm_fhir_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _toml(tmp_path, 'database_url = "sqlite:///from-file.db"\n')
    assert load_settings(config).database_url == "sqlite:///from-file.db"
    monkeypatch.setenv("DATABASE_URL", "postgres://app@db.example.org/app")
    assert load_settings(config).database_url == "postgres://app@db.example.org/app"
    monkeypatch.setenv("CM_FHIR_DATABASE_URL", "postgresql://cm@db.example.org/cm")
    assert load_settings(config).database_url == "postgresql://cm@db.example.org/cm"
    flag = load_settings(config, {"database_url": "sqlite:///flag.db"})
    assert flag.database_url == "sqlite:///flag.db"


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("sqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("postgresql://cm@db/cm", "postgresql+asyncpg://cm@db/cm"),
        ("postgres://cm@db/cm", "postgresql+asyncpg://cm@db/cm"),
        ("postgresql+asyncpg://cm@db/cm", "postgresql+asyncpg://cm@db/cm"),
        ("postgresql://cm@db/cm?sslmode=require", "postgresql+asyncpg://cm@db/cm?ssl=require"),
    ],
)
def test_plain_urls_get_the_async_driver(given: str, used: str) -> None:
    assert async_url(given).render_as_string(hide_password=False) == used


@pytest.mark.parametrize(
    ("url", "named"), [("mysql://db/cm", "mysql:// is not supported"), ("db.sqlite", "not a")]
)
def test_unusable_database_urls_are_named(url: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        async_url(url)


def test_the_old_schema_setting_names_are_refused_with_the_new_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError, match="database_search_path is now database_schema"):
        load_settings(_toml(tmp_path, 'database_search_path = "cm"\n'))
    monkeypatch.setenv("CM_FHIR_DATABASE_SEARCH_PATH", "cm")
    with pytest.raises(ConfigError, match="now CM_FHIR_DATABASE_SCHEMA"):
        load_settings()
    monkeypatch.delenv("CM_FHIR_DATABASE_SEARCH_PATH")
    monkeypatch.setenv("CM_FHIR_DATABASE_SCHEMA", "cm_site")
    assert load_settings().database_schema == "cm_site"


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"log": {"level": "loud"}}, "log.level: 'loud' is not one of DEBUG"),
        ({"timezone": "Mars/Olympus"}, "timezone: unknown time zone 'Mars/Olympus'"),
        ({"database_schema": "a, b"}, "database_schema: one PostgreSQL schema name"),
        ({"mappings_dir": "no-such-folder"}, "mappings_dir: no-such-folder is not a folder"),
    ],
)
def test_site_settings_are_checked_at_load(overrides: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(named)):
        load_settings(overrides=overrides)


def test_log_level_is_case_insensitive() -> None:
    assert load_settings(overrides={"log": {"level": "warning"}}).log.level == "WARNING"


def test_the_old_log_level_name_is_refused_naming_the_new_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CM_FHIR_LOG_LEVEL", "DEBUG")
    with pytest.raises(ConfigError, match="CM_FHIR_LOG_LEVEL is now CM_FHIR_LOG__LEVEL"):
        load_settings()


def test_mappings_dir_and_timezone_from_the_config_file_reach_the_workflow(
    tmp_path: Path,
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "discharge-rules.yaml").write_text('case_id_prefix: "zz"\n')
    config = _toml(tmp_path, f'mappings_dir = "{site}"\ntimezone = "America/Chicago"\n')
    settings = load_settings(config)
    mappings = site_mappings(settings)
    assert mappings.rules.case_id_prefix == "zz"  # the site folder's file
    assert mappings.rules.timezone == "America/Chicago"  # the setting over the rules file
    bundled = site_mappings(load_settings())
    assert (bundled.rules.case_id_prefix, bundled.rules.timezone) == ("dp", "UTC")


def test_listener_and_worker_defaults_are_the_settings_defaults() -> None:
    listener = ListenerConfig()
    from_settings = ListenerConfig.from_settings(MllpSettings())
    for field in fields(ListenerConfig):
        assert getattr(listener, field.name) == getattr(from_settings, field.name), field.name
    assert WorkerConfig() == WorkerConfig.from_settings(WorkerSettings())
    changed = WorkerConfig.from_settings(
        load_settings(overrides={"worker": {"batch_size": 9, "apply_processing_ids": "p,t"}}).worker
    )
    assert (changed.batch_size, changed.apply_processing_ids) == (9, frozenset({"P", "T"}))


async def test_the_api_serves_with_the_mappings_dir_setting(tmp_path: Path) -> None:
    import httpx

    from cm_fhir.api.app import create_app
    from cm_fhir.store.engine import engine_for, upgrade_database

    site = tmp_path / "site"
    site.mkdir()
    (site / "fhir-identity.yaml").write_text("canonical_base: https://site.example.org/fhir\n")
    config = _toml(tmp_path, f'mappings_dir = "{site}"\ndata_dir = "{tmp_path / "data"}"\n')
    settings = load_settings(config)
    settings.data_dir.mkdir()
    engine = engine_for(settings)
    await upgrade_database(engine)
    api = create_app(settings, engine=engine)
    try:
        async with api.router.lifespan_context(api):
            transport = httpx.ASGITransport(api)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                statement = (await client.get("/fhir/metadata")).json()
    finally:
        await engine.dispose()
    profiles = [r["profile"] for r in statement["rest"][0]["resource"] if "profile" in r]
    assert profiles
    assert all(p.startswith("https://site.example.org/fhir/") for p in profiles), profiles
