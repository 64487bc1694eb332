"""Which endpoints receive a case's outbox Bundles, from the settings. No I/O."""

from __future__ import annotations

from cm_fhir.settings import Settings
from cm_fhir.store.case_writes import DEFAULT_ROUTES, OutboxRoute, PayerRoute

__all__ = ["outbox_routes", "payer_routes"]


def outbox_routes(settings: Settings) -> tuple[OutboxRoute, ...]:
    """One route per configured endpoint (its programmes, or all); ``default`` when none is."""
    routes = tuple(
        OutboxRoute(e.name, frozenset(e.programmes) if e.programmes else None)
        for e in settings.endpoints
    )
    return routes or DEFAULT_ROUTES


def payer_routes(settings: Settings) -> tuple[PayerRoute, ...]:
    """One route per payer endpoint (the payers it serves, or all); none when none is set."""
    return tuple(
        PayerRoute(e.name, e.base_url, frozenset(e.payers) if e.payers else None)
        for e in settings.payer_endpoints
    )
