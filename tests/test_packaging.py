"""What a user installs: the wheel carries the types marker, the licence, the bundled data and the
offline docs assets; the help screens are clean. Builds the wheel once (a few seconds)."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps"),
            *("--no-build-isolation", "--wheel-dir", str(out), str(ROOT)),
        ],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("cm_fhir-*.whl")
    return zipfile.ZipFile(built)


def test_wheel_ships_the_types_marker_for_users_mypy(wheel: zipfile.ZipFile) -> None:
    assert "cm_fhir/py.typed" in wheel.namelist()


def test_wheel_ships_the_licence(wheel: zipfile.ZipFile) -> None:
    licences = [n for n in wheel.namelist() if ".dist-info/" in n and "LICENSE" in n]
    assert licences
    assert "Apache License" in wheel.read(licences[0]).decode()
    metadata = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    assert "Apache-2.0" in wheel.read(metadata).decode()


def test_wheel_ships_bundled_data_and_offline_docs(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    for expected in (
        "cm_fhir/_mappings/discharge-rules.yaml",
        "cm_fhir/api/docs_assets/swagger-ui-bundle.js",
        "cm_fhir/api/docs_assets/redoc.standalone.js",
        "cm_fhir/api/docs_assets/LICENSE.swagger-ui",
        "cm_fhir/api/docs_assets/LICENSE.redoc",
    ):
        assert expected in names, expected
    assert any(n.startswith("cm_fhir/_profiles/") for n in names)


def test_constraints_pin_every_dependency_of_the_dev_install() -> None:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    pins = {re.sub(r"[-_.]+", "-", line.split("==")[0].lower()) for line in lines if "==" in line}
    for required in ("fastapi", "typer", "sqlalchemy", "fhir-resources", "pytest", "hl7apy"):
        assert required in pins, required


def test_help_screens_show_no_type_placeholders() -> None:
    cli = str(Path(sys.executable).with_name("cm-fhir"))
    for command in ([], ["serve"], ["adt", "inspect"]):
        result = subprocess.run(
            [cli, *command, "--help"], capture_output=True, text=True, check=True
        )
        assert "Usage" in result.stdout
        for placeholder in ("<bool>", "<str>", "<int>", "<path>"):
            assert placeholder not in result.stdout.lower(), (command, placeholder)
