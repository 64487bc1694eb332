"""Fixtures for the HTTP API: an app over the test database, and an httpx client. Does I/O.

``api_app`` builds :func:`cm_fhir.api.app.create_app` over ``inbox_engine`` (SQLite and PostgreSQL)
with one static API key and runs its lifespan; ``api_client`` is an ``httpx.AsyncClient`` on
``httpx.ASGITransport`` sending that key. ``API_KEY`` is the key; requests without it are refused.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from cm_fhir.api.app import create_app
from cm_fhir.settings import Settings, load_settings

API_KEY = "test-key-0123456789abcdef"


@pytest.fixture
def api_settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings with one API key and nothing from the developer's environment."""
    for name in ("CM_FHIR_API_KEYS", "CM_FHIR_DATABASE_URL", "CM_FHIR_AUTH__JWKS_URL"):
        monkeypatch.delenv(name, raising=False)
    return load_settings(overrides={"api_keys": API_KEY})


@pytest.fixture
async def api_app(inbox_engine: AsyncEngine, api_settings: Settings) -> AsyncIterator[FastAPI]:
    """The app over the test database, its lifespan running."""
    app = create_app(api_settings, engine=inbox_engine)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def api_client(api_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client that authenticates with :data:`API_KEY`."""
    transport = httpx.ASGITransport(api_app)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://cm-fhir.test", headers=headers
    ) as client:
        yield client
