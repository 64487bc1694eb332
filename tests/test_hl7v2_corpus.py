"""Optional: parse the public HL7v2 sample corpus next to the repository, when it is present.

The corpus folder (``../shared/corpus/hl7v2/`` from the repository root) holds public sample files
and a ``SOURCES.tsv`` describing each one (its MSH-9 and notes). Files named ``MALFORMED`` must be
refused with an :class:`Hl7ParseError`; every other ADT file must give an ``AdtEvent`` per message
with the event its SOURCES row names; other message types must give an ``UnsupportedMessage``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from cm_fhir.errors import Hl7ParseError
from cm_fhir.hl7v2.adt import parse_adt
from cm_fhir.hl7v2.events import AdtEvent, UnsupportedMessage
from cm_fhir.hl7v2.normalise import split_batch
from cm_fhir.mapping.adt_maps import ADT_CONCEPT_MAPS_FILE, AdtConceptMaps
from cm_fhir.mapping.loader import bundled_mappings_dir, load_yaml_model

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "hl7v2"

pytestmark = [
    pytest.mark.corpus,
    pytest.mark.skipif(not CORPUS.is_dir(), reason="public HL7v2 corpus folder is absent"),
]


def _sources() -> dict[str, str]:
    """File name -> MSH-9 as listed in SOURCES.tsv (``(none)`` for files without one)."""
    index = CORPUS / "SOURCES.tsv"
    if not index.is_file():
        return {}
    with index.open(encoding="utf-8", newline="") as handle:
        return {row["file"]: row["event"] for row in csv.DictReader(handle, delimiter="\t")}


SOURCES = _sources() if CORPUS.is_dir() else {}


@pytest.fixture(scope="module")
def maps() -> AdtConceptMaps:
    return load_yaml_model(bundled_mappings_dir() / ADT_CONCEPT_MAPS_FILE, AdtConceptMaps)


def test_corpus_has_files() -> None:
    assert sorted(CORPUS.glob("*.hl7")), "corpus folder holds no .hl7 files"
    assert SOURCES, "corpus folder has no SOURCES.tsv"


def _parse_all(raw: bytes, maps: AdtConceptMaps) -> list[AdtEvent | UnsupportedMessage]:
    return [parse_adt(message, maps) for message in split_batch(raw)]


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_corpus_file(name: str, maps: AdtConceptMaps) -> None:
    raw = (CORPUS / name).read_bytes()
    message_type = SOURCES[name].split("^")
    if "MALFORMED" in name:
        with pytest.raises(Hl7ParseError):
            _parse_all(raw, maps)
        return
    results = _parse_all(raw, maps)
    assert results
    if message_type[0] != "ADT":
        assert all(isinstance(result, UnsupportedMessage) for result in results)
        return
    for result in results:
        assert isinstance(result, AdtEvent)
        assert result.event == message_type[1]
        assert result.patient.identifiers
        assert result.message_control_id
