"""The command line both servers share (``python -m impl_select --help``), and the argparse
value types every command of the project uses for its numeric flags."""

from __future__ import annotations

import argparse
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .cluster import ClusterAddress
from .codecs import Codec, get_codec
from .constants import (
    DEFAULT_CODEC,
    DEFAULT_FRAME_TIMEOUT,
    DEFAULT_HELLO_TIMEOUT,
    DEFAULT_HOLD_MARK,
    DEFAULT_HOLD_PATIENCE,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_FRAME,
    DEFAULT_MAX_OUTPUT_BUFFER,
    DEFAULT_MAX_TOTAL_INPUT,
    DEFAULT_MAX_TOTAL_OUTPUT,
    DEFAULT_OUTPUT_SOFT_LIMIT,
    DEFAULT_READ_BUDGET,
    DEFAULT_ROOM,
    DEFAULT_SLOW_CONSUMER_TIMEOUT,
    MAX_PAYLOAD_OBJECTS,
    MAX_PORT,
    MAX_TIMEOUT,
    MAX_WIRE_LENGTH,
    MIN_MAX_FRAME,
    CodecName,
)
from .logtext import OneLineFormatter


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """A server's settings; the defaults are the spec's (§13)."""

    host: str = "127.0.0.1"
    port: int = 0
    codec: CodecName = DEFAULT_CODEC
    max_frame: int = DEFAULT_MAX_FRAME
    hello_timeout: float = DEFAULT_HELLO_TIMEOUT
    max_output_buffer: int = DEFAULT_MAX_OUTPUT_BUFFER
    output_soft_limit: int = DEFAULT_OUTPUT_SOFT_LIMIT
    slow_consumer_timeout: float = DEFAULT_SLOW_CONSUMER_TIMEOUT
    hold_mark: int = DEFAULT_HOLD_MARK
    hold_patience: float = DEFAULT_HOLD_PATIENCE
    frame_timeout: float = DEFAULT_FRAME_TIMEOUT
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    read_budget: int = DEFAULT_READ_BUDGET
    max_total_output: int = DEFAULT_MAX_TOTAL_OUTPUT
    max_total_input: int = DEFAULT_MAX_TOTAL_INPUT
    log_level: str = "INFO"
    #: TLS (§17.1): the certificate chain and key in PEM, and the CA that client certificates
    #: must chain to (client certificates are required when it is set).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    #: Access control (§17.3): the file of tokens and reserved names.
    auth_file: Path | None = None
    #: ``redis://HOST:PORT/DB`` of a clustered room (§18); ``None``: the room is this process's.
    cluster: str | None = None
    room: str = DEFAULT_ROOM
    #: The event loop of a server that has a choice (``loops`` of :func:`parse_server_options`):
    #: ``auto`` is uvloop when it is installed.
    loop: str = "auto"

    def make_codec(self) -> Codec:
        """The server's codec: it decodes client payloads, so it counts their values (§4.2, §4.3)."""
        return get_codec(self.codec, max_objects=MAX_PAYLOAD_OBJECTS)


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, not {text!r}") from None


