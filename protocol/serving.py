"""Pieces both reference servers need that involve no socket: host text, process limits, main().

Each server owns its sockets and its event loop; what they must agree on, and what would
otherwise be written twice, lives here.
"""

from __future__ import annotations

import ipaddress
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from . import __version__
from .cluster import ClusterAddress, ClusterRules
from .options import ServerOptions, configure_logging, parse_server_options
from .server import ServerCore

log = logging.getLogger("protocol.server")

if sys.platform != "win32":
    import resource

def peer_host(address: str) -> str:
    """The ``host`` the protocol reports for a peer address (§8.3).

    IPv6 in RFC 5952 form without brackets; an IPv4-mapped IPv6 address (a v4 client of a
    dual-stack listener) as the plain dotted-decimal IPv4 address it stands for.
    """
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    return str(parsed)


def listening_line(host: str, port: int) -> str:
    """The one line a server prints on start; the port follows the last colon."""
    # IPv6 in brackets, as in URLs (RFC 3986 §3.2.2): [::1]:5555 (§16.1).
    return f"listening on [{host}]:{port}" if ":" in host else f"listening on {host}:{port}"


def announce(host: str, port: int, core: ServerCore) -> None:
    """Log the start and print the listening line on stdout (the runner's contract)."""
    log.info("serving on %s:%d (codec %s)", host, port, core.codec.name.value)
    print(listening_line(host, port), flush=True)


def server_name(implementation: str) -> str:
    """``welcome.server`` (§5.4.1): the implementation and the project version."""
    return f"{implementation}/{__version__}"


def raise_open_file_limit() -> tuple[int, int]:
    """Raise the soft limit on open descriptors to the hard limit; returns (soft, hard).

    Every client is a descriptor, and a common soft default (1024) is smaller than the
    number of clients a server is expected to hold.
    """
    if sys.platform == "win32":
        return (0, 0)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            # macOS refuses RLIM_INFINITY; the soft limit stays as it was.
            pass
    return soft, hard


def make_core(options: ServerOptions, implementation: str) -> ServerCore:
    """The core a server runs, configured as ``options`` say (a node of a clustered room with
    ``--cluster``, §18)."""
    codec = options.make_codec()
    rules = None
    if options.cluster is not None:
        rules = ClusterRules(
            codec,
            server_name=server_name(implementation),
            address=ClusterAddress.parse(options.cluster),
            room=options.room,
            max_frame=options.max_frame,
        )
        log.info("room %s on %s, as node %s", options.room, options.cluster, rules.node)
    return ServerCore(
        codec,
        server_name=server_name(implementation),
        max_frame=options.max_frame,
        hello_timeout=options.hello_timeout,
        max_output_buffer=options.max_output_buffer,
        rules=rules,
    )


def serve_main(
    implementation: str,
    description: str,
    run: Callable[[ServerOptions, ServerCore], int],
    argv: Sequence[str] | None = None,
) -> int:
    """A server's ``main()``: parse the command line, set up logging and limits, serve."""
    # The console script's name when run as one (chatwire-select), else how -m runs it.
    script = Path(sys.argv[0]).name
    prog = script if script.startswith("chatwire") else f"python -m {implementation}"
    options = parse_server_options(prog, description, argv)
    configure_logging(options)
    raise_open_file_limit()
    return run(options, make_core(options, implementation))
