"""The API's own documentation pages, served from assets shipped in the package. I/O.

FastAPI's default ``/docs`` and ``/redoc`` load Swagger UI and ReDoc from a CDN, so they are
blank on the air-gapped networks hospitals run. Here both pages load their scripts, stylesheet
and icon from ``/docs/assets/`` (vendored in ``docs_assets/`` with their licences), no web fonts
and no online validator: a page that renders here needs nothing but this service.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Final

from fastapi import FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

__all__ = ["ASSET_PATHS", "install_docs"]

_ASSETS = files("cm_fhir.api") / "docs_assets"
_PREFIX: Final = "/docs/assets/"
_MEDIA_TYPES: Final = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
    "favicon-32x32.png": "image/png",
}
#: The asset URLs the pages load; public like the pages themselves.
ASSET_PATHS: Final = frozenset(_PREFIX + name for name in _MEDIA_TYPES)


def _prefixed(request: Request, path: str) -> str:
    return str(request.scope.get("root_path", "")) + path


def install_docs(app: FastAPI) -> None:
    """Serve ``/docs`` (Swagger UI), ``/docs/oauth2-redirect`` and ``/redoc`` offline.

    The app must be built with ``docs_url=None`` and ``redoc_url=None``.
    """
    title = f"{app.title} API"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=_prefixed(request, app.openapi_url or "/openapi.json"),
            title=title,
            oauth2_redirect_url=_prefixed(request, "/docs/oauth2-redirect"),
            swagger_js_url=_prefixed(request, _PREFIX + "swagger-ui-bundle.js"),
            swagger_css_url=_prefixed(request, _PREFIX + "swagger-ui.css"),
            swagger_favicon_url=_prefixed(request, _PREFIX + "favicon-32x32.png"),
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        return get_redoc_html(
            openapi_url=_prefixed(request, app.openapi_url or "/openapi.json"),
            title=title,
            redoc_js_url=_prefixed(request, _PREFIX + "redoc.standalone.js"),
            redoc_favicon_url=_prefixed(request, _PREFIX + "favicon-32x32.png"),
            with_google_fonts=False,
        )

    @app.get(_PREFIX + "{name}", include_in_schema=False)
    async def asset(name: str) -> Response:
        media_type = _MEDIA_TYPES.get(name)
        if media_type is None:
            return Response(status_code=404)
        return Response(
            (_ASSETS / name).read_bytes(),
            media_type=media_type,
            headers={"Cache-Control": "public, max-age=86400"},
        )
