"""Codecs: msgpack decoding rules, the restricted unpickler, codec mismatch, garbage (§4, §9.1)."""

from __future__ import annotations

import os
import pickle
import random
import tempfile
from pathlib import Path
from typing import Any

import msgpack
import pytest

from protocol import (
    NEED_DATA,
    Connection,
    Hello,
    Ping,
    Pong,
    ProtocolError,
    Role,
    Say,
    Who,
    encode_frame,
    get_codec,
)
from protocol.constants import ErrorCode

from ..context import Context, relayed
from ..registry import MUST, SHOULD, case

MSGPACK = ("msgpack",)
PICKLE = ("pickle",)


def _pack(value: Any) -> bytes:
    data: bytes = msgpack.packb(value, use_bin_type=True)
    return data


def _refused(ctx: Context, payloads: list[bytes], code: str = ErrorCode.BAD_PAYLOAD) -> None:
    """Each payload, on a connection of its own before joining, gets a fatal ``code`` and a close."""
    for index, payload in enumerate(payloads):
        peer = ctx.peer(f"payload{index}")
        peer.send_raw(encode_frame(payload), f"payload {payload[:48].hex(' ')}")
        peer.expect_error(code, fatal=True)
        rest = peer.wait_closed()
        assert not rest, f"nothing may follow a fatal error: {rest!r}"


def _say_map(text: str, extra: bytes = b"") -> bytes:
    """A msgpack say map; ``extra`` is one more raw key/value pair appended to it."""
    head = b"\x83" if extra else b"\x82"
    return head + _pack("type") + _pack("say") + _pack("text") + _pack(text) + extra


# --- msgpack (§4.2) -----------------------------------------------------------------------


@case(
    "MSGPACK-TRAILING",
    "4.2",
    MUST,
    "trailing octets after the msgpack object are bad_payload (fatal)",
    codecs=MSGPACK,
)
def test_msgpack_trailing(ctx: Context) -> None:
    hello = _pack(Hello(ctx.name("x")).to_wire())
    _refused(ctx, [hello + b"\x00", hello + b"\xc0", hello + hello])


@case("MSGPACK-TRUNCATED", "4.2", MUST, "a truncated msgpack object is bad_payload (fatal)", codecs=MSGPACK)
def test_msgpack_truncated(ctx: Context) -> None:
    hello = _pack(Hello(ctx.name("x")).to_wire())
    _refused(ctx, [hello[:-1], hello[:1], b"\x82", b"\xd9"])


@case(
    "MSGPACK-UTF8",
    "4.2",
    MUST,
    "a str with invalid UTF-8 (overlong, surrogate, stray byte) is bad_payload (fatal)",
    codecs=MSGPACK,
)
def test_msgpack_utf8(ctx: Context) -> None:
    head = _pack("type") + _pack("hello") + _pack("name")
    bad = [b"\xc0\x80", b"\xed\xa0\x80", b"a\xff", b"\xe2\x82", b"\xf4\x90\x80\x80"]
    _refused(ctx, [b"\x82" + head + bytes([0xA0 | len(raw)]) + raw for raw in bad])


@case(
    "MSGPACK-MAP-KEYS",
    "4.2",
    MUST,
    "a map key that is not str or bin (int, nil, bool, float, array, map) is bad_payload, at any depth",
    codecs=MSGPACK,
)
def test_msgpack_map_keys(ctx: Context) -> None:
    keys = [b"\x01", b"\xc0", b"\xc3", b"\xcb" + b"\x00" * 8, b"\x90", b"\x80"]
    top = [
        b"\x83" + _pack("type") + _pack("say") + _pack("text") + _pack("x") + key + b"\x01" for key in keys
    ]
    nested = _say_map("x", _pack("deep") + b"\x91\x81\x01\x01")
    _refused(ctx, [*top, nested])


