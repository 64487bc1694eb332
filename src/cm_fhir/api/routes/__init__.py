"""The API's routers, found by module name. Declarations only; no I/O at import.

:func:`routers` imports every module listed in :data:`ROUTE_MODULES` that exists and returns its
``router`` (a :class:`fastapi.APIRouter`). A module that is not there is skipped, so a route
module can be added to the package (and the list) without touching the app factory.
"""

from __future__ import annotations

import importlib
import importlib.util

from fastapi import APIRouter

__all__ = ["ROUTE_MODULES", "routers"]

# Order is the order in the OpenAPI document.
ROUTE_MODULES = (
    "health",
    "messages",
    "outbox",
    "cases",
    "case_reviews",
    "case_managers",
    "tasks",
    "utilization",
    "claim_inquiry",
    "payer_messages",
    "subscriptions",
    "fhir",
    "ehr_notifications",
)


def routers() -> list[APIRouter]:
    """The ``router`` of every route module present in this package."""
    found: list[APIRouter] = []
    for name in ROUTE_MODULES:
        qualified = f"{__name__}.{name}"
        if importlib.util.find_spec(qualified) is None:
            continue
        module = importlib.import_module(qualified)
        router = getattr(module, "router", None)
        if not isinstance(router, APIRouter):
            raise TypeError(f"{qualified} must define `router = APIRouter(...)`")
        found.append(router)
    return found
