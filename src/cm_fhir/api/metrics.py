"""``GET /metrics``: Prometheus text, computed from the database at scrape time. I/O.

placeholder
"""

from __future__ import annotations

from fastapi import APIRouter

__all__ = ["router"]

router = APIRouter(tags=["metrics"])
