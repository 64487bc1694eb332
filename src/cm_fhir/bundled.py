"""Where the bundled data folders are (``mappings/``, ``profiles/``, ``examples/``). Pure.

In a source checkout they sit at the repository root; an installed wheel carries them inside the
package as ``cm_fhir/_<name>`` (see ``[tool.hatch.build.targets.wheel.force-include]``).
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path


@cache
def bundled_dir(name: str) -> Path:
    """The bundled folder ``name``: inside an installed wheel, or at a source checkout's root."""
    packaged = resources.files("cm_fhir") / f"_{name}"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[2] / name
