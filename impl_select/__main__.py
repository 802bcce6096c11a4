"""``python -m impl_select``: the single-threaded selectors server."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from protocol.serving import serve_main

from .server import run


def main(argv: Sequence[str] | None = None) -> int:
    return serve_main(
        "impl_select", "Chat server (protocol v1): one thread, non-blocking sockets, selectors.", run, argv
    )


if __name__ == "__main__":
    sys.exit(main())