@case(
    "MSGPACK-EXT",
    "4.2",
    MUST,
    "ext values of any type, the timestamp extension included, are bad_payload (fatal)",
    codecs=MSGPACK,
)
def test_msgpack_ext(ctx: Context) -> None:
    exts = [
        _pack(msgpack.ExtType(5, b"a")),
        _pack(msgpack.ExtType(1, b"x" * 300)),
        b"\xd6\xf9abcd",  # fixext 4 with the negative (reserved) type -7
        _pack(msgpack.Timestamp(0)),
        _pack(msgpack.Timestamp(1_700_000_000, 5)),
    ]
    _refused(ctx, [_say_map("x", _pack("when") + ext) for ext in exts] + [b"\xd4\x05\x00"])


@case(
    "MSGPACK-DEPTH",
    "4.2",
    MUST,
    "1024 nested containers decode; 1025 are bad_payload (fatal)",
    codecs=MSGPACK,
)
def test_msgpack_depth(ctx: Context) -> None:
    def arrays(levels: int) -> bytes:
        return b"\x91" * (levels - 1) + b"\x90"

    sender, receiver = ctx.members("sender", "receiver")
    # The say map is level 1, so 1023 arrays inside it make 1024 levels.
    sender.send_raw(encode_frame(_say_map("deep but fine", _pack("n") + arrays(1023))), "1024 levels")
    receiver.expect(relayed("deep but fine"))
    _refused(ctx, [_say_map("too deep", _pack("n") + arrays(1024)), arrays(1025)])


@case(
    "MSGPACK-LENGTH-OVERRUN",
    "4.2",
    MUST,
    "str, bin, array or map lengths beyond the payload are bad_payload (fatal), not allocated",
    codecs=MSGPACK,
)
def test_msgpack_length_overrun(ctx: Context) -> None:
    head = b"\x82" + _pack("type") + _pack("say") + _pack("text")
    _refused(
        ctx,
        [
            head + b"\xdb\xff\xff\xff\xf0abc",
            head + b"\xc6\xff\xff\xff\xff\x00",
            b"\xdd\xff\xff\xff\xff\xc0",
            b"\xdf\xff\xff\xff\xff" + _pack("type"),
            head + b"\xda\x01\x00abc",
        ],
    )


@case("MSGPACK-C1", "4.2", MUST, "the never-used octet c1 is bad_payload (fatal)", codecs=MSGPACK)
def test_msgpack_c1(ctx: Context) -> None:
    _refused(ctx, [b"\xc1", b"\x81" + _pack("type") + b"\xc1", _say_map("x", _pack("odd") + b"\xc1")])


@case(
    "MSGPACK-DUPLICATE-KEY",
    "4.2",
    MUST,
    "a map holding a key twice takes the last occurrence",
    codecs=MSGPACK,
)
def test_msgpack_duplicate_key(ctx: Context) -> None:
    sender, receiver = ctx.members("sender", "receiver")
    payload = (
        b"\x83"
        + _pack("type")
        + _pack("say")
        + _pack("text")
        + _pack("first")
        + _pack("text")
        + _pack("last")
    )
    sender.send_raw(encode_frame(payload), "say with text twice: 'first', then 'last'")
    sender.send(Say("marker"))
    message = receiver.expect(
        lambda m: getattr(m, "text", None) in ("first", "last"), what="the duplicate-key say"
    )
    assert message.text == "last", f"the last occurrence must win, got {message.text!r}"


@case(
    "MSGPACK-LONG-FORMS",
    "4.2",
    MUST,
    "valid but not shortest encodings (map 16, str 8/16/32) are accepted",
    codecs=MSGPACK,
)
def test_msgpack_long_forms(ctx: Context) -> None:
    def str8(text: str) -> bytes:
        raw = text.encode()
        return b"\xd9" + bytes([len(raw)]) + raw

    def str32(text: str) -> bytes:
        raw = text.encode()
        return b"\xdb" + len(raw).to_bytes(4, "big") + raw

    sender, receiver = ctx.members("sender", "receiver")
    payload = b"\xde\x00\x02" + str8("type") + b"\xda\x00\x03say" + str32("text") + str8("long forms")
    sender.send_raw(encode_frame(payload), "say as map16, str8, str16, str32")
    receiver.expect(relayed("long forms", sender.name))


