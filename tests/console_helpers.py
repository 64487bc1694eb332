"""Helpers for the console tests: sign in over ASGI, read hidden fields, find every asset URL.

``signed_in(app, token)`` is an httpx client on the real app whose cookie jar holds a console
session, signed in through the real form. ``hidden(html, name)`` reads a hidden field (the CSRF
token). ``asset_urls(html)`` lists every URL a page would load (scripts, styles, images,
frames, objects, and ``url(...)`` in styles), for the same-origin checks.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from typing import ClassVar

import httpx
from fastapi import FastAPI

from api_case_helpers import BASE_URL

__all__ = ["asset_urls", "hidden", "sign_in", "signed_in"]


def hidden(html: str, name: str) -> str:
    found = re.search(rf'name="{re.escape(name)}" value="([^"]*)"', html)
    assert found, f"no hidden field {name}"
    return found.group(1)


async def sign_in(http: httpx.AsyncClient, token: str) -> httpx.Response:
    form = await http.get("/console/sign-in")
    return await http.post(
        "/console/sign-in",
        data={"signin_token": hidden(form.text, "signin_token"), "api_key": token},
    )


def signed_out(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=BASE_URL)


@contextlib.asynccontextmanager
async def signed_in(app: FastAPI, token: str) -> AsyncIterator[httpx.AsyncClient]:
    async with signed_out(app) as http:
        answer = await sign_in(http, token)
        assert answer.status_code == 303, answer.text
        yield http


class _Assets(HTMLParser):
    LOADS: ClassVar[dict[str, str]] = {
        "script": "src",
        "link": "href",
        "img": "src",
        "iframe": "src",
        "source": "src",
        "embed": "src",
        "object": "data",
        "audio": "src",
        "video": "src",
        "image": "href",
    }

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = self.LOADS.get(tag)
        for name, value in attrs:
            if value and (name == wanted or name in ("srcset", "xlink:href")):
                self.urls.append(value)
            if name == "style" and value:
                self.urls += re.findall(r"url\(([^)]+)\)", value)


def asset_urls(html: str) -> list[str]:
    parser = _Assets()
    parser.feed(html)
    return parser.urls + re.findall(r"@import\s+['\"]([^'\"]+)", html)
