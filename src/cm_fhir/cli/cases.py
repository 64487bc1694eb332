"""Case commands: ``map``, ``schema``, ``mappings check`` and ``demo``. I/O edge."""

from __future__ import annotations
