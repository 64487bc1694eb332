"""The sans-IO MLLP framer: frames split at any byte, garbage, size limit, abandoned frames."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cm_fhir.hl7v2.framing import Discarded, Frame, FrameTooLarge, MllpFramer, frame

PAYLOADS = [b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5\rPID|1", b"x", b"MSH|\x1cnot-an-end"]


def feed_in_pieces(framer: MllpFramer, stream: bytes, cuts: list[int]) -> list[object]:
    events: list[object] = []
    start = 0
    for cut in [*sorted(set(cuts)), len(stream)]:
        events += framer.feed(stream[start:cut])
        start = cut
    return events


def frames_of(events: list[object]) -> list[bytes]:
    return [e.payload for e in events if isinstance(e, Frame)]


def test_every_single_split_position_yields_the_same_frames() -> None:
    stream = b"noise" + b"".join(frame(p) for p in PAYLOADS) + b"\r\n"
    for cut in range(len(stream) + 1):
        framer = MllpFramer()
        events = framer.feed(stream[:cut]) + framer.feed(stream[cut:])
        assert frames_of(events) == PAYLOADS, f"split at {cut}"
        assert framer.buffered == 0
        assert not framer.in_frame


def test_byte_by_byte_feeding() -> None:
    stream = b"".join(frame(p) for p in PAYLOADS)
    framer = MllpFramer()
    events = [e for i in range(len(stream)) for e in framer.feed(stream[i : i + 1])]
    assert frames_of(events) == PAYLOADS


def _without_block_bytes(data: bytes) -> bytes:
    data = data.replace(b"\x0b", b"")
    while b"\x1c\r" in data:
        data = data.replace(b"\x1c\r", b"")
    return data


payload_bytes = st.binary(max_size=200).map(_without_block_bytes)


@settings(max_examples=300, deadline=None)
@given(
    payloads=st.lists(payload_bytes, min_size=1, max_size=6),
    garbage=st.lists(st.binary(max_size=20).map(lambda b: b.replace(b"\x0b", b"")), min_size=7),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=30),
)
def test_random_splits_and_garbage_between_frames(
    payloads: list[bytes], garbage: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(garbage[i] + frame(p) for i, p in enumerate(payloads)) + garbage[-1]
    framer = MllpFramer()
    events = feed_in_pieces(framer, stream, [c for c in cuts if c <= len(stream)])
    assert frames_of(events) == payloads
    outside = sum(len(g) for g in garbage[: len(payloads)]) + len(garbage[-1])
    discarded = sum(e.size for e in events if isinstance(e, Discarded))
    assert discarded == outside


@settings(max_examples=200, deadline=None)
@given(size=st.integers(min_value=0, max_value=64), cut=st.integers(min_value=0, max_value=200))
def test_size_limit_is_exact_wherever_the_stream_is_cut(size: int, cut: int) -> None:
    limit = 32
    payload = b"A" * size
    stream = frame(payload) + frame(b"next")
    framer = MllpFramer(max_frame_bytes=limit, prefix_bytes=8)
    events = feed_in_pieces(framer, stream, [min(cut, len(stream))])
    if size <= limit:
        assert frames_of(events) == [payload, b"next"]
    else:
        assert events[0] == FrameTooLarge(prefix=b"A" * 8, size=size)
        assert frames_of(events) == [b"next"]


def test_oversize_frame_is_not_buffered_and_framing_resumes() -> None:
    framer = MllpFramer(max_frame_bytes=100, prefix_bytes=10)
    events = framer.feed(b"\x0bMSH|" + b"x" * 50)
    for _ in range(100):
        events += framer.feed(b"y" * 1000)
        assert framer.buffered <= 100
    events += framer.feed(b"\x1c\r" + frame(b"ok"))
    too_large = [e for e in events if isinstance(e, FrameTooLarge)]
    assert len(too_large) == 1
    assert too_large[0].prefix == b"MSH|" + b"x" * 6
    assert too_large[0].size == 4 + 50 + 100_000
    assert frames_of(events) == [b"ok"]


def test_start_block_inside_a_frame_abandons_the_partial_frame() -> None:
    framer = MllpFramer()
    events = framer.feed(b"\x0bpartial\x0bwhole\x1c\r")
    assert events == [Discarded(7), Frame(b"whole")]


def test_end_byte_without_carriage_return_is_payload() -> None:
    framer = MllpFramer()
    assert framer.feed(b"\x0ba\x1cb\x1c") == []
    assert framer.feed(b"\r") == [Frame(b"a\x1cb")]


def test_garbage_only_is_reported_and_nothing_is_held() -> None:
    framer = MllpFramer()
    assert framer.feed(b"GET / HTTP/1.1\r\n") == [Discarded(16)]
    assert framer.buffered == 0


def test_invalid_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        MllpFramer(max_frame_bytes=0)
