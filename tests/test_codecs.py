"""Payload codecs (spec §4): msgpack's safety options, the restricted unpickler, round trips.

Hostile pickles are assembled from opcodes here and only ever given to the restricted
unpickler; a spy subclass shows that each one really reaches the global it names.
"""

from __future__ import annotations

import copyreg
import io
import pickle
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import (
    CLIENT_MESSAGES,
    SERVER_MESSAGES,
    Codec,
    Error,
    Hello,
    Joined,
    Left,
    LocalProtocolError,
    Member,
    Message,
    MsgpackCodec,
    PickleCodec,
    Ping,
    Pong,
    Relayed,
    RemoteProtocolError,
    Roster,
    Say,
    Shutdown,
    Welcome,
    Who,
    encode_message,
    get_codec,
)
from protocol.codecs import RestrictedUnpickler
from protocol.constants import CodecName, ErrorCode
from protocol.frame import parse_frame
from protocol.messages import from_wire

MSGPACK = MsgpackCodec()
PICKLE = PickleCodec()
HELLO = {"type": "hello", "name": "alice"}
#: msgpack for {"type": "hello", "name": <to follow>}.
HELLO_NAME = b"\x82\xa4type\xa5hello\xa4name"


def refused(codec: Codec, payload: bytes) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        codec.decode(payload)
    assert info.value.code is ErrorCode.BAD_PAYLOAD
    assert info.value.fatal
    return info.value


@pytest.fixture(params=[CodecName.MSGPACK, CodecName.PICKLE], ids=str)
def codec(request: pytest.FixtureRequest) -> Codec:
    return get_codec(request.param)


# --- both codecs -----------------------------------------------------------------------------


def test_get_codec_knows_both_codecs_and_nothing_else() -> None:
    assert isinstance(get_codec("msgpack"), MsgpackCodec)
    assert isinstance(get_codec("pickle"), PickleCodec)
    with pytest.raises(ValueError):
        get_codec("json")


def test_a_map_survives_a_round_trip(codec: Codec) -> None:
    value = {"type": "roster", "members": [{"name": "a", "host": "b"}], "truncated": True, "n": 7}
    assert codec.decode(codec.encode(value)) == value


def test_the_empty_payload_is_bad_payload(codec: Codec) -> None:
    refused(codec, b"")


# --- msgpack -------------------------------------------------------------------------------------


def test_msgpack_encodes_hello_as_the_spec_example() -> None:
    # §5.5, byte for byte.
    assert MSGPACK.encode(HELLO) == bytes.fromhex("82 a4 74797065 a5 68656c6c6f a4 6e616d65 a5 616c696365")


def test_msgpack_encodes_strings_as_str_and_bytes_as_bin() -> None:
    assert MSGPACK.encode({"s": "x", "b": b"x"}) == b"\x82\xa1s\xa1x\xa1b\xc4\x01x"


def test_msgpack_decodes_bin_as_bytes_distinct_from_str() -> None:
    assert MSGPACK.decode(b"\x81\xa1b\xc4\x01x") == {"b": b"x"}


def test_msgpack_accepts_bin_map_keys() -> None:
    assert MSGPACK.decode(b"\x81\xc4\x04type\xa5hello") == {b"type": "hello"}


@pytest.mark.parametrize(
    "payload",
    [
        b"\xd4\x01\x00",
        HELLO_NAME + b"\xd4\x01\x00",
        HELLO_NAME + b"\x91\xc7\x03\x05abc",
        b"\x81\xa1k\x81\xa1j\xd5\x7f\x00\x00",
    ],
    ids=["fixext-top-level", "fixext-field", "ext8-in-array", "fixext2-in-nested-map"],
)
def test_msgpack_refuses_every_ext_type(payload: bytes) -> None:
    refused(MSGPACK, payload)


@pytest.mark.parametrize(
    "payload",
    [
        b"\xd6\xff\x00\x00\x00\x00",
        HELLO_NAME + b"\xd6\xff\x00\x00\x00\x00",
        HELLO_NAME + b"\x92\xa1x\xd7\xff" + bytes(8),
        b"\x81\xa1k\x81\xa1j\xc7\x0c\xff" + bytes(12),
    ],
    ids=["timestamp32-top-level", "timestamp32-field", "timestamp64-in-array", "timestamp96-in-nested-map"],
)
def test_msgpack_refuses_the_timestamp_extension(payload: bytes) -> None:
    refused(MSGPACK, payload)


