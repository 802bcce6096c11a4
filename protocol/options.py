"""The command line both servers share (``python -m impl_select --help``)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from .codecs import Codec, get_codec
from .constants import (
    DEFAULT_CODEC,
    DEFAULT_HELLO_TIMEOUT,
    DEFAULT_MAX_FRAME,
    DEFAULT_MAX_OUTPUT_BUFFER,
    MAX_PAYLOAD_OBJECTS,
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

    def make_codec(self) -> Codec:
        """The server's codec: it decodes client payloads, so it counts their values (§4.2, §4.3)."""
        return get_codec(self.codec, max_objects=MAX_PAYLOAD_OBJECTS)


def _max_frame(text: str) -> int:
    value = int(text)
    if not MIN_MAX_FRAME <= value <= MAX_WIRE_LENGTH:
        raise argparse.ArgumentTypeError(f"must be within {MIN_MAX_FRAME}..{MAX_WIRE_LENGTH}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def parse_server_options(prog: str, description: str, argv: Sequence[str] | None = None) -> ServerOptions:
    """Parse a server's command line; exits with a usage message on bad arguments."""
    defaults = ServerOptions()
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--host", default=defaults.host, help="address to listen on (default %(default)s)")
    parser.add_argument(
        "--port", type=int, default=defaults.port, help="port; 0 picks a free one (default 0)"
    )
    parser.add_argument(
        "--codec",
        choices=[c.value for c in CodecName],
        default=defaults.codec.value,
        help="payload codec (default %(default)s); pickle only for trusted peers",
    )
    parser.add_argument(
        "--max-frame",
        type=_max_frame,
        default=defaults.max_frame,
        help="largest payload in bytes (default %(default)s)",
    )
    parser.add_argument(
        "--hello-timeout",
        type=_positive_float,
        default=defaults.hello_timeout,
        help="seconds a connection has to join (default %(default)s)",
    )
    parser.add_argument(
        "--max-output-buffer",
        type=_positive_int,
        default=defaults.max_output_buffer,
        help="bytes queued for one client before it is cut off (default %(default)s)",
    )
    parser.add_argument(
        "--log-level",
        default=defaults.log_level,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging level (default %(default)s)",
    )
    args = parser.parse_args(argv)
    return ServerOptions(
        host=args.host,
        port=args.port,
        codec=CodecName(args.codec),
        max_frame=args.max_frame,
        hello_timeout=args.hello_timeout,
        max_output_buffer=args.max_output_buffer,
        log_level=args.log_level,
    )


def configure_logging(options: ServerOptions) -> None:
    """Log to stderr, one line per record (§14.3); warn when the operator opted into pickle (§4.3)."""
    handler = logging.StreamHandler()
    handler.setFormatter(OneLineFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=options.log_level, handlers=[handler])
    if options.codec is CodecName.PICKLE:
        logging.getLogger("protocol.server").warning(
            "pickle codec enabled: only serve peers you trust (spec §4.3)"
        )
