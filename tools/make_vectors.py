"""Write the test vectors of spec/PROTOCOL.md §15 to spec/vectors/.

    python tools/make_vectors.py [--out DIR]

The inputs and expected outcomes are stated here by hand; the protocol package only
encodes the valid messages, so the committed files pin its bytes. The output is
deterministic and tests/test_vectors.py checks that the committed files are exactly what
this script writes, and that the package agrees with every vector in both directions.

Hostile pickles are assembled from opcodes below, never by pickling a real callable, and
nothing here unpickles anything.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import msgpack

REPOSITORY = Path(__file__).resolve().parent.parent
# Run as a script, Python puts tools/ first on the path; the vectors come from this checkout's package.
if str(REPOSITORY) not in sys.path:
    sys.path.insert(0, str(REPOSITORY))

from protocol import (  # noqa: E402
    CLIENT_MESSAGES,
    SERVER_MESSAGES,
    encode_frame,
    encode_message,
    get_codec,
)
from protocol.constants import (  # noqa: E402
    DEFAULT_MAX_FRAME,
    FATAL,
    MAX_PAYLOAD_OBJECTS,
    MAX_WIRE_LENGTH,
    MIN_MAX_FRAME,
    SHUTDOWN_REASON,
    CodecName,
    ErrorCode,
)
from protocol.messages import from_wire  # noqa: E402
from protocol.names import name_key, name_skeleton  # noqa: E402

VERSION = 1
DEFAULT_OUT = REPOSITORY / "spec" / "vectors"
#: The copy the conformance package ships (read through importlib.resources once installed).
PACKAGED_COPY = REPOSITORY / "conformance" / "vectors"
CODECS = (CodecName.MSGPACK, CodecName.PICKLE)

Vector = dict[str, Any]


def _document(description: str, vectors: list[Vector]) -> dict[str, Any]:
    ids = [vector["id"] for vector in vectors]
    if len(set(ids)) != len(ids):
        raise SystemExit(f"duplicate vector ids: {sorted(i for i in ids if ids.count(i) > 1)}")
    return {
        "version": VERSION,
        "description": description,
        "vectors": sorted(vectors, key=lambda vector: str(vector["id"])),
    }


# --- frames.json: framing only -------------------------------------------------------------


def _header(length: int) -> bytes:
    return length.to_bytes(4, "big")


def _frame_vector(
    vector_id: str,
    description: str,
    stream: bytes,
    payloads: list[bytes],
    *,
    error: ErrorCode | None = None,
    max_frame: int = DEFAULT_MAX_FRAME,
    eof: bool = False,
    clean: bool | None = None,
) -> Vector:
    return {
        "id": vector_id,
        "description": description,
        "stream": stream.hex(),
        "payloads": [payload.hex() for payload in payloads],
        "error": None if error is None else error.value,
        "max_frame": max_frame,
        "eof": eof,
        "clean": clean,
    }


def frame_vectors() -> list[Vector]:
    hello = b"hello"
    world = b"world!"
    full = bytes(range(256)) * (MIN_MAX_FRAME // 256)
    too_large = ErrorCode.FRAME_TOO_LARGE
    return [
        _frame_vector("single-frame", "One frame.", _header(5) + hello, [hello]),
        _frame_vector(
            "two-coalesced-frames",
            "Two frames arriving together yield two payloads, in order.",
            _header(5) + hello + _header(6) + world,
            [hello, world],
        ),
        _frame_vector(
            "zero-length-frame",
            "Length 0 is valid framing and yields an empty payload (which no codec then accepts, §3.3).",
            _header(0),
            [b""],
        ),
        _frame_vector(
            "exactly-max-frame",
            f"A length equal to max_frame ({MIN_MAX_FRAME}) is accepted.",
            _header(MIN_MAX_FRAME) + full,
            [full],
            max_frame=MIN_MAX_FRAME,
        ),
        _frame_vector(
            "max-frame-plus-one",
            f"A header announcing max_frame + 1 ({MIN_MAX_FRAME + 1}) is rejected from its 4 octets alone.",
            _header(MIN_MAX_FRAME + 1),
            [],
            error=too_large,
            max_frame=MIN_MAX_FRAME,
        ),
        _frame_vector(
            "default-max-frame-plus-one",
            f"With the default max_frame, a header announcing {DEFAULT_MAX_FRAME + 1} is rejected.",
            _header(DEFAULT_MAX_FRAME + 1),
            [],
            error=too_large,
        ),
        _frame_vector(
            "length-ffffffff",
            "The largest length a header can express is rejected after 4 octets, nothing allocated.",
            _header(MAX_WIRE_LENGTH),
            [],
            error=too_large,
        ),
        _frame_vector(
            "frame-then-oversized-header",
            "Frames before a bad header are still yielded, then the error.",
            _header(5) + hello + _header(DEFAULT_MAX_FRAME + 1) + b"junk",
            [hello],
            error=too_large,
        ),
        _frame_vector(
            "frame-then-partial-header",
            "A frame followed by the first 2 header octets of the next: one payload, 2 octets wait.",
            _header(5) + hello + _header(6)[:2],
            [hello],
        ),
        _frame_vector(
            "eof-empty-stream",
            "EOF before any octet is at a frame boundary.",
            b"",
            [],
            eof=True,
            clean=True,
        ),
        _frame_vector(
            "eof-after-frames",
            "EOF right after complete frames is at a frame boundary (departure reason quit).",
            _header(5) + hello + _header(6) + world,
            [hello, world],
            eof=True,
            clean=True,
        ),
        _frame_vector(
            "eof-truncated-header",
            "EOF after 3 header octets is mid-frame (departure reason connection_lost).",
            _header(5)[:3],
            [],
            eof=True,
            clean=False,
        ),
        _frame_vector(
            "eof-truncated-payload",
            "EOF after a header and 2 of its 5 payload octets is mid-frame.",
            _header(5) + hello[:2],
            [],
            eof=True,
            clean=False,
        ),
        _frame_vector(
            "eof-frame-then-truncated-payload",
            "The complete frame before a mid-frame EOF is still yielded.",
            _header(5) + hello + _header(6) + world[:5],
            [hello],
            eof=True,
            clean=False,
        ),
    ]


# --- messages.json: valid messages in both codecs --------------------------------------------

# Every string value differs from every other in its message: Python's pickler memoises by
# object identity, so equal strings could be written once or twice (spec §15.2).
C2S: list[tuple[str, dict[str, Any]]] = [
    ("hello", {"type": "hello", "name": "alice"}),
    # A code point outside the BMP (U+20B9F, a CJK ideograph): four octets of UTF-8. (An emoji
    # was used until §6.1 took the PRECIS profile, which refuses symbols.)
    ("hello-astral-name", {"type": "hello", "name": "\U00020b9fbob"}),
    ("hello-combining-mark-name", {"type": "hello", "name": "Zoe\u0308"}),
    ("hello-cjk-name", {"type": "hello", "name": "\u674e\u5c0f\u9f8d"}),
    # The optional token of a server with access control (§5.3.1, §17.3).
    ("hello-token", {"type": "hello", "name": "carol", "token": "s3cret-t0ken-for-carol"}),
    ("say", {"type": "say", "text": "hello, world"}),
    ("say-empty-text", {"type": "say", "text": ""}),
    (
        "say-unicode-text",
        {"type": "say", "text": "caf\u00e9 / cafe\u0301 \u4f60\u597d \U0001f600 \U0001f469\u200d\U0001f4bb"},
    ),
    ("who", {"type": "who"}),
    ("ping", {"type": "ping", "token": "t-1"}),
    ("ping-empty-token", {"type": "ping", "token": ""}),
]


def _s2c(codec: CodecName) -> list[tuple[str, dict[str, Any]]]:
    def left(reason: str) -> dict[str, Any]:
        return {"type": "left", "name": "bob", "host": "::1", "clients": 1, "reason": reason}

    alice = {"name": "alice", "host": "127.0.0.1"}
    bob = {"name": "bob", "host": "::1"}
    return [
        (
            "welcome",
            {
                "type": "welcome",
                "name": "alice",
                "host": "127.0.0.1",
                "clients": 1,
                "max_frame": DEFAULT_MAX_FRAME,
                "server": "chatwire-reference/1",
                "proto": 1,
                "codec": codec.value,
            },
        ),
        (
            "welcome-ipv6-small-max-frame",
            {
                "type": "welcome",
                "name": "\U00020b9fbob",
                "host": "::1",
                "clients": 2,
                "max_frame": MIN_MAX_FRAME,
                "server": "chatwire-reference/1",
                "proto": 1,
                "codec": codec.value,
            },
        ),
        ("joined", {"type": "joined", "name": "bob", "host": "::1", "clients": 2}),
        ("message", {"type": "message", "name": "alice", "host": "127.0.0.1", "text": "hi bob"}),
        ("message-empty-text", {"type": "message", "name": "alice", "host": "127.0.0.1", "text": ""}),
        (
            "message-unicode",
            {
                "type": "message",
                "name": "\u674e\u5c0f\u9f8d",
                "host": "10.0.0.7",
                "text": "\u4f60\u597d \U0001f600",
            },
        ),
        ("left-quit", left("quit")),
        ("left-connection-lost", left("connection_lost")),
        ("left-slow-consumer", left("slow_consumer")),
        ("left-error", left("error")),
        ("roster-empty", {"type": "roster", "members": [], "truncated": False}),
        ("roster-two-members", {"type": "roster", "members": [alice, bob], "truncated": False}),
        ("roster-truncated", {"type": "roster", "members": [alice], "truncated": True}),
        ("pong", {"type": "pong", "token": "t-1"}),
        (
            "error-fatal",
            {"type": "error", "code": "bad_payload", "message": "not a msgpack value", "fatal": True},
        ),
        (
            "error-non-fatal",
            {"type": "error", "code": "name_taken", "message": "the name 'alice' is in use", "fatal": False},
        ),
        ("shutdown", {"type": "shutdown", "reason": SHUTDOWN_REASON}),
    ]


def message_vectors() -> list[Vector]:
    vectors = []
    for codec_name in CODECS:
        codec = get_codec(codec_name)
        directions = (("c2s", CLIENT_MESSAGES, C2S), ("s2c", SERVER_MESSAGES, _s2c(codec_name)))
        for direction, accepted, cases in directions:
            for slug, wire in cases:
                # The same path the tests take from the JSON: parse, build the message, encode.
                message = from_wire(json.loads(json.dumps(wire)), accepted)
                if message.to_wire() != wire:
                    raise SystemExit(f"{slug}: fields out of spec order: {message.to_wire()}")
                vectors.append(
                    {
                        "id": f"{codec_name.value}-{direction}-{slug}",
                        "codec": codec_name.value,
                        "direction": direction,
                        "message": wire,
                        "hex": encode_message(codec, message).hex(),
                    }
                )
    return vectors


# --- invalid.json: what a server refuses ------------------------------------------------------


def _mp(value: Any) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


#: msgpack for the start of a hello map: fixmap(2) "type" "hello" "name", the name to follow.
HELLO_NAME_KEY = b"\x82" + _mp("type") + _mp("hello") + _mp("name")
HELLO_ALICE = {"type": "hello", "name": "alice"}

#: A harmless command for the gadgets: the vectors are meant for foreign decoders too.
COMMAND = "echo chatwire-pickle-gadget-ran"


def _pickle_str(text: str) -> bytes:
    """BINUNICODE: X, uint32 little-endian length, UTF-8."""
    data = text.encode()
    return b"X" + len(data).to_bytes(4, "little") + data


def _pickle_short_str(text: str) -> bytes:
    """SHORT_BINUNICODE (protocol 4): 0x8c, uint8 length, UTF-8."""
    data = text.encode()
    return b"\x8c" + bytes([len(data)]) + data


PROTO2 = b"\x80\x02"
PROTO4 = b"\x80\x04"

# (slug, payload, description). Opcodes: c GLOBAL "module\nname\n", 0x93 STACK_GLOBAL,
# i INST, o OBJ, 0x82 EXT1, Q BINPERSID, P PERSID, R REDUCE, ( MARK, t TUPLE, 0x85 TUPLE1,
# 0x86 TUPLE2, 0x97 NEXT_BUFFER, r LONG_BINPUT, } EMPTY_DICT, . STOP.
PICKLE_GADGETS: list[tuple[str, bytes, str]] = [
    (
        "gadget-os-system-global-reduce",
        PROTO2 + b"cos\nsystem\n" + _pickle_str(COMMAND) + b"\x85R.",
        "PROTO 2, GLOBAL os.system, BINUNICODE command, TUPLE1, REDUCE, STOP: os.system(command).",
    ),
    (
        "gadget-posix-system-protocol-0",
        b"cposix\nsystem\n(S'" + COMMAND.encode() + b"'\ntR.",
        "Protocol 0: GLOBAL posix.system, MARK, STRING command, TUPLE, REDUCE, STOP.",
    ),
    (
        "gadget-subprocess-popen-stack-global",
        PROTO4
        + _pickle_short_str("subprocess")
        + _pickle_short_str("Popen")
        + b"\x93"
        + _pickle_short_str("echo")
        + _pickle_short_str("chatwire-pickle-gadget-ran")
        + b"\x86\x85R.",
        "PROTO 4, SHORT_BINUNICODE subprocess, SHORT_BINUNICODE Popen, STACK_GLOBAL, "
        "two SHORT_BINUNICODE args, TUPLE2, TUPLE1, REDUCE, STOP: subprocess.Popen((echo, ...)).",
    ),
    (
        "gadget-builtins-eval",
        PROTO2 + b"cbuiltins\neval\n" + _pickle_str(f"__import__('os').system({COMMAND!r})") + b"\x85R.",
        "PROTO 2, GLOBAL builtins.eval, BINUNICODE source, TUPLE1, REDUCE, STOP.",
    ),
    (
        "gadget-getattr-chain",
        PROTO2
        + b"cbuiltins\ngetattr\n"
        + b"cbuiltins\n__import__\n"
        + _pickle_str("os")
        + b"\x85R"
        + _pickle_str("system")
        + b"\x86R"
        + _pickle_str(COMMAND)
        + b"\x85R.",
        "getattr(__import__('os'), 'system')(command): GLOBAL builtins.getattr, GLOBAL builtins.__import__, "
        "'os' TUPLE1 REDUCE, 'system' TUPLE2 REDUCE, command TUPLE1 REDUCE, STOP.",
    ),
    (
        "gadget-inst",
        b"(S'" + COMMAND.encode() + b"'\nios\nsystem\n.",
        "Protocol 0: MARK, STRING command, INST os.system (calls the class with the marked args), STOP.",
    ),
    (
        "gadget-obj",
        PROTO2 + b"(cos\nsystem\n" + _pickle_str(COMMAND) + b"o.",
        "MARK, GLOBAL os.system, BINUNICODE command, OBJ (calls the first marked item), STOP.",
    ),
    (
        "gadget-ext1",
        PROTO2 + b"\x82\xf0" + _pickle_str(COMMAND) + b"\x85R.",
        "EXT1 240 (a copyreg extension code, private-use range), BINUNICODE, TUPLE1, REDUCE, STOP: "
        "the registry resolves codes to globals, so it is refused whether or not 240 is registered.",
    ),
    (
        "gadget-binpersid",
        PROTO2 + _pickle_str("/etc/passwd") + b"Q.",
        "BINUNICODE id, BINPERSID, STOP: persistent ids are refused.",
    ),
    (
        "gadget-persid-protocol-0",
        b"P/etc/passwd\n.",
        "Protocol 0 PERSID, STOP: persistent ids are refused.",
    ),
    (
        "next-buffer",
        b"\x80\x05\x97.",
        "PROTO 5, NEXT_BUFFER, STOP: out-of-band buffers are refused.",
    ),
    (
        "memo-index-out-of-range",
        PROTO2 + b"}r\x00\x00\x10\x00.",
        "EMPTY_DICT, LONG_BINPUT 0x00100000, STOP: a memo index beyond the payload length. CPython's "
        "unpickler sizes its memo table by the index: 16 MiB here, gigabytes for larger indices.",
    ),
]


def _long1(value: int) -> bytes:
    """LONG1: 0x8a, uint8 length, the integer in little-endian two's complement."""
    data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(data)]) + data