@pytest.mark.parametrize(
    "payload",
    [
        b"\x81\x01\xa1x",
        b"\x81\xc0\xa1x",
        b"\x81\xc3\xa1x",
        b"\x81\xcb" + bytes(8) + b"\xa1x",
        b"\x81\xa1k\x81\x02\x03",
    ],
    ids=["int", "nil", "bool", "float", "nested-int"],
)
def test_msgpack_refuses_map_keys_other_than_str_and_bin(payload: bytes) -> None:
    refused(MSGPACK, payload)


@pytest.mark.parametrize(
    "string",
    [b"\xa1\xff", b"\xa2\xc3\x28", b"\xa2\xc0\xaf", b"\xa3\xed\xa0\x80", b"\xa4\xf4\x90\x80\x80"],
    ids=["ff", "bad-continuation", "overlong", "surrogate", "above-10ffff"],
)
def test_msgpack_refuses_strings_that_are_not_utf8(string: bytes) -> None:
    refused(MSGPACK, HELLO_NAME + string)


def test_msgpack_refuses_trailing_octets_after_one_value() -> None:
    refused(MSGPACK, MSGPACK.encode(HELLO) + b"\xc0")


@pytest.mark.parametrize("cut", [1, 5, 22])
def test_msgpack_refuses_a_truncated_value(cut: int) -> None:
    refused(MSGPACK, MSGPACK.encode(HELLO)[:cut])


def test_msgpack_refuses_the_never_used_octet() -> None:
    refused(MSGPACK, b"\xc1")


def test_msgpack_nesting_stops_at_1024_levels() -> None:
    assert MSGPACK.decode(b"\x91" * 1024 + b"\xc0") is not None
    refused(MSGPACK, b"\x91" * 1025 + b"\xc0")
    refused(MSGPACK, b"\x81\xa1k" + b"\x91" * 1024 + b"\xc0")


@pytest.mark.parametrize(
    "header", [b"\xdd\xff\xff\xff\xff", b"\xdf\xff\xff\xff\xff", b"\xdb\xff\xff\xff\xff"]
)
def test_msgpack_declared_lengths_beyond_the_payload_allocate_nothing(header: bytes) -> None:
    tracemalloc.start()
    try:
        refused(MSGPACK, header + b"\x00" * 16)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_msgpack_names_the_likely_codec_mismatch() -> None:
    assert "pickle" in refused(MSGPACK, PICKLE.encode(HELLO)).message
    assert "pickle" not in refused(MSGPACK, b"\xc1").message
    assert "pickle" not in refused(MSGPACK, b"\x80\x06").message  # no pickle protocol 6 yet


@pytest.mark.parametrize(
    "value", ["\ud800", 1 << 64, -(1 << 63) - 1], ids=["lone-surrogate", "2**64", "-2**63-1"]
)
def test_msgpack_refuses_to_encode_what_it_cannot_represent(value: object) -> None:
    with pytest.raises(LocalProtocolError):
        MSGPACK.encode({"type": "x", "v": value})
    assert MSGPACK.encode({"type": "x"}) == b"\x81\xa4type\xa1x"


# --- pickle --------------------------------------------------------------------------------------


def test_pickle_encodes_with_protocol_2_as_the_spec_example() -> None:
    expected = (
        "80 02 7d 71 00 28 58 04 00 00 00 74 79 70 65 71 01 58 05 00 00 00 68 65 6c 6c"
        "6f 71 02 58 04 00 00 00 6e 61 6d 65 71 03 58 05 00 00 00 61 6c 69 63 65 71 04"
        "75 2e"
    )
    assert PICKLE.encode(HELLO) == bytes.fromhex(expected)


def test_pickle_refuses_trailing_octets_after_stop() -> None:
    assert "STOP" in refused(PICKLE, PICKLE.encode(HELLO) + b"N").message


@pytest.mark.parametrize("cut", [1, 2, 20, 53])
def test_pickle_refuses_a_truncated_pickle(cut: int) -> None:
    refused(PICKLE, PICKLE.encode(HELLO)[:cut])


