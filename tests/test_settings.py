"""Settings: precedence of flags, environment, config file and defaults; file formats; errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cm_fhir.cli import app
from cm_fhir.errors import ConfigError
from cm_fhir.settings import Settings, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CM_FHIR_API_KEYS", "CM_FHIR_DATABASE_URL", "CM_FHIR_HTTP__PORT"):
        monkeypatch.delenv(name, raising=False)


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
