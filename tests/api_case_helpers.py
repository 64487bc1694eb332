"""Fixtures and helpers for the cases API and FHIR facade tests, over SQLite and PostgreSQL.

``case_app`` is the real app (:func:`cm_fhir.api.app.create_app`) over ``worker_engine`` (every
worker table empty) with the audit table emptied too. Its authenticator knows a few test tokens
with fixed scopes besides the real API key, so the real scope checks (``require_scope``,
``grants_fhir_read``) are what the tests exercise. ``client(app, token)`` is an httpx client on
``ASGITransport``. ``check_resource`` validates against our profiles and the R4B models.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from api_fixtures import API_KEY
from cm_fhir.api.app import create_app
from cm_fhir.api.auth import Authenticator, Principal
from cm_fhir.domain import Case
from cm_fhir.profiles import default_validator, error_issues
from cm_fhir.settings import Settings

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
BASE_URL = "http://cm-fhir.test"

#: Test tokens and the scopes they carry.
TOKENS: dict[str, frozenset[str]] = {
    "reader-token": frozenset({"read"}),
    "writer-token": frozenset({"read", "write"}),
    "smart-all-token": frozenset({"system/*.read"}),
    "smart-task-token": frozenset({"system/Task.read"}),
    "no-scope-token": frozenset(),
}


class ScopedAuthenticator(Authenticator):
    """The real authenticator, plus the fixed test tokens of :data:`TOKENS`."""

    def __init__(self, real: Authenticator) -> None:
        self._real = real

    @property
    def configured(self) -> bool:
        return True

    async def authenticate(self, authorization: str | None) -> Principal:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() == "bearer" and token in TOKENS:
            return Principal(f"test:{token}", TOKENS[token], "jwt")
        return await self._real.authenticate(authorization)


@pytest.fixture
async def case_app(worker_engine: AsyncEngine, api_settings: Settings) -> AsyncIterator[FastAPI]:
    """The app over an empty store, lifespan running, with the test tokens known."""
    if worker_engine.dialect.name == "postgresql":
        async with worker_engine.begin() as connection:
            await connection.execute(text("TRUNCATE audit_event RESTART IDENTITY"))
    app = create_app(api_settings, engine=worker_engine)
    async with app.router.lifespan_context(app):
        context = app.state.context
        context.authenticator = ScopedAuthenticator(context.authenticator)
        yield app


def client(app: FastAPI, token: str | None = API_KEY) -> httpx.AsyncClient:
    """A client for ``app`` sending ``token`` (none when None)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=BASE_URL, headers=headers)


def example(name: str) -> Case:
    return Case.model_validate_json((EXAMPLES / f"{name}.json").read_text())


def example_names() -> list[str]:
    return sorted(p.stem for p in EXAMPLES.glob("*.json"))


def case_json(case: Case) -> Any:
    return case.model_dump(mode="json")


def check_resource(resource: dict[str, Any]) -> None:
    """Fail unless ``resource`` is valid for our profiles and for the R4B models."""
    outcome = default_validator().validate(resource)
    assert error_issues(outcome) == [], (resource["resourceType"], error_issues(outcome))
    rtype = resource["resourceType"]
    module = importlib.import_module(f"fhir.resources.R4B.{rtype.lower()}")
    getattr(module, rtype).model_validate(resource)


__all__ = [
    "BASE_URL",
    "TOKENS",
    "case_app",
    "case_json",
    "check_resource",
    "client",
    "example",
    "example_names",
]
