"""HL7v2 versions, ADT trigger events and message structures we support. Pure: no I/O.

Senders before v2.3.1 (and many after) leave MSH-9.3, the message structure, empty. We then pick the
structure from our own event -> structure table, which follows HL7 table 0354 as published for v2.5,
with the differences of older versions: v2.2 to v2.3.1 carry A05, A14, A28 and A31 in ADT_A01 (the
ADT_A05 structure arrived in v2.4), and v2.4 carries A12 in ADT_A09 (ADT_A12 returned in v2.5).
Structures that first appeared in v2.4 (ADT_A15, ADT_A21) are used under their v2.5 names for older
versions too; our extraction reads segments by name, so the structure is informational.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Final, Literal, get_args

__all__ = [
    "SUPPORTED_EVENTS",
    "SUPPORTED_VERSIONS",
    "SUPPORTED_VERSION_RANGE",
    "AdtEventCode",
    "event_description",
    "is_supported_version",
    "structure_for",
    "version_key",
]

AdtEventCode = Literal[
    "A01",
    "A02",
    "A03",
    "A04",
    "A05",
    "A06",
    "A07",
    "A08",
    "A11",
    "A12",
    "A13",
    "A14",
    "A15",
    "A16",
    "A25",
    "A26",
    "A27",
    "A38",
    "A40",
]
"""The ADT trigger events we turn into an :class:`~cm_fhir.hl7v2.events.AdtEvent`."""

SUPPORTED_EVENTS: Final[frozenset[str]] = frozenset(get_args(AdtEventCode))

SUPPORTED_VERSIONS: Final[tuple[str, ...]] = (
    "2.2",
    "2.3",
    "2.3.1",
    "2.4",
    "2.5",
    "2.5.1",
    "2.6",
    "2.7",
    "2.7.1",
    "2.8",
    "2.8.1",
    "2.8.2",
)
"""The published HL7 versions we accept (v2.2 to v2.8 and their point releases)."""

_EVENT_DESCRIPTIONS: Final[dict[str, str]] = {
    "A01": "admit/visit notification",
    "A02": "transfer a patient",
    "A03": "discharge/end visit",
    "A04": "register a patient",
    "A05": "pre-admit a patient",
    "A06": "change an outpatient to an inpatient",
    "A07": "change an inpatient to an outpatient",
    "A08": "update patient information",
    "A11": "cancel admit/visit notification",
    "A12": "cancel transfer",
    "A13": "cancel discharge/end visit",
    "A14": "pending admit",
    "A15": "pending transfer",
    "A16": "pending discharge",
    "A25": "cancel pending discharge",
    "A26": "cancel pending transfer",
    "A27": "cancel pending admit",
    "A38": "cancel pre-admit",
    "A40": "merge patient - patient identifier list",
}

# HL7 table 0354 (v2.5): message structure for each ADT trigger event.
_STRUCTURES_V25: Final[dict[str, str]] = {
    "A01": "ADT_A01",
    "A04": "ADT_A01",
    "A08": "ADT_A01",
    "A13": "ADT_A01",
    "A02": "ADT_A02",
    "A03": "ADT_A03",
    "A05": "ADT_A05",
    "A14": "ADT_A05",
    "A28": "ADT_A05",
    "A31": "ADT_A05",
    "A06": "ADT_A06",
    "A07": "ADT_A06",
    "A09": "ADT_A09",
    "A10": "ADT_A09",
    "A11": "ADT_A09",
    "A12": "ADT_A12",
    "A15": "ADT_A15",
    "A16": "ADT_A16",
    "A17": "ADT_A17",
    "A18": "ADT_A18",
    "A20": "ADT_A20",
    "A21": "ADT_A21",
    "A22": "ADT_A21",
    "A23": "ADT_A21",
    "A25": "ADT_A21",
    "A26": "ADT_A21",
    "A27": "ADT_A21",
    "A29": "ADT_A21",
    "A32": "ADT_A21",
    "A33": "ADT_A21",
    "A24": "ADT_A24",
    "A37": "ADT_A37",
    "A38": "ADT_A38",
    "A39": "ADT_A39",
    "A40": "ADT_A39",
    "A41": "ADT_A39",
    "A42": "ADT_A39",
    "A43": "ADT_A43",
    "A45": "ADT_A45",
    "A50": "ADT_A50",
    "A51": "ADT_A50",
}

# Differences of older versions from the v2.5 table, keyed by (major, minor) prefix.
_PRE_V24: Final[dict[str, str]] = {
    "A05": "ADT_A01",
    "A14": "ADT_A01",
    "A28": "ADT_A01",
    "A31": "ADT_A01",
}
_V24: Final[dict[str, str]] = {"A12": "ADT_A09"}


def version_key(version: str) -> tuple[int, ...]:
    """``"2.5.1"`` -> ``(2, 5, 1)``; components that are not numbers end the key."""
    parts: list[int] = []
    for part in version.strip().split("."):
        if not part.isdigit():
            break
        parts.append(int(part))
    return tuple(parts)


SUPPORTED_VERSION_RANGE: Final[str] = "2.2-2.8"
"""The MSH-12 versions :func:`is_supported_version` accepts, for messages and error texts."""


@lru_cache(maxsize=256)  # asked twice per message, of a handful of values
def is_supported_version(version: str) -> bool:
    """True for MSH-12 values from 2.2 up to 2.8.x: the one test the door and the parser share."""
    key = version_key(version)
    return (2, 2) <= key[:2] <= (2, 8) and len(key) >= 2


def structure_for(event: str, version: str) -> str | None:
    """The message structure (table 0354) of an ADT ``event`` in ``version``, or None if unknown."""
    key = version_key(version)[:2]
    if key < (2, 4) and event in _PRE_V24:
        return _PRE_V24[event]
    if key == (2, 4) and event in _V24:
        return _V24[event]
    return _STRUCTURES_V25.get(event)


def event_description(event: str) -> str:
    """A short English description of a supported trigger event (``""`` for others)."""
    return _EVENT_DESCRIPTIONS.get(event, "")