#: A tuple with 2**64 paths to the empty tuple, in 129 octets: EMPTY_TUPLE, then DUP TUPLE2 64 times.
TUPLE_BOMB = b")" + b"2\x86" * 64
#: CPython hashes an int n as n mod (2**61 - 1), so these keys all hash to 0.
COLLIDING_KEYS = [k * ((1 << 61) - 1) for k in (1, 2, 3)]

# Inputs that fuzzing found to cost far more than their size, or to make a server break §3.2.
PICKLE_FINDINGS: list[tuple[str, bytes, str]] = [
    (
        "tuple-key-hash-bomb",
        PROTO2 + b"}" + TUPLE_BOMB + b"Ns.",
        "EMPTY_DICT, a tuple of 2**64 paths (EMPTY_TUPLE, then DUP TUPLE2 64 times), NONE, SETITEM: the "
        "tuple is a dict key. Hashing a tuple visits every item and is not cached, so inserting it would "
        "take 2**64 steps. Dict keys must be str or bytes (§14.1).",
    ),
    (
        "frozenset-hash-bomb",
        PROTO4 + b"(" + TUPLE_BOMB + b"\x91.",
        "MARK, the same 2**64-path tuple, FROZENSET: a set element is hashed like a dict key (§14.1).",
    ),
    (
        "colliding-int-keys",
        PROTO2 + b"}(" + b"".join(_long1(key) + b"N" for key in COLLIDING_KEYS) + b"u.",
        "EMPTY_DICT, MARK, three LONG1 keys k * (2**61 - 1) with NONE values, SETITEMS. CPython hashes "
        "ints predictably and these keys hash alike: a frame of such keys makes building the dict "
        "quadratic (a 1 MiB frame, about 80,000 keys, takes half a minute). Dict keys must be str or "
        "bytes (§14.1).",
    ),
    (
        "error-quoting-long-input",
        b"S" + b"A" * 1000 + b"\n.",
        "Protocol 0 STRING whose argument has no quotes: the decoder's complaint quotes the argument. The "
        "error's message must be cut short, so that the error frame fits max_frame even at "
        f"MIN_MAX_FRAME ({MIN_MAX_FRAME}) (§3.2, §14.1).",
    ),
]


