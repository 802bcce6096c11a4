"""``python -m impl_asyncio``: the asyncio server (uvloop when installed)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from protocol import ServerCore
from protocol.options import configure_logging, parse_server_options
from protocol.serving import raise_open_file_limit, server_name

from .server import run


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_server_options(
        "python -m impl_asyncio",
        "Chat server (protocol v1): asyncio protocols and transports, uvloop when installed.",
        argv,
    )
    configure_logging(options)
    raise_open_file_limit()
    core = ServerCore(
        options.make_codec(), server_name=server_name("impl_asyncio"), max_frame=options.max_frame
    )
    return run(options, core)


if __name__ == "__main__":
    sys.exit(main())
