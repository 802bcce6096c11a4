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
from .server.access import Access, AuthFileError, Tokens

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


#: The exit status of a server whose command line names an unusable file (a certificate, a
#: key, an auth file), as for any other bad command line.
EXIT_BAD_CONFIGURATION = 2


def make_core(options: ServerOptions, implementation: str, access: Access | None = None) -> ServerCore:
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
            say_window=min(options.hold_mark, options.output_soft_limit),  # the core's hold mark
            access=access,
        )
        log.info("room %s on %s, as node %s", options.room, options.cluster, rules.node)
    return ServerCore(
        codec,
        server_name=server_name(implementation),
        max_frame=options.max_frame,
        hello_timeout=options.hello_timeout,
        max_output_buffer=options.max_output_buffer,
        output_soft_limit=options.output_soft_limit,
        slow_consumer_timeout=options.slow_consumer_timeout,
        hold_mark=options.hold_mark,
        hold_patience=options.hold_patience,
        frame_timeout=options.frame_timeout,
        idle_timeout=options.idle_timeout,
        read_budget=options.read_budget,
        max_total_output=options.max_total_output,
        max_total_input=options.max_total_input,
        access=access,
        rules=rules,
    )


def load_access(options: ServerOptions) -> Access | None:
    """The access control the auth file of ``options`` sets up (§17.3), if any; raises
    :class:`AuthFileError` with a one-line reason. (TLS is the servers' own: see impl_select.tls.)"""
    return Access(Tokens.load(options.auth_file)) if options.auth_file is not None else None


def serve_main(
    implementation: str,
    description: str,
    run: Callable[[ServerOptions, ServerCore], int],
    argv: Sequence[str] | None = None,
    loops: Sequence[str] = (),
) -> int:
    """A server's ``main()``: parse the command line, set up logging and limits, serve.
    ``loops``: the event loops it can run on, besides ``auto`` (``--loop``)."""
    # The console script's name when run as one (chatwire-select), else how -m runs it.
    script = Path(sys.argv[0]).name
    prog = script if script.startswith("chatwire") else f"python -m {implementation}"
    options = parse_server_options(prog, description, argv, loops)
    try:
        access = load_access(options)
    except AuthFileError as exc:
        print(f"{prog}: error: --auth-file {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIGURATION
    configure_logging(options)
    if access is not None:
        log.info("access control on: every hello needs a token")
    raise_open_file_limit()
    return run(options, make_core(options, implementation, access))
