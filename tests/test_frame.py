"""Framing (spec §3): the construct schema, the fast encoder and the incremental decoder.

Readers are tested as h11 tests its readers: input whole, one byte at a time, split at every
offset, and with trailing partial data; the hand-written decoder is cross-checked against the
normative construct schema.
"""

from __future__ import annotations

import tracemalloc

import construct as cs
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from protocol import (
    FrameDecoder,
    LocalProtocolError,
    RemoteProtocolError,
    encode_frame,
)
from protocol.constants import DEFAULT_MAX_FRAME, HEADER_SIZE, MAX_WIRE_LENGTH, ErrorCode
from protocol.frame import FRAME, build_frame, parse_frame

FAST = settings(max_examples=200, deadline=None)


def drain(decoder: FrameDecoder) -> list[bytes]:
    """Every payload the decoder can return now."""
    payloads = []
    while (payload := decoder.next_frame()) is not None:
        payloads.append(payload)
    return payloads


def feed_in_chunks(decoder: FrameDecoder, chunks: list[bytes]) -> list[bytes]:
    payloads = []
    for chunk in chunks:
        decoder.feed(chunk)
        payloads += drain(decoder)
    return payloads


def stream_of(*payloads: bytes) -> bytes:
    return b"".join(encode_frame(payload) for payload in payloads)


PAYLOADS = [b"hello", b"", b"\x00\xff" * 40, b"x"]
STREAM = stream_of(*PAYLOADS)


# --- encoding ---------------------------------------------------------------------------


def test_header_is_four_octets_big_endian_counting_the_payload_only() -> None:
    assert encode_frame(b"abc") == b"\x00\x00\x00\x03abc"
    assert encode_frame(b"") == b"\x00\x00\x00\x00"
    assert encode_frame(b"z" * 0x0102)[:HEADER_SIZE] == b"\x00\x00\x01\x02"


def test_construct_schema_and_fast_encoder_build_the_same_bytes() -> None:
    for payload in PAYLOADS:
        assert build_frame(payload) == encode_frame(payload)
        assert FRAME.build({"payload": payload}) == encode_frame(payload)


class _Huge(bytes):
    """Claims a length a uint32 cannot count, without allocating it."""

    def __len__(self) -> int:
        return MAX_WIRE_LENGTH + 1


@pytest.mark.parametrize("encoder", [encode_frame, build_frame])
def test_payload_longer_than_a_uint32_can_count_is_refused_locally(encoder: object) -> None:
    assert callable(encoder)
    with pytest.raises(LocalProtocolError) as info:
        encoder(_Huge())
    assert info.value.code is ErrorCode.FRAME_TOO_LARGE


# --- the reference parser ---------------------------------------------------------------


