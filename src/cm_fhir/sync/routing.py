"""Which endpoints receive a case's outbox Bundles, from the settings. No I/O."""

from __future__ import annotations

from cm_fhir.settings import Settings
from cm_fhir.store.case_writes import DEFAULT_ROUTES, OutboxRoute

__all__ = ["outbox_routes"]


def outbox_routes(settings: Settings) -> tuple[OutboxRoute, ...]:
    """One route per configured endpoint (its programmes, or all); ``default`` when none is."""
    routes = tuple(
        OutboxRoute(e.name, frozenset(e.programmes) if e.programmes else None)
        for e in settings.endpoints
    )
    return routes or DEFAULT_ROUTES
