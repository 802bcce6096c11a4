"""Hypothesis strategies for fuzz inputs: raw octets, framed values in both codecs, mutated seeds.

The hypothesis engine of ``python -m fuzz`` and the CI smoke (tests/test_fuzz.py) draw
from these, so that the targets get structured inputs even where atheris is unavailable.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from typing import Any

import msgpack
from hypothesis import strategies as st

from protocol import CLIENT_MESSAGES, SERVER_MESSAGES, encode_frame

FIELDS = ["name", "text", "token", "members", "truncated", "clients", "host", "code", "fatal", "max_frame"]
TYPES = [*CLIENT_MESSAGES, *SERVER_MESSAGES, "nonsense", "", "HELLO"]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(1 << 63), (1 << 64) - 1)
    | st.floats()
    | st.text(max_size=40)
    | st.text(min_size=200, max_size=1100)
    | st.binary(max_size=12)
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=6) | st.binary(max_size=3), children, max_size=4)
    ),
    max_leaves=12,
)
message_like = st.fixed_dictionaries(
    {"type": st.sampled_from(TYPES) | values},
    optional={field: st.text(max_size=40) | values for field in FIELDS},
)


def _pickled(value: Any, protocol: int) -> bytes:
    return pickle.dumps(value, protocol=protocol)


def _packed(value: Any) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


payloads = (
    (values | message_like).map(_packed)
    | st.builds(_pickled, values | message_like, st.integers(0, pickle.HIGHEST_PROTOCOL))
    # PROTO n, then anything: the opcodes a restricted unpickler must survive.
    | st.builds(lambda proto, body: b"\x80" + bytes([proto]) + body + b".", st.integers(0, 5), st.binary())
)

#: A stream: frames of payloads, raw octets between them, and oversized or truncated headers.
streams = st.lists(
    payloads.map(encode_frame)
    | st.binary(max_size=16)
    | st.integers(0, 0xFFFF_FFFF).map(lambda n: n.to_bytes(4, "big")),
    min_size=1,
    max_size=6,
).map(b"".join)

Edit = tuple[int, int, bytes]


def _mutate(seed: bytes, edits: list[Edit]) -> bytes:
    """Apply each edit: at ``position``, replace ``width`` octets with ``data`` (insert when 0)."""
    data = bytearray(seed)
    for position, width, replacement in edits:
        at = position % (len(data) + 1)
        data[at : at + width] = replacement
    return bytes(data)


def mutated(seeds: Sequence[bytes]) -> st.SearchStrategy[bytes]:
    """A seed with a few octets replaced, inserted or removed."""
    edit = st.tuples(st.integers(0, 1 << 20), st.integers(0, 8), st.binary(max_size=8))
    return st.builds(_mutate, st.sampled_from(list(seeds)), st.lists(edit, min_size=1, max_size=4))


def fuzz_inputs(seeds: Sequence[bytes] = ()) -> st.SearchStrategy[bytes]:
    """Inputs for any target: raw octets, bare payloads, framed streams, and mutated seeds."""
    choices = [st.binary(max_size=256), payloads, streams]
    if seeds:
        choices.append(mutated(seeds))
    return st.one_of(choices)
