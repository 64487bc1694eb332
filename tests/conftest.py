"""Shared pytest fixtures; each lives in its own module and is re-exported here."""

from fhir_server_fixture import fhir_server

__all__ = ["fhir_server"]
