"""Decoding a client's payload costs at most MAX_PAYLOAD_OBJECTS values (spec §4.2 rule 9, §4.3 rule 8).

The attack is a legal 1 MiB frame of one-octet values (empty arrays, EMPTY_LIST, EMPTY_SET):
without the limit each octet builds an object. The tests check what the limit promises
without timing anything: a refused payload never reaches the decoder that builds objects
(msgpack.unpackb, the unpickler), the pickle scan reads no opcode past the limit, and
refusing allocates next to nothing. The time it takes is measured by bench/decode.py.
"""

from __future__ import annotations

import pickle
import pickletools
import tracemalloc
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import MsgpackCodec, PickleCodec, RemoteProtocolError, get_codec
from protocol import codecs as codecs_module
from protocol.codecs import msgpack_objects_over
from protocol.constants import MAX_PAYLOAD_OBJECTS, CodecName, ErrorCode
from protocol.options import ServerOptions

LIMIT = MAX_PAYLOAD_OBJECTS
MIB = 1 << 20


def empty_arrays(count: int) -> bytes:
    """msgpack: an array 32 of ``count`` empty arrays, ``count + 1`` values."""
    return b"\xdd" + count.to_bytes(4, "big") + b"\x90" * count


def empty_lists(count: int) -> bytes:
    """pickle: PROTO 2, a list of ``count`` empty lists; ``count + 5`` opcodes."""
    return b"\x80\x02](" + b"]" * count + b"e."


