"""Codec micro-benchmarks: nanoseconds per frame to encode and to decode.

Three layers are timed on the same ``message`` frame (a relayed 64-byte text), over a
stream of frames, as a server and a client see them:

- ``bare``: ``struct`` for the header and ``msgpack.packb``/``unpackb`` (or ``pickle``)
  without any check: the floor;
- ``codec``: :func:`protocol.encode_frame` over ``Codec.encode``, and
  :class:`protocol.FrameDecoder` then ``Codec.decode`` with every check of §3 and §4;
- ``message``: typed messages, :func:`protocol.encode_message` and ``from_wire``, which
  adds building and validating the message objects (§5).
"""

from __future__ import annotations

import gc
import pickle
import statistics
import struct
import time
from collections.abc import Callable
from typing import Any

import msgpack

from protocol import (
    SERVER_MESSAGES,
    FrameDecoder,
    Relayed,
    encode_frame,
    encode_message,
    get_codec,
)
from protocol.messages import from_wire

_HEADER = struct.Struct(">I")

#: Frames per timed batch; a batch is one stream, as one socket read would deliver it.
BATCH = 1000


def _time_per_item(work: Callable[[], Any], items: int, repeats: int, budget: float) -> float:
    """Median nanoseconds per item over ``repeats`` timings of ``work`` (which does ``items``)."""
    work()  # warm caches and the specialising interpreter
    samples = []
    deadline = time.perf_counter() + budget
    gc.disable()
    try:
        for _ in range(repeats):
            start = time.perf_counter_ns()
            work()
            samples.append((time.perf_counter_ns() - start) / items)
            if time.perf_counter() > deadline:
                break
    finally:
        gc.enable()
    return statistics.median(samples)


def _bare(
    dumps: Callable[[Any], bytes], loads: Callable[[Any], Any], wire: dict[str, Any]
) -> tuple[Callable[[], Any], Callable[[], Any]]:
    pack = _HEADER.pack
    unpack_from = _HEADER.unpack_from
    messages = [dict(wire) for _ in range(BATCH)]

    def encode() -> None:
        for message in messages:
            payload = dumps(message)
            pack(len(payload)) + payload

    stream = b"".join(pack(len(p)) + p for p in (dumps(m) for m in messages))

    def decode() -> None:
        position = 0
        end = len(stream)
        while position < end:
            (length,) = unpack_from(stream, position)
            start = position + 4
            position = start + length
            loads(stream[start:position])

    return encode, decode


def _codec(name: str, wire: dict[str, Any]) -> tuple[Callable[[], Any], Callable[[], Any]]:
    codec = get_codec(name)
    messages = [dict(wire) for _ in range(BATCH)]
    stream = b"".join(encode_frame(codec.encode(m)) for m in messages)

    def encode() -> None:
        for message in messages:
            encode_frame(codec.encode(message))

    def decode() -> None:
        decoder = FrameDecoder()
        decoder.feed(stream)
        decode_payload = codec.decode
        for payload in decoder.frames():
            decode_payload(payload)

    return encode, decode


def _message(name: str, message: Relayed) -> tuple[Callable[[], Any], Callable[[], Any]]:
    codec = get_codec(name)
    messages = [Relayed(message.name, message.host, message.text) for _ in range(BATCH)]
    stream = b"".join(encode_message(codec, m) for m in messages)

    def encode() -> None:
        for item in messages:
            encode_message(codec, item)

    def decode() -> None:
        decoder = FrameDecoder()
        decoder.feed(stream)
        decode_payload = codec.decode
        for payload in decoder.frames():
            from_wire(decode_payload(payload), SERVER_MESSAGES)

    return encode, decode


def run(*, repeats: int = 15, budget: float = 3.0) -> list[dict[str, Any]]:
    """Time every layer and codec; one row each, in ns per frame."""
    message = Relayed("alice", "127.0.0.1", "x" * 64)
    wire = message.to_wire()
    layers = {
        ("bare", "msgpack"): _bare(msgpack.Packer().pack, msgpack.unpackb, wire),
        ("bare", "pickle"): _bare(lambda m: pickle.dumps(m, protocol=2), pickle.loads, wire),
        ("codec", "msgpack"): _codec("msgpack", wire),
        ("codec", "pickle"): _codec("pickle", wire),
        ("message", "msgpack"): _message("msgpack", message),
        ("message", "pickle"): _message("pickle", message),
    }
    rows: list[dict[str, Any]] = []
    for (layer, codec), (encode, decode) in layers.items():
        encode_ns = _time_per_item(encode, BATCH, repeats, budget)
        decode_ns = _time_per_item(decode, BATCH, repeats, budget)
        rows.append(
            {
                "layer": layer,
                "codec": codec,
                "encode_ns": encode_ns,
                "decode_ns": decode_ns,
                "total_ns": encode_ns + decode_ns,
                "frame_bytes": len(encode_message(get_codec(codec), message)),
            }
        )
    floor = next(r["total_ns"] for r in rows if r["layer"] == "bare" and r["codec"] == "msgpack")
    for row in rows:
        row["vs_bare_msgpack"] = row["total_ns"] / floor
    return rows
