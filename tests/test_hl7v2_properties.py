"""Property tests: normalisation is stable, and damaged input only ever raises our own errors."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cm_fhir.errors import InboundMessageError, MappingError
from cm_fhir.hl7v2.adt import parse_adt
from cm_fhir.hl7v2.events import AdtEvent, UnsupportedMessage
from cm_fhir.hl7v2.normalise import normalise_message, split_batch
from cm_fhir.mapping.adt_maps import ADT_CONCEPT_MAPS_FILE, AdtConceptMaps
from cm_fhir.mapping.loader import bundled_mappings_dir, load_yaml_model
from hl7v2_samples import ADT_A01_V251, ADT_A03_V28, ADT_A40_V251

MAPS = load_yaml_model(bundled_mappings_dir() / ADT_CONCEPT_MAPS_FILE, AdtConceptMaps)
SAMPLES = [ADT_A01_V251, ADT_A03_V28, ADT_A40_V251]
BREAKS = st.sampled_from(["\r", "\n", "\r\n"])


@given(sample=st.sampled_from(SAMPLES), breaks=st.lists(BREAKS, min_size=12, max_size=12))
def test_any_mix_of_line_breaks_normalises_to_the_cr_message(
    sample: str, breaks: list[str]
) -> None:
    segments = sample.split("\r")
    raw = "".join(seg + breaks[i % len(breaks)] for i, seg in enumerate(segments))
    result = normalise_message(raw)
    assert result == sample
    assert normalise_message(result) == result


@settings(max_examples=300, deadline=None)
@given(
    sample=st.sampled_from(SAMPLES),
    edits=st.lists(
        st.tuples(st.floats(0, 1, exclude_max=True), st.sampled_from('|^~\\&"\r\n 09+-.AZ')),
        min_size=1,
        max_size=8,
    ),
)
def test_damaged_messages_raise_only_inbound_or_mapping_errors(
    sample: str, edits: list[tuple[float, str]]
) -> None:
    text = sample
    for where, char in edits:
        pos = int(where * len(text))
        text = text[:pos] + char + text[pos + 1 :]
    try:
        result = parse_adt(text, MAPS)
    except (InboundMessageError, MappingError):
        return
    assert isinstance(result, AdtEvent | UnsupportedMessage)


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=300))
def test_arbitrary_bytes_never_crash_the_splitter(raw: bytes) -> None:
    try:
        messages = split_batch(raw)
    except InboundMessageError:
        return
    assert all(message.startswith("MSH") for message in messages)