# §4.2 rule 9 and §4.3 rule 8: a payload of MAX_PAYLOAD_OBJECTS values (or opcodes) is decoded,
# one more is refused unbuilt. Each is the smallest shape of the attack: one-octet empty arrays.
OVER = MAX_PAYLOAD_OBJECTS + 1


def _mp_empty_arrays(count: int) -> bytes:
    """An array 32 holding ``count`` empty arrays: ``count + 1`` values."""
    return b"\xdd" + count.to_bytes(4, "big") + b"\x90" * count


def _mp_with_empty_arrays(message: dict[str, str], values: int) -> bytes:
    """``message`` with an unknown field x, an array of empty arrays: ``values`` values in all."""
    heads = 1 + 2 * (len(message) + 1)  # the map, then each key and value (x's array included)
    count = values - heads
    head = _mp({**message, "x": []})[: -len(_mp([]))]  # the map up to x's value
    return head + b"\xdc" + count.to_bytes(2, "big") + b"\x90" * count


def _pickle_empty_lists(count: int) -> bytes:
    """PROTO 2, a list of ``count`` empty lists (MARK, EMPTY_LIST each, APPENDS), STOP:
    ``count + 5`` opcodes."""
    return PROTO2 + b"](" + b"]" * count + b"e."


class Case(NamedTuple):
    """One invalid.json entry before rendering."""

    codec: CodecName
    state: str
    error: ErrorCode
    slug: str
    stream: bytes
    description: str

    def vector(self) -> Vector:
        return {
            "id": f"{self.codec.value}-{self.state}-{self.error.value}-{self.slug}",
            "codec": self.codec.value,
            "state": self.state,
            "hex": self.stream.hex(),
            "error": self.error.value,
            "fatal": FATAL[self.error],
            "description": self.description,
        }


