"""``python -m impl_asyncio``: the asyncio server (uvloop when installed)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from protocol.serving import serve_main

from .server import LOOPS, run


def main(argv: Sequence[str] | None = None) -> int:
    return serve_main(
        "impl_asyncio",
        "Chat server (protocol v1): asyncio protocols and transports, uvloop when installed.",
        run,
        argv,
        LOOPS,
    )


if __name__ == "__main__":
    sys.exit(main())
