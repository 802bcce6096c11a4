"""``python -m chatwire_client --port P --name alice``: the terminal chat client.

On a terminal it is interactive; with stdin from a pipe or file it says each line read and
prints what arrives, for scripts. The exit statuses are :class:`chatwire_client.session.ExitStatus`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path

from protocol import get_codec
from protocol.constants import DEFAULT_CLIENT_TIMEOUT, DEFAULT_CODEC, CodecName
from protocol.options import port_number, seconds

from .link import BadCertificate, CannotConnect, NoAnswer, Server
from .session import ExitStatus

EPILOG = """\
modes:
  on a terminal: interactive; /who, /ping, /quit, /help; Ctrl-D or Ctrl-C leave; a refused
  name is asked for again (with no connection open, so the server cannot time it out)
  otherwise (pipe mode): each line of stdin is said, blank lines excepted; what happens in
  the room (messages, joins, departures) goes to stdout, this client's status (connected,
  shutdown) and errors to stderr; at the end of input the client waits until the server has
  every line, then leaves

exit status:
    0  you left (/quit, Ctrl-D, Ctrl-C, or the end of piped input)
    1  the connection was lost
    2  cannot connect, or a bad command line
    3  the server refused the name (pipe mode; interactive mode asks for another)
    4  the server shut down
    5  the server sent a fatal error or broke the protocol
    6  the server did not answer within --timeout (connect, welcome, the final ping)
    7  --tls: the server's certificate could not be verified (untrusted CA, wrong name, expired)

TLS and tokens (spec §17):
  --tls verifies the server's certificate against the system's trust store, or --tls-ca,
  and checks that it names the host (or --tls-server-name); verification cannot be turned
  off. --token-file reads the token a server with --auth-file asks for (its first line);
  send it over TLS only, since the token crosses the connection as it is.
  130  interrupted before joining
  141  the output was closed (pipe mode)
"""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m chatwire_client",
        description="Chat in a room served by a chat wire protocol v1 server.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="server address (default %(default)s)")
    parser.add_argument("--port", type=port_number, required=True, help="server port, 1..65535")
    parser.add_argument("--name", help="your name in the room (asked for if omitted on a terminal)")
    parser.add_argument(
        "--codec",
        choices=[c.value for c in CodecName],
        default=DEFAULT_CODEC.value,
        help="payload codec; must match the server's (default %(default)s)",
    )
    parser.add_argument(
        "--timeout",
        type=seconds,
        default=DEFAULT_CLIENT_TIMEOUT,
        metavar="SECONDS",
        help="how long to wait for the connection, the welcome and (pipe mode) the answer to the"
        " final ping (default %(default)g)",
    )
    parser.add_argument("--tls", action="store_true", help="connect over TLS 1.2+, the certificate verified")
    parser.add_argument(
        "--tls-ca",
        type=Path,
        metavar="FILE",
        help="trust the CA certificates in this PEM file (default: the system's)",
    )
    parser.add_argument(
        "--tls-server-name",
        metavar="NAME",
        help="the name the server's certificate must hold (default: --host)",
    )
    parser.add_argument(
        "--token-file", type=Path, metavar="FILE", help="present the token on this file's first line in hello"
    )
    args = parser.parse_args(argv)
    if not args.tls and (args.tls_ca or args.tls_server_name):
        parser.error("--tls-ca and --tls-server-name go with --tls")
    args.interactive = sys.stdin.isatty() and sys.stdout.isatty()
    if args.name is None and not args.interactive:
        parser.error("--name is required when stdin or stdout is not a terminal")
    return args


def _read_token(path: Path) -> str:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CannotConnect(f"--token-file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    token = lines[0].strip() if lines else ""
    if not token:
        raise CannotConnect(f"--token-file {path}: the first line holds no token")
    return token


def _server(args: argparse.Namespace) -> Server:
    """Where to connect and how; raises :class:`CannotConnect` for an unusable file."""
    context = None
    if args.tls:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if args.tls_ca is not None:
            try:
                context.load_verify_locations(cafile=args.tls_ca)
            except (OSError, ssl.SSLError) as exc:
                reason = getattr(exc, "strerror", None) or "no PEM certificate in it"
                raise CannotConnect(f"--tls-ca {args.tls_ca}: {reason}") from None
    token = _read_token(args.token_file) if args.token_file is not None else None
    return Server(args.host, args.port, context, args.tls_server_name, token)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    codec = get_codec(args.codec)
    try:
        server = _server(args)
        if args.interactive:
            # Imported here: pipe mode has no need of prompt_toolkit.
            from .interactive import run_interactive  # noqa: PLC0415

            status = asyncio.run(run_interactive(server, args.name, codec, args.timeout))
        else:
            from .pipe import run_pipe  # noqa: PLC0415

            status = asyncio.run(run_pipe(server, args.name, codec, args.timeout))
    except BadCertificate as exc:
        print(exc, file=sys.stderr)
        return ExitStatus.BAD_CERTIFICATE
    except CannotConnect as exc:
        print(exc, file=sys.stderr)
        return ExitStatus.CANNOT_CONNECT
    except NoAnswer as exc:
        print(f"{exc}: is it a chat wire protocol server? (--timeout sets the wait)", file=sys.stderr)
        return ExitStatus.TIMED_OUT
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Whoever read the output has gone (``| head -1``): stop, as a killed-by-SIGPIPE tool
        # would, and keep the interpreter's final flush of stdout from failing too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    return status


if __name__ == "__main__":
    sys.exit(main())