def test_pickle_refuses_msgpack_bytes_and_names_the_likely_codec_mismatch() -> None:
    assert "msgpack codec" in refused(PICKLE, MSGPACK.encode(HELLO)).message
    # Garbage, and a pickle cut short, are not taken for msgpack: 80 is pickle's PROTO opcode.
    for payload in (b"\xc1", b"junk", PICKLE.encode(HELLO)[:10], b"\x80"):
        assert "msgpack" not in refused(PICKLE, payload).message, payload


def test_pickle_accepts_every_protocol_for_plain_values() -> None:
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        assert PICKLE.decode(pickle.dumps(HELLO, protocol=protocol)) == HELLO


def test_pickle_refuses_out_of_band_buffers() -> None:
    refused(PICKLE, b"\x80\x05\x97.")


def test_pickle_memo_index_beyond_the_payload_is_refused_without_allocating() -> None:
    # EMPTY_DICT, LONG_BINPUT 0x00400000, STOP: a 9-octet payload for which an unchecked
    # C unpickler sizes its memo table at 8 Mi slots (64 MiB).
    tracemalloc.start()
    try:
        refused(PICKLE, b"\x80\x02}r\x00\x00\x40\x00.")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_pickle_error_quoting_a_global_stays_short() -> None:
    assert len(refused(PICKLE, b"c" + b"m" * 100_000 + b"\nsystem\n.").message) < 300


class _Spy(RestrictedUnpickler):
    """The restricted unpickler, noting what a payload asked it for."""

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file)
        self.globals: list[tuple[str, str]] = []
        self.persistent: list[Any] = []

    def find_class(self, module: str, name: str) -> Any:
        self.globals.append((module, name))
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        self.persistent.append(pid)
        return super().persistent_load(pid)


def spy_on(payload: bytes) -> _Spy:
    spy = _Spy(io.BytesIO(payload))
    with pytest.raises(pickle.UnpicklingError):
        spy.load()
    return spy


def _unicode(text: str) -> bytes:
    """BINUNICODE."""
    data = text.encode()
    return b"X" + len(data).to_bytes(4, "little") + data


def _short_unicode(text: str) -> bytes:
    """SHORT_BINUNICODE (protocol 4)."""
    data = text.encode()
    return b"\x8c" + bytes([len(data)]) + data


def gadgets(marker: Path) -> dict[str, tuple[bytes, tuple[str, str]]]:
    """Pickles that would create ``marker`` if unpickled without restriction, and the global each names."""
    touch = f"touch {marker}"
    return {
        "os.system-global-reduce": (
            b"\x80\x02cos\nsystem\n" + _unicode(touch) + b"\x85R.",
            ("os", "system"),
        ),
        "posix.system-protocol-0": (
            b"cposix\nsystem\n(S'" + touch.encode() + b"'\ntR.",
            ("posix", "system"),
        ),
        "subprocess.Popen-stack-global": (
            b"\x80\x04"
            + _short_unicode("subprocess")
            + _short_unicode("Popen")
            + b"\x93"
            + b"("
            + _short_unicode("touch")
            + _unicode(str(marker))
            + b"l\x85R.",
            ("subprocess", "Popen"),
        ),
        "builtins.eval": (
            b"\x80\x02cbuiltins\neval\n" + _unicode(f"open({str(marker)!r}, 'w')") + b"\x85R.",
            ("builtins", "eval"),
        ),
        "builtins.exec": (
            b"\x80\x02cbuiltins\nexec\n" + _unicode(f"open({str(marker)!r}, 'w')") + b"\x85R.",
            ("builtins", "exec"),
        ),
        "getattr-chain": (
            b"\x80\x02cbuiltins\ngetattr\ncbuiltins\n__import__\n"
            + _unicode("os")
            + b"\x85R"
            + _unicode("system")
            + b"\x86R"
            + _unicode(touch)
            + b"\x85R.",
            ("builtins", "getattr"),
        ),
        "inst": (b"(S'" + touch.encode() + b"'\nios\nsystem\n.", ("os", "system")),
        "obj": (b"\x80\x02(cos\nsystem\n" + _unicode(touch) + b"o.", ("os", "system")),
    }


GADGET_NAMES = list(gadgets(Path("/nonexistent")))


