"""The specification's test vectors (spec/PROTOCOL.md §15), as shipped with this package.

``spec/vectors/`` in the repository is the source; the package carries a byte-for-byte copy
(``conformance/vectors/``), read through :mod:`importlib.resources` so that an installed
suite finds it wherever it was installed.
"""

from __future__ import annotations

import json
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

#: The vector files, in the order the spec lists them.
VECTOR_FILES = ("frames.json", "messages.json", "invalid.json", "names.json")


def vectors_directory() -> Traversable:
    """The packaged copy of ``spec/vectors/``."""
    return resources.files("conformance") / "vectors"


def load_vectors(name: str) -> list[dict[str, Any]]:
    """The vectors of one file (``frames.json``, ``messages.json``, ``invalid.json``, ``names.json``)."""
    document = json.loads((vectors_directory() / name).read_text(encoding="utf-8"))
    vectors: list[dict[str, Any]] = document["vectors"]
    return vectors