#: 1 MiB frames that each build about a million objects when decoded whole.
MSGPACK_AMPLIFIERS = {
    "array32-of-empty-arrays": empty_arrays(MIB - 5),
    "array16s-of-empty-arrays": b"\xdc\x00\x10" + (b"\xdc\xff\xfa" + b"\x90" * 0xFFFA) * 16,
    "nested-in-wide": b"\xdd" + (MIB // 4 - 2).to_bytes(4, "big") + b"\x91\x91\x91\x90" * (MIB // 4 - 2),
    "map-of-empty-maps": b"\xdf" + (MIB // 2 - 3).to_bytes(4, "big") + b"\xa0\x80" * (MIB // 2 - 3),
    "nested-1024-then-wide": b"\x91" * 1023 + empty_arrays(MIB - 1030),
    "say-with-an-unknown-field": b"\x83\xa4type\xa3say\xa4text\xa2hi\xa1x" + empty_arrays(MIB - 30),
}
PICKLE_AMPLIFIERS = {
    "empty-lists": empty_lists(MIB - 6),
    "empty-sets-appended": b"\x80\x04](" + b"\x8f" * (MIB - 6) + b"e.",
    "memo-references": b"\x80\x02](]q\x00" + b"h\x00" * (MIB // 2 - 6) + b"e.",
    "marks": b"\x80\x02" + b"(" * (MIB - 3) + b".",
}


def server_codec(name: str) -> Any:
    return get_codec(name, max_objects=LIMIT)


def count_values(value: Any) -> int:
    """How many msgpack values ``value`` encodes to: itself, and each key and item at any depth."""
    if isinstance(value, dict):
        return 1 + sum(count_values(k) + count_values(v) for k, v in value.items())
    if isinstance(value, list):
        return 1 + sum(count_values(item) for item in value)
    return 1


# --- who applies the limit --------------------------------------------------------------------------


@pytest.mark.parametrize("codec", list(CodecName))
def test_the_servers_codec_counts_client_values(codec: CodecName) -> None:
    assert ServerOptions(codec=codec).make_codec().max_objects == MAX_PAYLOAD_OBJECTS


@pytest.mark.parametrize("codec", list(CodecName))
def test_a_codec_without_a_limit_decodes_any_count_as_a_client_must(codec: CodecName) -> None:
    # A client decodes rosters: five values per member, far more than a client message.
    roster = {"type": "roster", "members": [{"name": f"m{i}", "host": "::1"} for i in range(LIMIT)]}
    plain = get_codec(codec)
    assert plain.max_objects is None
    assert plain.decode(plain.encode(roster)) == roster
    with pytest.raises(RemoteProtocolError):
        server_codec(codec).decode(plain.encode(roster))


# --- msgpack ------------------------------------------------------------------------------------------


def test_msgpack_decodes_exactly_the_limit_and_refuses_one_more() -> None:
    codec = server_codec("msgpack")
    assert codec.decode(empty_arrays(LIMIT - 1)) == [[]] * (LIMIT - 1)
    with pytest.raises(RemoteProtocolError) as info:
        codec.decode(empty_arrays(LIMIT))
    assert (info.value.code, info.value.fatal) == (ErrorCode.BAD_PAYLOAD, True)
    assert str(LIMIT) in info.value.message


def test_msgpack_counts_map_keys_as_values() -> None:
    # A map of n pairs is 2n + 1 values.
    pairs = (LIMIT - 1) // 2
    within = {f"k{i}": None for i in range(pairs)}
    assert count_values(within) == 2 * pairs + 1 <= LIMIT
    assert server_codec("msgpack").decode(msgpack.packb(within)) == within
    over = {f"k{i}": None for i in range(pairs + 1)}
    assert count_values(over) > LIMIT
    with pytest.raises(RemoteProtocolError):
        server_codec("msgpack").decode(msgpack.packb(over))


def test_msgpack_long_strings_are_one_value_each() -> None:
    # The walk skips string bodies: a full-size text is a cheap message.
    say = {"type": "say", "text": "é" * (MIB // 2 - 16), "blob": b"\x90" * 1000}
    assert server_codec("msgpack").decode(msgpack.packb(say, use_bin_type=True)) == say


@pytest.mark.parametrize("payload", MSGPACK_AMPLIFIERS.values(), ids=MSGPACK_AMPLIFIERS)
def test_msgpack_refuses_a_1_mib_amplifier_before_building_anything(
    payload: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert len(payload) <= MIB

    def unpackb(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("unpackb was reached")

    monkeypatch.setattr(msgpack, "unpackb", unpackb)
    codec = server_codec("msgpack")
    tracemalloc.start()
    try:
        with pytest.raises(RemoteProtocolError) as info:
            codec.decode(payload)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info.value.code is ErrorCode.BAD_PAYLOAD
    assert "more than 4096" in info.value.message
    # Decoded whole, any of these holds 30 to 80 MiB; refusing keeps a few hundred octets.
    assert peak < 16 << 10, peak


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text() | st.binary(),
        lambda children: st.lists(children) | st.dictionaries(st.text(), children),
        max_leaves=60,
    ),
    st.integers(0, 80),
)
def test_msgpack_value_count_is_exact(value: Any, limit: int) -> None:
    payload = msgpack.packb(value, use_bin_type=True)
    assert msgpack_objects_over(payload, limit) is (count_values(value) > limit)


@given(st.binary(max_size=200), st.integers(0, 40))
def test_msgpack_value_count_never_fails_on_garbage(payload: bytes, limit: int) -> None:
    # Whatever the walk makes of bad input, it ends, and the decoder still refuses what is bad.
    over = msgpack_objects_over(payload, limit)
    assert isinstance(over, bool)
    if over:
        with pytest.raises(RemoteProtocolError):
            MsgpackCodec(limit).decode(payload)


# --- pickle ---------------------------------------------------------------------------------------------


def test_pickle_decodes_exactly_the_limit_of_opcodes_and_refuses_one_more() -> None:
    codec = server_codec("pickle")
    within = empty_lists(LIMIT - 5)
    assert len(list(pickletools.genops(within))) == LIMIT
    assert codec.decode(within) == [[]] * (LIMIT - 5)
    with pytest.raises(RemoteProtocolError) as info:
        codec.decode(empty_lists(LIMIT - 4))
    assert (info.value.code, info.value.fatal) == (ErrorCode.BAD_PAYLOAD, True)
    assert f"more than {LIMIT} opcodes" in info.value.message


def test_pickle_long_strings_are_one_opcode_each() -> None:
    say = {"type": "say", "text": "é" * (MIB // 4)}
    assert server_codec("pickle").decode(pickle.dumps(say, protocol=2)) == say


@pytest.mark.parametrize("payload", PICKLE_AMPLIFIERS.values(), ids=PICKLE_AMPLIFIERS)
def test_pickle_refuses_a_1_mib_amplifier_after_reading_only_the_limit(
    payload: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert len(payload) <= MIB
    read: list[int] = []
    genops = pickletools.genops

    def counting(data: bytes) -> Iterator[Any]:
        for item in genops(data):
            read.append(1)
            yield item

    def load(self: Any) -> Any:
        raise AssertionError("the unpickler was reached")

    monkeypatch.setattr(pickletools, "genops", counting)
    monkeypatch.setattr(codecs_module.RestrictedUnpickler, "load", load)
    tracemalloc.start()
    try:
        with pytest.raises(RemoteProtocolError) as info:
            PickleCodec(LIMIT).decode(payload)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info.value.code is ErrorCode.BAD_PAYLOAD
    assert f"more than {LIMIT} opcodes" in info.value.message
    # The opcode that went over is the last one read: the other million are never parsed.
    assert len(read) == LIMIT + 1
    # Unpickled whole, these hold 60 to 250 MiB; the scan keeps one small list per opcode read.
    assert peak < 1 << 20, peak
