"""Shared pytest fixtures; each lives in its own module and is re-exported here."""

from api_fixtures import api_app, api_client, api_settings
from fhir_server_fixture import (
    _faulty_server_url,
    capped_fhir_server,
    faulty_fhir_server,
    fhir_server,
)
from inbox_fixtures import database, inbox_engine, listener_config, pg_schema, running_listener
from worker_fixtures import worker_engine, worker_http

__all__ = [
    "_faulty_server_url",
    "api_app",
    "api_client",
    "api_settings",
    "capped_fhir_server",
    "database",
    "faulty_fhir_server",
    "fhir_server",
    "inbox_engine",
    "listener_config",
    "pg_schema",
    "running_listener",
    "worker_engine",
    "worker_http",
]
