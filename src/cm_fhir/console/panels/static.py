"""The console's own assets (CSS, JavaScript), served from the package. I/O (package files).

Only the files named in :data:`ASSETS` are served, open to anyone (they hold no data), with a
day of caching. Nothing the console shows loads from anywhere else.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter, HTTPException
from fastapi.responses import Response

__all__ = ["ASSETS", "router"]

router = APIRouter(prefix="/console/static")

#: Served file name -> media type.
ASSETS = {
    "console.css": "text/css; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "LICENSE.txt": "text/plain; charset=utf-8",
}


@router.get("/{name}", summary="A console asset")
async def asset(name: str) -> Response:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise HTTPException(404, "no such asset")
    data = (files("cm_fhir.console") / "static" / name).read_bytes()
    return Response(data, media_type=media_type, headers={"Cache-Control": "max-age=86400"})
