"""`/docs` and `/redoc` work on a network with no internet: every asset comes from the service.

The pages are fetched without a token (they are public, like the OpenAPI document), every
``src``/``href`` they reference is resolved against the service and fetched, and nothing may
point at another host.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from fastapi import FastAPI

BASE = "http://cm-fhir.test"
_REFERENCE = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url\s*:\s*["']([^"']+)["']""")


@pytest.fixture
async def anonymous(api_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(api_app), base_url=BASE) as client:
        yield client


def _references(html: str) -> list[str]:
    return [a or b for a, b in _REFERENCE.findall(html)]


@pytest.mark.parametrize(
    ("page", "expected"),
    [
        ("/docs", {"swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png"}),
        ("/redoc", {"redoc.standalone.js", "favicon-32x32.png"}),
    ],
)
async def test_docs_pages_load_every_asset_from_the_service(
    anonymous: httpx.AsyncClient, page: str, expected: set[str]
) -> None:
    response = await anonymous.get(page)
    assert response.status_code == 200
    html = response.text
    assert "cdn" not in html.lower()
    assert "fonts.googleapis" not in html
    references = _references(html)
    assert references, "the page references no assets"
    names = set()
    for reference in references:
        url = urlsplit(urljoin(BASE + page, reference))
        assert f"{url.scheme}://{url.netloc}" == BASE, f"{reference} leaves the service"
        fetched = await anonymous.get(url.path)
        assert fetched.status_code == 200, reference
        if url.path != "/openapi.json":
            assert len(fetched.content) > 100, reference
        names.add(url.path.rsplit("/", 1)[-1])
    assert expected <= names


async def test_swagger_ui_turns_off_the_online_validator(anonymous: httpx.AsyncClient) -> None:
    html = (await anonymous.get("/docs")).text
    assert '"validatorUrl": null' in html


async def test_asset_route_serves_only_the_shipped_files(anonymous: httpx.AsyncClient) -> None:
    assert (
        (await anonymous.get("/docs/assets/swagger-ui.css"))
        .headers["content-type"]
        .startswith("text/css")
    )
    for name in ("LICENSE.redoc", "..%2Fdocs.py", "__init__.py", "nothing.js"):
        response = await anonymous.get(f"/docs/assets/{name}")
        assert response.status_code in {401, 404}, name


async def test_docs_honour_the_root_path_behind_a_proxy(api_app: FastAPI) -> None:
    transport = httpx.ASGITransport(api_app, root_path="/cm")
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        html = (await client.get("/docs")).text
    assert "/cm/docs/assets/swagger-ui-bundle.js" in html
    assert "/cm/openapi.json" in html