@case(
    "ENCODING-CANONICAL",
    "4.2",
    SHOULD,
    "server frames are canonical msgpack: spec field order, type first, shortest forms",
    codecs=MSGPACK,
)
def test_encoding_canonical(ctx: Context) -> None:
    order = {
        "welcome": ["name", "host", "clients", "max_frame", "server", "proto", "codec"],
        "joined": ["name", "host", "clients"],
        "message": ["name", "host", "text"],
        "left": ["name", "host", "clients", "reason"],
        "roster": ["members", "truncated"],
        "pong": ["token"],
        "error": ["code", "message", "fatal"],
    }
    first = ctx.member("first")
    second = ctx.member("second")
    second.send(Say("canonical"))
    second.send(Who())
    second.send_value({"type": "dance"})
    second.barrier()
    ctx.close_gracefully(second)
    first.expect(lambda m: getattr(m, "reason", None) == "quit", what="left")
    problems = []
    for peer in (first, second):
        for payload, value in zip(peer.payloads, peer.values, strict=True):
            kind = value.get("type") if isinstance(value, dict) else None
            if kind not in order:
                continue
            canonical = _pack({"type": kind, **{f: value[f] for f in order[kind] if f in value}})
            if payload != canonical:
                problems.append(f"{kind}: got {payload[:80].hex(' ')}, canonical {canonical[:80].hex(' ')}")
    assert not problems, "frames are not in canonical form (§4.2 encoding):\n" + "\n".join(problems)


# --- codec mismatch (§4.1) ------------------------------------------------------------------


@case(
    "CODEC-MISMATCH-PICKLE",
    "4.1",
    MUST,
    "a pickle hello to a msgpack server is bad_payload (fatal), the error in msgpack",
    codecs=MSGPACK,
)
def test_codec_mismatch_pickle(ctx: Context) -> None:
    hello = Hello(ctx.name("pickler")).to_wire()
    _refused(ctx, [pickle.dumps(hello, protocol=p) for p in (2, 3, 4, 5)])


@case(
    "CODEC-MISMATCH-HINT",
    "4.1",
    SHOULD,
    "the bad_payload message for a pickle payload says the peer seems to use pickle",
    codecs=MSGPACK,
)
def test_codec_mismatch_hint(ctx: Context) -> None:
    peer = ctx.peer("pickler")
    peer.send_raw(
        encode_frame(pickle.dumps(Hello(ctx.name("pickler")).to_wire(), protocol=2)), "pickle hello"
    )
    error = peer.expect_error(ErrorCode.BAD_PAYLOAD, fatal=True)
    assert "pickle" in error.message.lower(), f"the error message does not mention pickle: {error.message!r}"


@case(
    "CODEC-MISMATCH-MSGPACK",
    "4.1",
    MUST,
    "a msgpack hello to a pickle server is bad_payload (fatal), the error in pickle",
    codecs=PICKLE,
)
def test_codec_mismatch_msgpack(ctx: Context) -> None:
    _refused(ctx, [_pack(Hello(ctx.name("packer")).to_wire()), _pack(Say("x").to_wire())])


@case(
    "CODEC-MISMATCH-HINT-MSGPACK",
    "4.1",
    SHOULD,
    "the bad_payload message for a msgpack payload says the peer seems to use msgpack",
    codecs=PICKLE,
)
def test_codec_mismatch_hint_msgpack(ctx: Context) -> None:
    peer = ctx.peer("packer")
    peer.send_raw(encode_frame(_pack(Hello(ctx.name("packer")).to_wire())), "msgpack hello")
    error = peer.expect_error(ErrorCode.BAD_PAYLOAD, fatal=True)
    message = error.message
    assert "msgpack" in message.lower(), f"the error message does not mention msgpack: {message!r}"