def test_parse_frame_returns_the_payload_of_exactly_one_frame() -> None:
    assert parse_frame(b"\x00\x00\x00\x02hi") == b"hi"
    assert parse_frame(b"\x00\x00\x00\x00") == b""


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00\x00\x00", b"\x00\x00\x00\x05hell", b"\x00\x00\x00\x02hi!", b"\x00\x00\x00\x00\x00"],
    ids=["empty", "short-header", "short-payload", "trailing-octet", "zero-then-trailing"],
)
def test_parse_frame_rejects_anything_but_one_complete_frame(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        parse_frame(data)


# --- the incremental decoder ------------------------------------------------------------


def test_decoder_fed_whole_returns_every_frame_in_order() -> None:
    decoder = FrameDecoder()
    decoder.feed(STREAM)
    assert drain(decoder) == PAYLOADS
    assert decoder.buffered == 0


def test_decoder_fed_one_byte_at_a_time_returns_each_frame_when_its_last_byte_arrives() -> None:
    decoder = FrameDecoder()
    ends = set()
    position = 0
    for payload in PAYLOADS:
        position += HEADER_SIZE + len(payload)
        ends.add(position)
    returned = []
    for offset in range(len(STREAM)):
        decoder.feed(STREAM[offset : offset + 1])
        got = drain(decoder)
        assert bool(got) == (offset + 1 in ends), offset
        returned += got
    assert returned == PAYLOADS


@pytest.mark.parametrize("offset", range(len(STREAM) + 1))
def test_decoder_split_at_every_offset_returns_the_same_frames(offset: int) -> None:
    decoder = FrameDecoder()
    assert feed_in_chunks(decoder, [STREAM[:offset], STREAM[offset:]]) == PAYLOADS
    assert decoder.buffered == 0


def test_decoder_keeps_trailing_partial_data_for_the_next_feed() -> None:
    decoder = FrameDecoder()
    partial = encode_frame(b"later")[:6]
    decoder.feed(STREAM + partial)
    assert drain(decoder) == PAYLOADS
    assert decoder.buffered == len(partial)
    assert decoder.next_frame() is None
    decoder.feed(encode_frame(b"later")[6:])
    assert drain(decoder) == [b"later"]
    assert decoder.buffered == 0


def test_decoder_accepts_a_frame_of_exactly_max_frame() -> None:
    decoder = FrameDecoder(max_frame=16)
    decoder.feed(encode_frame(b"m" * 16))
    assert drain(decoder) == [b"m" * 16]


def test_decoder_rejects_a_header_over_max_frame_before_any_payload_arrives() -> None:
    decoder = FrameDecoder(max_frame=16)
    decoder.feed((17).to_bytes(4, "big"))
    with pytest.raises(RemoteProtocolError) as info:
        decoder.next_frame()
    assert info.value.code is ErrorCode.FRAME_TOO_LARGE
    assert info.value.fatal


def test_decoder_rejects_length_ffffffff_after_four_octets_and_holds_nothing() -> None:
    decoder = FrameDecoder()
    header = MAX_WIRE_LENGTH.to_bytes(4, "big")
    for octet in header[:3]:
        decoder.feed(bytes([octet]))
        assert decoder.next_frame() is None
    decoder.feed(header[3:])
    with pytest.raises(RemoteProtocolError) as info:
        decoder.next_frame()
    assert info.value.code is ErrorCode.FRAME_TOO_LARGE
    assert decoder.buffered == 0
    # The stream cannot be resynchronised: what follows is neither kept nor parsed.
    decoder.feed(b"\x00" * 65536)
    assert decoder.buffered == 0
    with pytest.raises(RemoteProtocolError):
        decoder.next_frame()


def test_frames_before_a_bad_header_are_returned_first() -> None:
    decoder = FrameDecoder(max_frame=64)
    decoder.feed(stream_of(b"one", b"two") + (65).to_bytes(4, "big") + b"junk")
    assert decoder.next_frame() == b"one"
    assert decoder.next_frame() == b"two"
    with pytest.raises(RemoteProtocolError) as info:
        decoder.next_frame()
    assert info.value.code is ErrorCode.FRAME_TOO_LARGE


def test_decoder_buffer_holds_at_most_the_unconsumed_octets() -> None:
    decoder = FrameDecoder()
    for index in range(1000):
        decoder.feed(encode_frame(b"%d" % index) + b"\x00\x00")
        assert drain(decoder) == [b"%d" % index]
        assert decoder.buffered == 2
        decoder.feed(b"\x00\x00")
        assert drain(decoder) == [b""]


@pytest.mark.parametrize("read", [100, 1448, 65536], ids=["trickle", "segments", "reads-of-64KiB"])
def test_a_frame_still_arriving_costs_the_octets_fed_not_a_growing_buffer(read: int) -> None:
    # §14.2 counts unfinished input in octets: what the decoder holds for them must be about
    # that many, whichever way they arrived (a growing bytearray kept 6 to 12 % spare room,
    # more in the allocator once many grew side by side).
    data = encode_frame(b"\x00" * DEFAULT_MAX_FRAME)[: DEFAULT_MAX_FRAME - 1]
    tracemalloc.start()
    try:
        decoder = FrameDecoder()
        for offset in range(0, len(data), read):
            decoder.feed(data[offset : offset + read])  # a new bytes object, as a socket gives
            assert decoder.next_frame() is None
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert decoder.buffered == len(data)
    assert held < len(data) * 1.02, f"{held} octets held for {len(data)} received"


def test_reads_fed_before_frames_are_asked_for_are_not_copied_one_by_one() -> None:
    # A server that stops handling a connection's frames (§10.1, §14.2) may still feed what
    # it reads: each read must wait as it came, not be joined to the rest (a copy of all of
    # it per read, twice the memory at the peak and quadratic time).
    stream = b"".join(encode_frame(b"s" * 200) for _ in range(11_000))
    tracemalloc.start()
    try:
        decoder = FrameDecoder()
        for offset in range(0, len(stream), 65536):
            decoder.feed(stream[offset : offset + 65536])  # a new bytes object, as a socket gives
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < len(stream) * 1.05, f"a peak of {peak} octets for {len(stream)} fed"
    assert drain(decoder) == [b"s" * 200] * 11_000
    assert decoder.buffered == 0


@pytest.mark.parametrize("limit", [-1, MAX_WIRE_LENGTH + 1])
def test_decoder_refuses_a_limit_a_header_cannot_express(limit: int) -> None:
    with pytest.raises(ValueError):
        FrameDecoder(max_frame=limit)


def test_default_limit_is_one_mebibyte() -> None:
    assert FrameDecoder().max_frame == DEFAULT_MAX_FRAME == 1 << 20


# --- properties ---------------------------------------------------------------------------


@FAST
@given(payloads=st.lists(st.binary(max_size=300), max_size=8), data=st.data())
def test_any_frames_survive_any_chunking(payloads: list[bytes], data: st.DataObject) -> None:
    stream = stream_of(*payloads)
    cuts = sorted(data.draw(st.sets(st.integers(0, len(stream)), max_size=12)))
    chunks = [stream[start:end] for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    decoder = FrameDecoder(max_frame=300)
    assert feed_in_chunks(decoder, chunks) == payloads
    assert decoder.buffered == 0


@FAST
@given(payload=st.binary(max_size=2000))
def test_construct_and_fast_path_agree_on_building(payload: bytes) -> None:
    assert build_frame(payload) == encode_frame(payload)
    assert parse_frame(encode_frame(payload)) == payload


Outcome = tuple[str, bytes | None]


def reference_outcome(data: bytes, max_frame: int) -> Outcome:
    """What the construct schema says one buffer holds, under a receive limit.

    incomplete: fewer octets than one frame; over_limit: a complete header above the limit;
    trailing: one complete frame then more octets; frame: exactly one frame.
    """
    if len(data) < HEADER_SIZE:
        return ("incomplete", None)
    if cs.Int32ub.parse(data[:HEADER_SIZE]) > max_frame:
        return ("over_limit", None)
    try:
        container = FRAME.parse(data)
    except cs.StreamError:
        return ("incomplete", None)
    payload = bytes(container.payload)
    if HEADER_SIZE + container.length < len(data):
        return ("trailing", payload)
    return ("frame", payload)


def decoder_outcome(data: bytes, max_frame: int) -> Outcome:
    decoder = FrameDecoder(max_frame)
    decoder.feed(data)
    try:
        payload = decoder.next_frame()
    except RemoteProtocolError as exc:
        assert exc.code is ErrorCode.FRAME_TOO_LARGE
        return ("over_limit", None)
    if payload is None:
        return ("incomplete", None)
    return ("trailing" if decoder.buffered else "frame", payload)


framed_garbage = st.builds(
    lambda length, body: length.to_bytes(4, "big") + body,
    st.integers(0, 80),
    st.binary(max_size=100),
)


@FAST
@given(
    data=st.one_of(
        st.binary(max_size=100),
        framed_garbage,
        st.binary(max_size=80).map(encode_frame),
        st.tuples(st.binary(max_size=80).map(encode_frame), st.binary(min_size=1, max_size=8)).map(b"".join),
    ),
    max_frame=st.one_of(st.integers(0, 100), st.just(MAX_WIRE_LENGTH)),
)
def test_construct_and_decoder_agree_on_any_bytes(data: bytes, max_frame: int) -> None:
    kind, payload = reference_outcome(data, max_frame)
    event(kind)
    assert decoder_outcome(data, max_frame) == (kind, payload)
    # parse_frame is the schema without a limit: exactly one frame or an error.
    if kind == "frame":
        assert parse_frame(data) == payload
    elif kind in ("incomplete", "trailing"):
        with pytest.raises(RemoteProtocolError):
            parse_frame(data)
