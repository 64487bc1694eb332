"""The console's panels, one router (and one template) each. Declarations only; no I/O at import.

:func:`panel_routers` imports every module of :data:`PANELS` that exists and returns its
``router``; a panel is added by writing its module and template and naming it here.
"""

from __future__ import annotations

import importlib
import importlib.util

from fastapi import APIRouter

__all__ = ["PANELS", "panel_routers"]

PANELS = (
    "sign_in",
    "static",
    "overview",
    "messages",
    "dead_letters",
    "outbox",
    "worklist",
    "cases",
    "reviews",
)


def panel_routers() -> list[APIRouter]:
    """The ``router`` of every panel module present in this package."""
    found: list[APIRouter] = []
    for name in PANELS:
        qualified = f"{__name__}.{name}"
        if importlib.util.find_spec(qualified) is None:
            continue
        router = getattr(importlib.import_module(qualified), "router", None)
        if not isinstance(router, APIRouter):
            raise TypeError(f"{qualified} must define `router = APIRouter(...)`")
        found.append(router)
    return found
