"""``python -m impl_select``: the single-threaded selectors server."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from protocol import ServerCore
from protocol.options import configure_logging, parse_server_options
from protocol.serving import raise_open_file_limit, server_name

from .server import run


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_server_options(
        "python -m impl_select",
        "Chat server (protocol v1): one thread, non-blocking sockets, selectors.",
        argv,
    )
    configure_logging(options)
    raise_open_file_limit()
    core = ServerCore(
        options.make_codec(), server_name=server_name("impl_select"), max_frame=options.max_frame
    )
    return run(options, core)


if __name__ == "__main__":
    sys.exit(main())