@case(
    "CODEC-DEFAULT-MSGPACK",
    "4.3",
    MUST,
    "a server started without choosing a codec speaks msgpack",
    codecs=MSGPACK,
    spawns=True,
)
def test_codec_default_msgpack(ctx: Context) -> None:
    if ctx.template is not None and "{codec}" in ctx.template:
        pytest.skip("the server command template fixes the codec")
    server = ctx.spawn(codec_flag=False)
    peer = ctx.peer("joiner", address=server.address)
    welcome = peer.join(ctx.name("joiner"))
    assert welcome.codec == "msgpack", f"the default codec must be msgpack, welcome says {welcome.codec!r}"


# --- pickle (§4.3) ----------------------------------------------------------------------------


class _Reduce:
    """Pickles as a call of ``function(*args)``: the shape of every pickle exploit."""

    def __init__(self, function: Any, *args: Any) -> None:
        self.function = function
        self.args = args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.function, self.args


def _gadgets(marker: Path) -> list[tuple[str, bytes]]:
    command = f"touch {marker}"
    code = f"open({str(marker)!r}, 'w').close()"
    return [
        ("os.system via GLOBAL+REDUCE", pickle.dumps(_Reduce(os.system, command), protocol=2)),
        ("exec via STACK_GLOBAL", pickle.dumps(_Reduce(exec, code), protocol=4)),
        ("eval inside a hello map", pickle.dumps({"type": "hello", "name": _Reduce(eval, code)}, protocol=2)),
        ("os.system via INST", b"(V" + command.encode() + b"\nios\nsystem\n."),
        ("getattr chain", pickle.dumps(_Reduce(getattr, _Reduce(__import__, "os"), "system"), protocol=2)),
    ]


@case(
    "PICKLE-GADGET",
    "4.3",
    MUST,
    "code-execution gadgets (os.system, exec, eval, INST) are bad_payload and nothing runs",
    codecs=PICKLE,
    also=("14.1",),
)
def test_pickle_gadget(ctx: Context) -> None:
    with tempfile.TemporaryDirectory(prefix="conformance-") as directory:
        marker = Path(directory) / "executed"
        observer = ctx.member("observer")
        for label, payload in _gadgets(marker):
            ctx.transcript.note(f"gadget: {label}")
            peer = ctx.peer("gadget")
            peer.send_raw(encode_frame(payload), label)
            peer.expect_error(ErrorCode.BAD_PAYLOAD, fatal=True)
            peer.wait_closed()
            observer.barrier()
            assert not marker.exists(), f"the server executed a pickle gadget ({label}): {marker} was created"


@case(
    "PICKLE-PERSID", "4.3", MUST, "persistent ids (PERSID, BINPERSID) are bad_payload (fatal)", codecs=PICKLE
)
def test_pickle_persid(ctx: Context) -> None:
    _refused(ctx, [b"\x80\x02X\x01\x00\x00\x00aQ.", b"Pfoo\n."])


@case(
    "PICKLE-EXT-REGISTRY",
    "4.3",
    MUST,
    "extension-registry opcodes (EXT1/2/4) are bad_payload (fatal)",
    codecs=PICKLE,
)
def test_pickle_ext_registry(ctx: Context) -> None:
    _refused(ctx, [b"\x80\x02\x82\x01.", b"\x80\x02\x83\x01\x00.", b"\x80\x02\x84\x01\x00\x00\x00."])


@case(
    "PICKLE-OOB-BUFFER",
    "4.3",
    MUST,
    "out-of-band buffers (NEXT_BUFFER, READONLY_BUFFER) are bad_payload (fatal)",
    codecs=PICKLE,
)
def test_pickle_oob_buffer(ctx: Context) -> None:
    _refused(ctx, [b"\x80\x05\x97.", b"\x80\x05\x97\x98."])