def int_within(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse ``type``: an integer from ``low`` to ``high`` (no upper bound if ``None``).

    Out-of-range values are refused, never wrapped: ``--port 99999`` is an error, not 34463.
    """

    def parse(text: str) -> int:
        value = _integer(text)
        if high is None and value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, not {value}")
        if high is not None and not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be within {low}..{high}, not {value}")
        return value

    return parse


def number_within(most: float) -> Callable[[str], float]:
    """An argparse ``type``: a finite number greater than 0 and at most ``most``.

    NaN and the infinities are refused, and so is a wait longer than an event loop can make.
    """

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, not {text!r}") from None
        if not 0 < value <= most:  # also false for NaN
            raise argparse.ArgumentTypeError(f"must be greater than 0 and at most {most:g}, not {text}")
        return value

    return parse


#: A port to connect to.
port_number = int_within(1, MAX_PORT)
#: A port to listen on; 0 lets the system pick a free one.
listen_port = int_within(0, MAX_PORT)
#: A count or a size that must be at least 1.
positive_int = int_within(1)
#: A duration in seconds.
seconds = number_within(MAX_TIMEOUT)


def parse_server_options(
    prog: str, description: str, argv: Sequence[str] | None = None, loops: Sequence[str] = ()
) -> ServerOptions:
    """Parse a server's command line; exits with a usage message on bad arguments. A server
    that can run on more than one event loop names them in ``loops`` (``--loop``)."""
    defaults = ServerOptions()
    parser = argparse.ArgumentParser(prog=prog, description=description)
    if loops:
        parser.add_argument(
            "--loop",
            choices=[defaults.loop, *loops],
            default=defaults.loop,
            help="event loop (default %(default)s: uvloop when installed)",
        )
    parser.add_argument("--host", default=defaults.host, help="address to listen on (default %(default)s)")
    parser.add_argument(
        "--port",
        type=listen_port,
        default=defaults.port,
        help=f"port, 0..{MAX_PORT}; 0 picks a free one (default 0)",
    )
    parser.add_argument(
        "--codec",
        choices=[c.value for c in CodecName],
        default=defaults.codec.value,
        help="payload codec (default %(default)s); pickle only for trusted peers",
    )
    parser.add_argument(
        "--max-frame",
        type=int_within(MIN_MAX_FRAME, MAX_WIRE_LENGTH),
        default=defaults.max_frame,
        help=f"largest payload in bytes, {MIN_MAX_FRAME}..{MAX_WIRE_LENGTH} (default %(default)s)",
    )
    parser.add_argument(
        "--hello-timeout",
        type=seconds,
        default=defaults.hello_timeout,
        help=f"seconds a connection has to join, at most {MAX_TIMEOUT:g} (default %(default)s)",
    )
    parser.add_argument(
        "--max-output-buffer",
        type=positive_int,
        default=defaults.max_output_buffer,
        help="bytes queued for one client before it is cut off, at least 1 (default %(default)s)",
    )
    for flag, kind, text in _BOUNDS:
        parser.add_argument(
            flag,
            type=positive_int if kind is int else seconds,
            default=getattr(defaults, _attribute(flag)),
            help=f"{text} (default %(default)s)",
        )
    parser.add_argument(
        "--log-level",
        default=defaults.log_level,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging level (default %(default)s)",
    )
    parser.add_argument(
        "--cluster",
        type=cluster_url,
        metavar="redis://HOST:PORT/DB",
        help="serve the room together with every server given the same Redis and --room (spec §18)",
    )
    parser.add_argument(
        "--room",
        type=room_name,
        default=defaults.room,
        help="with --cluster: the room's name, 1 to 64 of A-Z a-z 0-9 . _ - (default %(default)s)",
    )
    tls = parser.add_argument_group("transport security and access control (spec §17)")
    tls.add_argument(
        "--tls-cert", type=Path, metavar="FILE", help="serve TLS 1.2+ with this PEM certificate chain"
    )
    tls.add_argument("--tls-key", type=Path, metavar="FILE", help="the PEM private key of --tls-cert")
    tls.add_argument(
        "--tls-client-ca",
        type=Path,
        metavar="FILE",
        help="require client certificates signed by a CA in this PEM file (needs --tls-cert)",
    )
    tls.add_argument(
        "--auth-file",
        type=Path,
        metavar="FILE",
        help="require a token in every hello: one 'TOKEN' or 'NAME TOKEN' (reserves NAME) a line",
    )
    args = parser.parse_args(argv)
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    if args.tls_client_ca is not None and args.tls_cert is None:
        parser.error("--tls-client-ca needs --tls-cert and --tls-key")
    if args.room != defaults.room and args.cluster is None:
        parser.error("--room needs --cluster")
    return ServerOptions(
        host=args.host,
        port=args.port,
        codec=CodecName(args.codec),
        max_frame=args.max_frame,
        hello_timeout=args.hello_timeout,
        max_output_buffer=args.max_output_buffer,
        log_level=args.log_level,
        **{_attribute(flag): getattr(args, _attribute(flag)) for flag, _, _ in _BOUNDS},
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        auth_file=args.auth_file,
        cluster=args.cluster,
        room=args.room,
        loop=getattr(args, "loop", defaults.loop),
    )


#: The bounds of §10.1, §7.5 and §14.2: flag, type, help (the spec's §13 has their defaults).
_BOUNDS: tuple[tuple[str, type, str], ...] = (
    ("--output-soft-limit", int, "buffered bytes over which a client is congested, at least 1"),
    ("--slow-consumer-timeout", float, f"seconds a client may stay congested, at most {MAX_TIMEOUT:g}"),
    ("--hold-mark", int, "buffered bytes over which a member holds the room's says, at least 1"),
    ("--hold-patience", float, f"seconds a member may drain nothing yet hold says, at most {MAX_TIMEOUT:g}"),
    ("--frame-timeout", float, f"seconds a member has to complete a frame, at most {MAX_TIMEOUT:g}"),
    ("--idle-timeout", float, f"seconds a member may send no frame, at most {MAX_TIMEOUT:g}"),
    ("--read-budget", int, "bytes of input handled per client per loop turn, at least 1"),
    ("--max-total-output", int, "bytes queued for all clients together, at least 1"),
    ("--max-total-input", int, "bytes of unfinished input from all clients together, at least 1"),
)


def _attribute(flag: str) -> str:
    return flag.removeprefix("--").replace("-", "_")


def cluster_url(text: str) -> str:
    """An argparse ``type``: a ``redis://HOST:PORT/DB`` address."""
    try:
        return str(ClusterAddress.parse(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_ROOM_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


def room_name(text: str) -> str:
    """An argparse ``type``: a room name, which becomes part of Redis key names."""
    if _ROOM_NAME.fullmatch(text) is None:
        raise argparse.ArgumentTypeError(f"must be 1 to 64 of A-Z a-z 0-9 . _ -, not {text!r}")
    return text


def configure_logging(options: ServerOptions) -> None:
    """Log to stderr, one line per record (§14.3); warn when the operator opted into pickle (§4.3)."""
    handler = logging.StreamHandler()
    handler.setFormatter(OneLineFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=options.log_level, handlers=[handler])
    log = logging.getLogger("protocol.server")
    if options.codec is CodecName.PICKLE:
        log.warning("pickle codec enabled: only serve peers you trust (spec §4.3)")
        if options.tls_cert is None and options.auth_file is None:
            log.warning(
                "pickle codec with neither TLS nor an auth file: anyone who can reach this port can "
                "feed the unpickler, and read and alter every message in transit (spec §14.1, §17)"
            )