@pytest.mark.parametrize("name", GADGET_NAMES)
def test_pickle_gadget_is_refused_and_runs_nothing(name: str, tmp_path: Path) -> None:
    marker = tmp_path / "gadget-ran"
    payload, named = gadgets(marker)[name]
    assert spy_on(payload).globals == [named]
    assert "forbidden" in refused(PICKLE, payload).message
    assert not marker.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def extension_240() -> Iterator[int]:
    """os.system registered in the copyreg extension registry under code 240 (private use)."""
    copyreg.add_extension("os", "system", 240)
    try:
        yield 240
    finally:
        copyreg.remove_extension("os", "system", 240)


@pytest.mark.parametrize(
    "opcode", [b"\x82\xf0", b"\x83\xf0\x00", b"\x84\xf0\x00\x00\x00"], ids=["ext1", "ext2", "ext4"]
)
def test_pickle_extension_registry_is_refused_even_when_registered(
    opcode: bytes, extension_240: int, tmp_path: Path
) -> None:
    marker = tmp_path / "gadget-ran"
    payload = b"\x80\x02" + opcode + _unicode(f"touch {marker}") + b"\x85R."
    assert spy_on(payload).globals == [("os", "system")]
    refused(PICKLE, payload)
    assert not marker.exists()


def test_pickle_extension_code_that_is_not_registered_is_refused() -> None:
    refused(PICKLE, b"\x80\x02\x82\xf0.")


@pytest.mark.parametrize(
    "payload",
    [b"\x80\x02" + _unicode("/etc/passwd") + b"Q.", b"P/etc/passwd\n."],
    ids=["binpersid", "persid"],
)
def test_pickle_persistent_ids_are_refused(payload: bytes) -> None:
    assert spy_on(payload).persistent == ["/etc/passwd"]
    refused(PICKLE, payload)


# --- round trips of every message type ------------------------------------------------------

text = st.text(max_size=40)
count = st.integers(min_value=0, max_value=(1 << 64) - 1)
members = st.lists(st.builds(Member, text, text), max_size=5).map(tuple)

MESSAGES: dict[type[Message], st.SearchStrategy[Message]] = {
    Hello: st.builds(Hello, text),
    Say: st.builds(Say, text),
    Who: st.builds(Who),
    Ping: st.builds(Ping, text),
    Welcome: st.builds(Welcome, text, text, count, count, text, count, text),
    Joined: st.builds(Joined, text, text, count),
    Relayed: st.builds(Relayed, text, text, text),
    Left: st.builds(
        Left, text, text, count, st.sampled_from(["quit", "connection_lost", "slow_consumer", "error"])
    ),
    Roster: st.builds(Roster, members, st.booleans()),
    Pong: st.builds(Pong, text),
    Error: st.builds(Error, st.sampled_from([code.value for code in ErrorCode]), text, st.booleans()),
    Shutdown: st.builds(Shutdown, text),
}


def test_the_round_trip_strategies_cover_every_message_type() -> None:
    assert {cls.TYPE for cls in MESSAGES} == set(CLIENT_MESSAGES) | set(SERVER_MESSAGES)


@settings(max_examples=200, deadline=None)
@given(message=st.one_of(*MESSAGES.values()), codec_name=st.sampled_from(list(CodecName)))
def test_every_message_survives_a_round_trip_through_either_codec(
    message: Message, codec_name: CodecName
) -> None:
    codec = get_codec(codec_name)
    table = CLIENT_MESSAGES if message.TYPE in CLIENT_MESSAGES else SERVER_MESSAGES
    value = codec.decode(parse_frame(encode_message(codec, message)))
    assert list(value) == list(message.to_wire())
    assert from_wire(value, table) == message


def test_msgpack_and_the_reference_packer_agree() -> None:
    message = Relayed("\u674e", "::1", "\U0001f600")
    assert MSGPACK.encode(message.to_wire()) == msgpack.packb(message.to_wire(), use_bin_type=True)


@settings(max_examples=200, deadline=None)
@given(message=st.one_of(*MESSAGES.values()), protocol=st.integers(2, pickle.HIGHEST_PROTOCOL))
def test_a_message_in_the_other_codec_is_refused_with_the_hint_both_ways(
    message: Message, protocol: int
) -> None:
    """Spec §4.1: whichever codec a peer uses by mistake, the error names it."""
    as_msgpack = MSGPACK.encode(message.to_wire())
    assert "is the peer using the msgpack codec?" in refused(PICKLE, as_msgpack).message
    as_pickle = pickle.dumps(message.to_wire(), protocol=protocol)
    assert "is the peer using the pickle codec?" in refused(MSGPACK, as_pickle).message
