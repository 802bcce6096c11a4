"""The command line both servers share (``python -m impl_select --help``), and the argparse
value types every command of the project uses for its numeric flags."""

from __future__ import annotations

import argparse
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .cluster import ClusterAddress
from .codecs import Codec, get_codec
from .constants import (
    DEFAULT_CODEC,
    DEFAULT_HELLO_TIMEOUT,
    DEFAULT_MAX_FRAME,
    DEFAULT_MAX_OUTPUT_BUFFER,
    DEFAULT_ROOM,
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
    log_level: str = "INFO"
    #: ``redis://HOST:PORT/DB`` of a clustered room (§18); ``None``: the room is this process's.
    cluster: str | None = None
    room: str = DEFAULT_ROOM

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


def parse_server_options(prog: str, description: str, argv: Sequence[str] | None = None) -> ServerOptions:
    """Parse a server's command line; exits with a usage message on bad arguments."""
    defaults = ServerOptions()
    parser = argparse.ArgumentParser(prog=prog, description=description)
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
    args = parser.parse_args(argv)
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
        cluster=args.cluster,
        room=args.room,
    )


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
    if options.codec is CodecName.PICKLE:
        logging.getLogger("protocol.server").warning(
            "pickle codec enabled: only serve peers you trust (spec §4.3)"
        )