def _encoder(codec: CodecName) -> Callable[[Any], bytes]:
    if codec is CodecName.MSGPACK:
        return _mp

    def encode(value: Any) -> bytes:
        # Protocol 2 pickles bytes through a global (_codecs.encode); protocol 3 has BINBYTES.
        return pickle.dumps(value, protocol=3 if _holds_bytes(value) else 2)

    return encode


def _holds_bytes(value: Any) -> bool:
    if isinstance(value, bytes):
        return True
    if isinstance(value, dict):
        return any(_holds_bytes(k) or _holds_bytes(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_bytes(item) for item in value)
    return False


# --- names.json: the name profile and comparison of §6 ------------------------------------------

# (slug, name, description, outcome): outcome "valid", or "refused-in-invalid" (also an
# invalid.json vector in both codecs), or "refused".
NAME_CASES: list[tuple[str, str, str, str]] = [
    (
        "variation-selector-16",
        "alice\ufe0f",
        "alice then U+FE0F VARIATION SELECTOR-16.",
        "refused-in-invalid",
    ),
    (
        "combining-grapheme-joiner",
        "alice\u034f",
        "alice then U+034F COMBINING GRAPHEME JOINER (Mn, default ignorable).",
        "refused-in-invalid",
    ),
    (
        "hangul-filler-only",
        "\u3164",
        "Only U+3164 HANGUL FILLER (Lo, default ignorable).",
        "refused-in-invalid",
    ),
    ("braille-blank-only", "\u2800", "Only U+2800 BRAILLE PATTERN BLANK (So).", "refused-in-invalid"),
    (
        "halfwidth-hangul-filler-only",
        "\uffa0",
        "Only U+FFA0 HALFWIDTH HANGUL FILLER: width mapping makes it U+1160, an old jamo filler.",
        "refused-in-invalid",
    ),
    ("hangul-filler-in-name", "al\u3164ice", "U+3164 HANGUL FILLER inside alice.", "refused"),
    ("choseong-filler-only", "\u115f", "Only U+115F HANGUL CHOSEONG FILLER.", "refused"),
    ("jungseong-filler-only", "\u1160", "Only U+1160 HANGUL JUNGSEONG FILLER.", "refused"),
    ("variation-selector-1", "alice\ufe00", "alice then U+FE00 VARIATION SELECTOR-1.", "refused"),
    (
        "variation-selector-17",
        "alice\U000e0100",
        "alice then U+E0100 VARIATION SELECTOR-17 (supplementary).",
        "refused",
    ),
    ("tag-character", "alice\U000e0041", "alice then U+E0041 TAG LATIN CAPITAL LETTER A.", "refused"),
    ("word-joiner", "al\u2060ice", "U+2060 WORD JOINER (Cf) inside alice.", "refused"),
    ("ligature", "\ufb01le", "U+FB01 LATIN SMALL LIGATURE FI: a compatibility form.", "refused"),
    ("superscript", "x\u00b2", "U+00B2 SUPERSCRIPT TWO: a compatibility form.", "refused"),
    ("emoji", "\U0001f600", "U+1F600 GRINNING FACE: a symbol.", "refused"),
    (
        "fullwidth-at",
        "alice\uff20host",
        "U+FF20 FULLWIDTH COMMERCIAL AT: its PRECIS form is @ (rule 3).",
        "refused",
    ),
    (
        "mixed-direction",
        "\u0639\u0644\u064a" + "abc",
        "Arabic letters then Latin abc: the Bidi Rule (RFC 5893) refuses L in a right-to-left name.",
        "refused",
    ),
    ("latin", "alice", "Plain ASCII.", "valid"),
    ("accented", "Zo\u00eb", "Zo\u00eb, precomposed.", "valid"),
    ("combining-mark", "e\u0301clair", "e, U+0301 COMBINING ACUTE ACCENT, clair.", "valid"),
    ("cjk", "\u674e\u5c0f\u9f8d", "Three CJK ideographs.", "valid"),
    ("arabic", "\u0627\u0644\u0639\u0631\u0628\u064a\u0629", "Arabic letters only.", "valid"),
    (
        "fullwidth-latin",
        "\uff21\uff2c\uff29\uff23\uff25",
        "Fullwidth ALICE: width mapping allows it.",
        "valid",
    ),
    ("punctuation-ascii", "a-b_c.d", "ASCII punctuation is allowed.", "valid"),
]

# (slug, member, name, error, description): while member is present, hello{name} is refused
# with error, or welcomed when error is None.
NAME_PAIRS: list[tuple[str, str, str, ErrorCode | None, str]] = [
    (
        "cyrillic-a",
        "alice",
        "\u0430lice",
        ErrorCode.NAME_TAKEN,
        "Cyrillic U+0430 for the Latin a: equal skeletons.",
    ),
    (
        "cyrillic-paypal",
        "paypal",
        "\u0440\u0430\u0443\u0440\u0430l",
        ErrorCode.NAME_TAKEN,
        "Cyrillic U+0440, U+0430, U+0443 for p, a, y: equal skeletons.",
    ),
    ("greek-omicron", "bob", "b\u03bfb", ErrorCode.NAME_TAKEN, "Greek U+03BF for the Latin o."),
    (
        "capital-i-for-l",
        "lvan",
        "IVAN",
        ErrorCode.NAME_TAKEN,
        "I looks like l: the skeleton is taken before folding.",
    ),
    ("digit-zero", "bob", "b0b", ErrorCode.NAME_TAKEN, "0 has the prototype O, which folds to o."),
    ("m-for-rn", "rnodern", "modern", ErrorCode.NAME_TAKEN, "m has the prototype rn."),
    ("case", "alice", "ALICE", ErrorCode.NAME_TAKEN, "Case: equal keys."),
    ("fullwidth", "alice", "\uff21\uff2c\uff29\uff23\uff25", ErrorCode.NAME_TAKEN, "Fullwidth: equal keys."),
    ("sharp-s", "stra\u00dfe", "STRASSE", ErrorCode.NAME_TAKEN, "Full case folding: equal keys."),
    (
        "combining-sequence",
        "Zo\u00eb",
        "Zoe\u0308",
        ErrorCode.NAME_TAKEN,
        "Precomposed and combining diaeresis: equal keys.",
    ),
    ("dotted-i-is-not-l", "lvan", "ivan", None, "i is its own prototype: a different name."),
    ("accent-is-not-plain", "alice", "al\u00edce", None, "Diacritics are kept: a different name."),
]


def name_vectors() -> list[Vector]:
    vectors: list[Vector] = []

    def keys(name: str) -> tuple[str, str]:
        return name_key(name), name_skeleton(name)

    for slug, name, description, outcome in NAME_CASES:
        valid = outcome == "valid"
        key, shape = keys(name) if valid else (None, None)
        vectors.append(
            {
                "id": f"{'valid' if valid else 'invalid'}-{slug}",
                "description": description,
                "member": None,
                "name": name,
                "error": None if valid else ErrorCode.NAME_INVALID.value,
                "key": key,
                "skeleton": shape,
            }
        )
    for slug, member, name, error, description in NAME_PAIRS:
        key, shape = keys(name)
        vectors.append(
            {
                "id": f"{'taken' if error else 'free'}-{slug}",
                "description": description,
                "member": member,
                "name": name,
                "error": None if error is None else error.value,
                "key": key,
                "skeleton": shape,
            }
        )
    return vectors


# (state, error, slug, value, description): values any codec can carry; each becomes one
# whole frame per codec.
BAD_MESSAGE, HELLO_REQUIRED = ErrorCode.BAD_MESSAGE, ErrorCode.HELLO_REQUIRED
ALREADY_JOINED, UNKNOWN_TYPE = ErrorCode.ALREADY_JOINED, ErrorCode.UNKNOWN_TYPE
NAME_INVALID = ErrorCode.NAME_INVALID
WELCOME_FIELDS = {
    "type": "welcome",
    "name": "alice",
    "host": "127.0.0.1",
    "clients": 1,
    "max_frame": DEFAULT_MAX_FRAME,
    "server": "chatwire-reference/1",
    "proto": 1,
    "codec": "msgpack",
}
SEMANTIC: list[tuple[str, ErrorCode, str, Any, str]] = [
    ("await_hello", BAD_MESSAGE, "payload-list", ["hello", "alice"], "The payload is an array, not a map."),
    ("await_hello", BAD_MESSAGE, "payload-int", 42, "The payload is an integer, not a map."),
    ("await_hello", BAD_MESSAGE, "payload-string", "hello", "The payload is a string, not a map."),
    ("await_hello", BAD_MESSAGE, "map-without-type", {"name": "alice"}, 'A map with no "type".'),
    ("await_hello", BAD_MESSAGE, "type-not-string", {"type": 1, "name": "alice"}, '"type" is an integer.'),
    ("await_hello", BAD_MESSAGE, "type-nil", {"type": None, "name": "alice"}, '"type" is nil.'),
    ("await_hello", BAD_MESSAGE, "hello-without-name", {"type": "hello"}, "hello lacks its name field."),
    (
        "await_hello",
        BAD_MESSAGE,
        "hello-int-name",
        {"type": "hello", "name": 42},
        "hello.name is an integer.",
    ),
    ("await_hello", BAD_MESSAGE, "hello-nil-name", {"type": "hello", "name": None}, "hello.name is nil."),
    (
        "await_hello",
        BAD_MESSAGE,
        "hello-nil-token",
        {"type": "hello", "name": "alice", "token": None},
        "hello.token is nil: an optional field, when present, has its type (§5.1 rule 5).",
    ),
    (
        "await_hello",
        BAD_MESSAGE,
        "hello-int-token",
        {"type": "hello", "name": "alice", "token": 1234},
        "hello.token is an integer.",
    ),
    (
        "await_hello",
        BAD_MESSAGE,
        "hello-bytes-name",
        {"type": "hello", "name": b"alice"},
        "hello.name is an octet string (msgpack bin; pickle protocol 3 BINBYTES).",
    ),
    (
        "active",
        BAD_MESSAGE,
        "say-bytes-text",
        {"type": "say", "text": b"hi"},
        "say.text is an octet string, not a string.",
    ),
    ("active", BAD_MESSAGE, "say-without-text", {"type": "say"}, "say lacks its text field."),
    ("active", BAD_MESSAGE, "say-nil-text", {"type": "say", "text": None}, "say.text is nil."),
    ("active", BAD_MESSAGE, "ping-int-token", {"type": "ping", "token": 7}, "ping.token is an integer."),
    ("active", BAD_MESSAGE, "ping-bool-token", {"type": "ping", "token": True}, "ping.token is a boolean."),
    ("active", BAD_MESSAGE, "payload-list", ["say", "hi"], "The payload is an array, not a map."),
    ("await_hello", HELLO_REQUIRED, "say-first", {"type": "say", "text": "hi"}, "say before hello."),
    ("await_hello", HELLO_REQUIRED, "who-first", {"type": "who"}, "who before hello."),
    ("await_hello", HELLO_REQUIRED, "ping-first", {"type": "ping", "token": "t"}, "ping before hello."),
    ("await_hello", HELLO_REQUIRED, "unknown-type-first", {"type": "nonsense"}, "An unknown type first."),
    ("await_hello", HELLO_REQUIRED, "welcome-first", WELCOME_FIELDS, "A server type first."),
    (
        "await_hello",
        HELLO_REQUIRED,
        "say-with-bad-field-first",
        {"type": "say", "text": 5},
        "The type is judged against the state before the fields (§7.3).",
    ),
    (
        "await_hello",
        HELLO_REQUIRED,
        "uppercase-hello",
        {"type": "HELLO", "name": "alice"},
        "Types compare case-sensitively: HELLO is not hello.",
    ),
    ("active", ALREADY_JOINED, "hello-again", HELLO_ALICE, "hello with the name already held."),
    (
        "active",
        ALREADY_JOINED,
        "hello-other-name",
        {"type": "hello", "name": "bob"},
        "hello under a free name.",
    ),
    (
        "active",
        ALREADY_JOINED,
        "hello-int-name",
        {"type": "hello", "name": 42},
        "hello in ACTIVE is already_joined before its fields are checked (§7.3).",
    ),
    ("active", UNKNOWN_TYPE, "nonsense", {"type": "nonsense"}, "A type no one sends."),
    ("active", UNKNOWN_TYPE, "empty-type", {"type": ""}, "The empty string as type."),
    ("active", UNKNOWN_TYPE, "server-type-welcome", WELCOME_FIELDS, "A server-to-client type."),
    ("active", UNKNOWN_TYPE, "server-type-pong", {"type": "pong", "token": "t"}, "A server-to-client type."),
    ("active", UNKNOWN_TYPE, "uppercase-say", {"type": "SAY", "text": "hi"}, "SAY is not say."),
    ("await_hello", NAME_INVALID, "empty", {"type": "hello", "name": ""}, "An empty name."),
    ("await_hello", NAME_INVALID, "33-code-points", {"type": "hello", "name": "a" * 33}, "33 code points."),
    ("await_hello", NAME_INVALID, "space", {"type": "hello", "name": "al ice"}, "U+0020 SPACE (Zs)."),
    ("await_hello", NAME_INVALID, "no-break-space", {"type": "hello", "name": "al\u00a0ice"}, "U+00A0 (Zs)."),
    (
        "await_hello",
        NAME_INVALID,
        "tab",
        {"type": "hello", "name": "al\tice"},
        "U+0009 TAB (Cc, whitespace).",
    ),
    ("await_hello", NAME_INVALID, "at-sign", {"type": "hello", "name": "al@ice"}, "U+0040 @."),
    ("await_hello", NAME_INVALID, "control-char", {"type": "hello", "name": "al\x07ice"}, "U+0007 BEL (Cc)."),
    (
        "await_hello",
        NAME_INVALID,
        "zero-width-joiner",
        {"type": "hello", "name": "al\u200dice"},
        "U+200D ZERO WIDTH JOINER (Cf).",
    ),
    (
        "await_hello",
        NAME_INVALID,
        "bidi-override",
        {"type": "hello", "name": "al\u202eice"},
        "U+202E RIGHT-TO-LEFT OVERRIDE (Cf).",
    ),
    ("await_hello", NAME_INVALID, "private-use", {"type": "hello", "name": "al\ue000"}, "U+E000 (Co)."),
    ("await_hello", NAME_INVALID, "noncharacter", {"type": "hello", "name": "al\uffff"}, "U+FFFF (Cn)."),
    (
        "await_hello",
        NAME_INVALID,
        "line-separator",
        {"type": "hello", "name": "al\u2028ice"},
        "U+2028 LINE SEPARATOR (Zl).",
    ),
    *(
        ("await_hello", NAME_INVALID, slug, {"type": "hello", "name": name}, description)
        for slug, name, description, outcome in NAME_CASES
        if outcome == "refused-in-invalid"
    ),
]


def invalid_vectors() -> list[Vector]:
    hello_msgpack = _mp(HELLO_ALICE)
    hello_pickle = pickle.dumps(HELLO_ALICE, protocol=2)
    too_large = ErrorCode.FRAME_TOO_LARGE
    bad_payload = ErrorCode.BAD_PAYLOAD
    msgpack, pickled = CodecName.MSGPACK, CodecName.PICKLE
    cases: list[Case] = []

    for codec in CODECS:
        for state in ("await_hello", "active"):
            cases.append(
                Case(
                    codec,
                    state,
                    too_large,
                    "default-max-frame-plus-one",
                    _header(DEFAULT_MAX_FRAME + 1),
                    f"A header announcing {DEFAULT_MAX_FRAME + 1} octets (the default max_frame + 1) "
                    "and no payload: the error is due at once.",
                )
            )
            cases.append(
                Case(codec, state, bad_payload, "empty-payload", _header(0), "A zero-length frame (§3.3).")
            )
        cases.append(
            Case(
                codec,
                "await_hello",
                too_large,
                "length-ffffffff",
                _header(MAX_WIRE_LENGTH),
                "A header announcing 0xffffffff octets.",
            )
        )
        encode = _encoder(codec)
        for state, error, slug, value, description in SEMANTIC:
            cases.append(Case(codec, state, error, slug, encode_frame(encode(value)), description))

    msgpack_bad: list[tuple[str, bytes, str]] = [
        ("never-used-c1", b"\xc1", "The octet c1, never used by msgpack."),
        ("truncated", hello_msgpack[:-1], "hello{name: alice} without its last octet."),
        ("trailing-octets", hello_msgpack + b"\xc0", "hello{name: alice} followed by nil: two objects."),
        ("ext-type", HELLO_NAME_KEY + b"\xd4\x01\x00", "hello.name is fixext 1 of type 1."),
        ("timestamp", HELLO_NAME_KEY + b"\xd6\xff\x00\x00\x00\x00", "hello.name is a timestamp 32 (ext -1)."),
        ("invalid-utf8", HELLO_NAME_KEY + b"\xa2\xc3\x28", "hello.name is fixstr c3 28: not UTF-8."),
        ("overlong-utf8", HELLO_NAME_KEY + b"\xa2\xc0\xaf", "hello.name is an overlong encoding of '/'."),
        ("utf8-surrogate", HELLO_NAME_KEY + b"\xa3\xed\xa0\x80", "hello.name is U+D800 encoded in UTF-8."),
        (
            "int-map-key",
            b"\x82" + _mp("type") + _mp("hello") + b"\x01" + _mp("alice"),
            "A map with the integer key 1.",
        ),
        ("nested-int-map-key", HELLO_NAME_KEY + b"\x81\x01\xa1x", "hello.name is a map with an integer key."),
        ("pickle-payload", hello_pickle, "hello{name: alice} pickled (protocol 2): the peer uses pickle."),
        (
            "nesting-1025",
            b"\x91" * 1025 + b"\xc0",
            "1025 nested one-element arrays: over 1024 levels (§4.2).",
        ),
        (
            "nesting-1025-in-map",
            HELLO_NAME_KEY + b"\x91" * 1024 + b"\xc0",
            "A map holding 1024 nested arrays: 1025 levels.",
        ),
        ("array32-length-beyond-payload", b"\xdd\xff\xff\xff\xff", "array 32 declaring 0xffffffff items."),
        ("str32-length-beyond-payload", b"\xdb\xff\xff\xff\xff", "str 32 declaring 0xffffffff octets."),
        (
            f"values-{OVER}",
            _mp_empty_arrays(OVER - 1),
            f"array 32 holding {OVER - 1} empty arrays: {OVER} values, one over MAX_PAYLOAD_OBJECTS "
            "(§4.2 rule 9). The smallest shape of the attack: 1 MiB of them would build a million lists.",
        ),
        (
            f"values-{OVER}-in-unknown-field",
            _mp_with_empty_arrays(HELLO_ALICE, OVER),
            f"hello{{name: alice}} with an unknown field x holding empty arrays, {OVER} values in all: "
            "unknown fields are ignored only once decoded (§4.2 rule 9).",
        ),
        (
            "array16-count-beyond-octets",
            b"\xdc\x00\x10\x01\x02\x03",
            "array 16 declaring 16 elements with 3 octets left: each element takes one octet at least "
            "(§4.2 rule 7).",
        ),
    ]
    cases.extend(
        Case(msgpack, "await_hello", bad_payload, slug, encode_frame(payload), description)
        for slug, payload, description in msgpack_bad
    )
    cases += [
        Case(
            msgpack,
            "active",
            bad_payload,
            "trailing-octets",
            encode_frame(_mp({"type": "say", "text": "hi"}) + b"\xc0"),
            "say{text: hi} followed by nil.",
        ),
        Case(
            msgpack,
            "active",
            bad_payload,
            f"values-{OVER}-in-say",
            encode_frame(_mp_with_empty_arrays({"type": "say", "text": "hi"}, OVER)),
            f"say{{text: hi}} with an unknown field x holding empty arrays, {OVER} values in all "
            "(§4.2 rule 9).",
        ),
        Case(
            msgpack,
            "await_hello",
            BAD_MESSAGE,
            f"values-{MAX_PAYLOAD_OBJECTS}",
            encode_frame(_mp_empty_arrays(MAX_PAYLOAD_OBJECTS - 1)),
            f"array 32 holding {MAX_PAYLOAD_OBJECTS - 1} empty arrays: exactly MAX_PAYLOAD_OBJECTS "
            "values decode (§4.2 rule 9); the payload is then an array, not a map.",
        ),
        Case(
            msgpack,
            "await_hello",
            BAD_MESSAGE,
            "nesting-1024",
            encode_frame(b"\x91" * 1024 + b"\xc0"),
            "1024 nested arrays decode (§4.2): the payload is then an array, not a map.",
        ),
        Case(
            msgpack,
            "await_hello",
            BAD_MESSAGE,
            "bin-type-key",
            encode_frame(b"\x82\xc4\x04type" + _mp("hello") + _mp("name") + _mp("alice")),
            'The key "type" as bin, not str: it names no field (§5.1), so the map has no type.',
        ),
        Case(
            msgpack,
            "active",
            BAD_MESSAGE,
            "bin-type-key-beside-str-type-key",
            encode_frame(
                b"\x83" + _mp("type") + _mp(7) + b"\xc4\x04type" + _mp("say") + _mp("text") + _mp("hi")
            ),
            'The str key "type" holds 7; the bin key "type" is another key (§4.2) and does not stand in.',
        ),
    ]

    pickle_bad = [
        *PICKLE_GADGETS,
        *PICKLE_FINDINGS,
        ("truncated", hello_pickle[:-1], "hello{name: alice} pickled, without its STOP opcode."),
        ("truncated-mid-string", hello_pickle[:20], "hello{name: alice} pickled, cut inside a string."),
        (
            "trailing-octets",
            hello_pickle + b"N",
            "hello{name: alice} pickled, then a NONE opcode after STOP.",
        ),
        ("msgpack-payload", hello_msgpack, "hello{name: alice} in msgpack: the peer uses msgpack."),
        (
            f"opcodes-{OVER}",
            _pickle_empty_lists(OVER - 5),
            f"PROTO 2, EMPTY_LIST, MARK, {OVER - 5} EMPTY_LIST, APPENDS, STOP: {OVER} opcodes, one over "
            "MAX_PAYLOAD_OBJECTS (§4.3 rule 8). 1 MiB of them would build a million lists.",
        ),
    ]
    cases.extend(
        Case(pickled, "await_hello", bad_payload, slug, encode_frame(payload), description)
        for slug, payload, description in pickle_bad
    )
    cases += [
        Case(
            pickled,
            "await_hello",
            NAME_INVALID,
            "lone-surrogate",
            encode_frame(pickle.dumps({"type": "hello", "name": "al\ud800"}, protocol=2)),
            "U+D800 (Cs): a pickle can carry a lone surrogate, msgpack cannot.",
        ),
        Case(
            pickled,
            "await_hello",
            BAD_MESSAGE,
            f"opcodes-{MAX_PAYLOAD_OBJECTS}",
            encode_frame(_pickle_empty_lists(MAX_PAYLOAD_OBJECTS - 5)),
            f"A list of {MAX_PAYLOAD_OBJECTS - 5} empty lists in exactly MAX_PAYLOAD_OBJECTS opcodes is "
            "decoded (§4.3 rule 8); the payload is then an array, not a map.",
        ),
        Case(
            pickled,
            "active",
            bad_payload,
            f"opcodes-{OVER}",
            encode_frame(_pickle_empty_lists(OVER - 5)),
            f"The {OVER}-opcode list of empty lists from a member (§4.3 rule 8).",
        ),
        Case(
            pickled,
            "active",
            bad_payload,
            "gadget-os-system-global-reduce",
            encode_frame(PICKLE_GADGETS[0][1]),
            "The os.system gadget from a member.",
        ),
    ]
    return [case.vector() for case in cases]


FILES: dict[str, tuple[str, Callable[[], list[Vector]]]] = {
    "frames.json": (
        "Framing only, codec independent (§3). Feed 'stream' to a receiver enforcing 'max_frame': it "
        "yields exactly 'payloads' (hex), in order, then stops with 'error' if not null. When 'eof' is "
        "true the stream ends there and 'clean' says whether it ended at a frame boundary (§3.4); "
        "'clean' is null when 'eof' is false.",
        frame_vectors,
    ),
    "messages.json": (
        "Valid messages (§5) in both codecs. 'hex' is the whole frame, header included; 'message' is "
        "the wire map, keys in encoding order. Encoders SHOULD produce 'hex' from 'message' (for pickle "
        "up to memo opcodes, §15.2); decoders MUST accept 'hex' and produce 'message'.",
        message_vectors,
    ),
    "names.json": (
        "Names (§6). A server whose only member, if 'member' is not null, joined under 'member', "
        "receives hello{name: 'name'} and MUST answer error{code: 'error'} (name_invalid, "
        "name_taken; non-fatal), or welcome when 'error' is null. For a valid name, 'key' and "
        "'skeleton' are its two comparison keys (§6.2).",
        name_vectors,
    ),
    "invalid.json": (
        "Inputs a server rejects (§7.3, §9.1). A server using 'codec' with the default max_frame, with "
        "the connection in 'state' (for 'active' it has joined as alice with hello{name: alice} and is "
        "the only member), receives 'hex' and MUST send error{code: 'error', fatal: 'fatal'}, then "
        "close if fatal.",
        invalid_vectors,
    ),
}


def render(name: str) -> str:
    """The exact text of one vector file."""
    description, build = FILES[name]
    return json.dumps(_document(description, build()), indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="directory to write (default %(default)s)"
    )
    args = parser.parse_args()
    outs = [args.out, PACKAGED_COPY] if args.out == DEFAULT_OUT else [args.out]
    for out in outs:
        out.mkdir(parents=True, exist_ok=True)
        for name in FILES:
            (out / name).write_text(render(name), encoding="utf-8", newline="\n")
            print(f"wrote {out / name}")


if __name__ == "__main__":
    main()