@case(
    "PICKLE-MEMO-INDEX",
    "4.3",
    MUST,
    "a memo index beyond the payload length is bad_payload, refused before it is allocated",
    codecs=PICKLE,
)
def test_pickle_memo_index(ctx: Context) -> None:
    before = ctx.server.rss_kib() if ctx.server is not None else None
    _refused(
        ctx,
        [
            bytes.fromhex("80024e72ffffff0f307d2e"),  # LONG_BINPUT 0x0fffffff: the spec's example
            b"\x80\x02N" + b"q\xff" + b"0}.",  # BINPUT 255 in an 8-octet payload
            b"N" + b"p99999999\n" + b"0}.",  # protocol 0 PUT
        ],
    )
    after = ctx.server.rss_kib() if ctx.server is not None else None
    if before is not None and after is not None:
        ctx.transcript.note(f"server RSS {before} KiB before, {after} KiB after")
        assert after - before <= 16 * 1024, f"the server's RSS grew by {after - before} KiB on memo indices"


@case("PICKLE-TRAILING", "4.3", MUST, "octets after the STOP opcode are bad_payload (fatal)", codecs=PICKLE)
def test_pickle_trailing(ctx: Context) -> None:
    hello = pickle.dumps(Hello(ctx.name("x")).to_wire(), protocol=2)
    _refused(ctx, [hello + b"x", hello + hello, hello[:-1]])


@case(
    "PICKLE-ENCODING",
    "4.3",
    MUST,
    "the server's pickle frames are protocol 2 (payloads start 80 02)",
    codecs=PICKLE,
)
def test_pickle_encoding(ctx: Context) -> None:
    first = ctx.member("first")
    second = ctx.member("second")
    second.send(Ping("p"))
    second.expect(Pong)
    second.send_value({"type": "dance"})
    second.barrier()
    wrong = [
        p[:8].hex(" ") for peer in (first, second) for p in peer.payloads if not p.startswith(b"\x80\x02")
    ]
    assert not wrong, f"payloads not in pickle protocol 2: {wrong}"


@case(
    "PICKLE-WARNING",
    "4.3",
    MUST,
    "a server started with pickle logs a warning that pickle is unsafe",
    codecs=PICKLE,
    process=True,
)
def test_pickle_warning(ctx: Context) -> None:
    assert ctx.server is not None
    ctx.settle(ctx.member("joiner"))
    log = ctx.server.stderr_tail(200) + ctx.server.stdout_text()
    lines = [line for line in log.splitlines() if "pickle" in line.lower()]
    assert lines, f"the server logged nothing about pickle; its output:\n{log[-2000:]}"


# --- garbage (§9.1) -----------------------------------------------------------------------------


def _reference_error(codec_name: str, payload: bytes) -> tuple[str, bool] | None:
    """The error the reference core gives ``payload`` as a first frame, or None if it is accepted."""
    connection = Connection(Role.SERVER, codec=get_codec(codec_name))
    connection.receive_data(encode_frame(payload))
    try:
        event = connection.next_event()
    except ProtocolError as exc:
        return exc.code.value, exc.fatal
    assert event is not NEED_DATA
    return None


@case(
    "GARBAGE-PAYLOADS",
    "9.1",
    MUST,
    "random payloads get the error the spec assigns (bad_payload or bad_message), with its fatal flag",
)
def test_garbage_payloads(ctx: Context) -> None:
    rng = random.Random(20240601)  # noqa: S311 (reproducible garbage, not secrets)
    prefixes = [b"", b"\x80\x02", b"\x82", b"\x81\xa4type", b"\x93"]
    tried = 0
    for _ in range(2000):
        if tried == 30:
            break
        payload = rng.choice(prefixes) + rng.randbytes(rng.randint(1, 40))
        expected = _reference_error(ctx.codec_name, payload)
        if expected is None or expected[0] not in (ErrorCode.BAD_PAYLOAD, ErrorCode.BAD_MESSAGE):
            continue
        tried += 1
        peer = ctx.peer(f"garbage{tried}")
        peer.send_raw(encode_frame(payload), "random payload")
        peer.expect_error(expected[0], fatal=expected[1])
        if expected[1]:
            peer.wait_closed()
        else:
            peer.join(ctx.name("survivor"))
            ctx.close_gracefully(peer)
    assert tried == 30, f"only {tried} random payloads were refused by the reference core"
