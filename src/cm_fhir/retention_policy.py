"""How long PHI is kept: the ``retention`` settings and their durations. Pure (no I/O).

Each kind of stored data has its own age, written as a whole number and a unit (``30d``, ``12h``,
``90m``, ``45s``, ``2w``) or ``off`` (kept for ever). Raw message bytes are blanked on inbox rows
the worker settled (processed or ignored); trace rows, audit rows and sent outbox entries are
deleted. What is never purged is decided in :mod:`cm_fhir.store.retention`.
"""

from __future__ import annotations

import re
from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["OFF", "RetentionSettings", "parse_age"]

OFF = "off"
_AGE = re.compile(r"^\s*(\d{1,6})\s*([smhdw])\s*$", re.IGNORECASE)
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(value: str) -> timedelta | None:
    """``30d`` -> 30 days; ``off`` -> None. Raises ValueError naming the accepted forms."""
    if value.strip().lower() == OFF:
        return None
    match = _AGE.match(value)
    if match is None or int(match.group(1)) == 0:
        raise ValueError(
            f"{value!r} is not an age: a whole number and s, m, h, d or w (e.g. 30d), or 'off'"
        )
    return timedelta(seconds=int(match.group(1)) * _UNIT[match.group(2).lower()])


class RetentionSettings(BaseModel):
    """Ages after which PHI is purged by the worker role (and ``cm-fhir db purge``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    raw_messages: str = Field(
        "30d", description="Raw HL7v2 bytes of processed or ignored inbox rows; 'off' keeps them."
    )
    trace: str = Field("365d", description="Workflow trace rows of settled messages.")
    audit: str = Field("off", description="Audit rows (often a legal record: kept by default).")
    sent_outbox: str = Field(
        "30d", description="Sent outbox entries (the newest of each case is kept)."
    )
    interval: str = Field("1h", description="How often the worker role purges.")
    batch_size: int = Field(
        1000, gt=0, le=100_000, description="Rows per transaction: short locks."
    )

    @field_validator("raw_messages", "trace", "audit", "sent_outbox")
    @classmethod
    def _age(cls, value: str) -> str:
        parse_age(value)
        return value.strip().lower()

    @field_validator("interval")
    @classmethod
    def _interval(cls, value: str) -> str:
        if parse_age(value) is None:
            raise ValueError("the purge interval cannot be 'off'; set each age to 'off' instead")
        return value.strip().lower()

    def age(self, kind: str) -> timedelta | None:
        """The age of ``kind`` (``raw_messages``, ``trace``, ``audit``, ``sent_outbox``)."""
        value: str = getattr(self, kind)
        return parse_age(value)

    @property
    def interval_seconds(self) -> float:
        every = parse_age(self.interval)
        assert every is not None  # validated
        return every.total_seconds()
