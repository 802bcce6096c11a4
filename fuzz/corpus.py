"""The seed corpus: every input of the test vectors (spec/vectors/), and the payloads inside them.

Each vector's octets seed every target: a whole stream suits the frame decoder, the
connection and the server core, and the payloads of its frames suit the codecs. Fuzz
findings become vectors, so the corpus grows with them.
"""

from __future__ import annotations

import hashlib
import json
from importlib.resources.abc import Traversable
from pathlib import Path

from conformance.spec_vectors import vectors_directory
from protocol import FrameDecoder, RemoteProtocolError

VECTORS: Traversable = vectors_directory()


def _payloads(stream: bytes) -> list[bytes]:
    decoder = FrameDecoder(len(stream))
    decoder.feed(stream)
    payloads = []
    try:
        while (payload := decoder.next_frame()) is not None:
            payloads.append(payload)
    except RemoteProtocolError:
        pass
    return payloads


def vector_inputs(directory: Traversable = VECTORS) -> dict[str, bytes]:
    """Every octet string the vectors hold, by ``file:id``."""
    inputs: dict[str, bytes] = {}
    files = sorted((f for f in directory.iterdir() if f.name.endswith(".json")), key=lambda f: f.name)
    for path in files:
        stem = path.name.removesuffix(".json")
        for vector in json.loads(path.read_text(encoding="utf-8"))["vectors"]:
            for key in ("stream", "hex"):
                if key in vector:
                    inputs[f"{stem}:{vector['id']}"] = bytes.fromhex(vector[key])
    return inputs


def seed_corpus(directory: Traversable = VECTORS) -> list[bytes]:
    """The vectors' inputs and their frames' payloads, each once, in a stable order."""
    seeds: dict[bytes, None] = {}
    for stream in vector_inputs(directory).values():
        seeds[stream] = None
        for payload in _payloads(stream):
            seeds[payload] = None
    return sorted(seeds, key=lambda seed: (len(seed), seed))


def write_corpus(seeds: list[bytes], directory: Path) -> None:
    """Write ``seeds`` as one file each, named by content, as libFuzzer reads a corpus."""
    directory.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        (directory / hashlib.sha1(seed, usedforsecurity=False).hexdigest()).write_bytes(seed)
