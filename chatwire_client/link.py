"""A :class:`~chatwire_client.session.ChatSession` over an asyncio TCP stream.

The link only moves bytes: it reads, feeds the session, shows the lines that come back,
writes what it is given, and closes as spec §9.4 asks of a client (half-close, drain until
the server's end of stream or ``CLOSE_LINGER``, close), so the server sees a clean ``quit``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from protocol.constants import CLIENT_KEEPALIVE, CLOSE_LINGER

from .session import ChatSession, Line

_READ_SIZE = 1 << 16


def endpoint(host: str, port: int) -> str:
    """``host:port``, with an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class Server:
    """Where the server is, and how to reach it: over TLS with ``tls`` (the certificate must
    name ``server_name``, the host by default), presenting ``token`` in hello (spec §17)."""

    host: str
    port: int
    tls: ssl.SSLContext | None = None
    server_name: str | None = None
    token: str | None = None


class CannotConnect(Exception):
    """No TCP connection to the server could be made; the message says why."""


class BadCertificate(CannotConnect):
    """The server's TLS certificate could not be verified (spec §17.1); the message says why."""


class NoAnswer(Exception):
    """The server did not answer in time (connect, welcome, a pong); the message says what."""


class Link:
    """One connection: call :meth:`run` as a task, :meth:`send` freely, :meth:`close` once."""

    def __init__(
        self,
        session: ChatSession,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        show: Callable[[Line], None],
        endpoint: str = "the server",
        *,
        keepalive: float = CLIENT_KEEPALIVE,
    ) -> None:
        """``keepalive``: seconds without sending after which a member sends a ping, so that
        the server's idle timeout (spec §7.5) never closes a quiet client."""
        self.session = session
        self.show = show
        self.endpoint = endpoint
        self.keepalive = keepalive
        self._reader = reader
        self._writer = writer
        self._last_sent = asyncio.get_running_loop().time()
        self._changed = asyncio.Condition()
        self._ended = False  # the server's end of stream (or a socket error) was read

    @classmethod
    async def open(
        cls, server: Server, session: ChatSession, show: Callable[[Line], None], timeout: float
    ) -> Link:
        """Connect (and with TLS, shake hands) within ``timeout`` seconds; raises
        :class:`CannotConnect` (:class:`BadCertificate` when the server's certificate fails
        verification), or :class:`NoAnswer` when the time runs out (a filtered port, an
        unreachable host, a server that never finishes the handshake)."""
        host, port = server.host, server.port
        where = endpoint(host, port)
        tls: dict[str, object] = {}
        if server.tls is not None:
            tls = {
                "ssl": server.tls,
                "server_hostname": server.server_name or host,
                "ssl_handshake_timeout": timeout,
            }
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, **tls), timeout)  # type: ignore[arg-type]
        except TimeoutError:
            raise NoAnswer(f"cannot connect to {where}: no answer within {timeout:g} s") from None
        except ssl.SSLCertVerificationError as exc:
            raise BadCertificate(
                f"cannot connect to {where}: the server's certificate is not trusted: {exc.verify_message}"
                " (--tls-ca names the CA to trust, --tls-server-name the name it must hold)"
            ) from None
        except ssl.SSLError as exc:
            reason = str(exc.reason or exc).lower().replace("_", " ")
            raise CannotConnect(
                f"cannot connect to {where}: TLS handshake failed ({reason}); does the server serve TLS?"
            ) from None
        except OSError as exc:
            # asyncio words a refused connection "Connect call failed ('127.0.0.1', 1)"; the errno says why.
            # (getaddrinfo errors have negative numbers and their own strerror.)
            reason = os.strerror(exc.errno) if exc.errno and exc.errno > 0 else exc.strerror or str(exc)
            raise CannotConnect(f"cannot connect to {where}: {reason}") from None
        sock = writer.get_extra_info("socket")
        if sock is not None:
            # Chat lines are small and latency is what people notice (and what /ping shows).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(session, reader, writer, show, where)

    async def run(self) -> None:
        """Read until the server's end of stream, showing what the session makes of it, and
        keep the connection alive meanwhile."""
        keeping = asyncio.create_task(self._keep_alive())
        try:
            while not self._ended:
                try:
                    data = await self._reader.read(_READ_SIZE)
                except OSError as exc:
                    self._show(self.session.lost(exc.strerror or str(exc)))
                    data = b""
                else:
                    self._show(self.session.receive(data))
                self._ended = not data
                async with self._changed:
                    self._changed.notify_all()
        finally:
            keeping.cancel()
            self._ended = True
            async with self._changed:
                self._changed.notify_all()

    async def _keep_alive(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._ended:
            silence = loop.time() - self._last_sent
            if silence >= self.keepalive and self.session.joined:
                await self.send(self.session.keepalive())
                silence = 0.0
            await asyncio.sleep(max(self.keepalive - silence, 0.01))

    async def until(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()`` holds or the server's stream has ended."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._ended or predicate())

    async def expect(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        """:meth:`until`, within ``timeout`` seconds; raises :class:`NoAnswer` naming ``what``
        was awaited when the time runs out."""
        try:
            async with asyncio.timeout(timeout):
                await self.until(predicate)
        except TimeoutError:
            raise NoAnswer(f"no {what} from {self.endpoint} within {timeout:g} s") from None

    async def send(self, data: bytes) -> None:
        if not data or self._writer.is_closing():
            return
        self._last_sent = asyncio.get_running_loop().time()
        try:
            self._writer.write(data)
            await self._writer.drain()
        except OSError as exc:
            self._show(self.session.lost(exc.strerror or str(exc)))

    async def close(self) -> None:
        """Half-close, wait (bounded) for the server's end of stream, then close (§9.4)."""
        try:
            if not self._writer.is_closing() and self._writer.can_write_eof():
                self._writer.write_eof()
                async with asyncio.timeout(CLOSE_LINGER):
                    await self.until(lambda: False)
            # An asyncio TLS stream cannot half-close: closing it sends close_notify, which the
            # server reads as the end of stream (§17.2), and it answers in kind.
        except (OSError, TimeoutError):
            pass
        finally:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()

    def _show(self, lines: list[Line]) -> None:
        for line in lines:
            self.show(line)
