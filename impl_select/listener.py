"""The listening socket, for both servers: opening it, watching it while the core accepts,
and accepting from it in batches.

Socket work, so not in the sans-I/O :mod:`protocol`; :mod:`impl_asyncio` uses it too, so the
accept rules exist once. What an accept error means for the server is the core's decision
(:meth:`protocol.server.ServerCore.accept_failed`).
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable

from protocol.constants import ACCEPT_BATCH, LISTEN_BACKLOG
from protocol.server import ServerCore


def listen(host: str, port: int) -> socket.socket:
    """A non-blocking listening socket on ``host``:``port`` (0 picks a free port).

    ``SO_REUSEADDR`` (set by :func:`socket.create_server` on POSIX) lets a restarted server
    bind while old connections sit in TIME_WAIT (§12). A port out of range is ``OverflowError``.
    """
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
    # An IPv6 wildcard serves IPv4 clients too (as IPv4-mapped addresses, §8.3).
    dualstack = family == socket.AF_INET6 and socket.has_dualstack_ipv6()
    listener = socket.create_server(
        (host, port), family=family, backlog=LISTEN_BACKLOG, dualstack_ipv6=dualstack
    )
    listener.setblocking(False)
    return listener


class Listener:
    """The listening socket, watched by the server's loop while the core accepts: not while an
    accept error pauses it, and closed for good once the core stops (§12 step 1).

    ``watch`` and ``unwatch`` register the socket with the loop (selector, event loop).
    """

    def __init__(
        self,
        host: str,
        port: int,
        watch: Callable[[socket.socket], object],
        unwatch: Callable[[socket.socket], object],
    ) -> None:
        self.sock: socket.socket | None = listen(host, port)
        self._watch = watch
        self._unwatch = unwatch
        self._watched = False

    @property
    def address(self) -> tuple[str, int]:
        assert self.sock is not None
        host, port = self.sock.getsockname()[:2]
        return host, port

    def sync(self, core: ServerCore) -> None:
        """Watch the socket exactly while ``core`` accepts."""
        if self.sock is None:
            return
        if core.stopping:
            self.close()
        elif core.accepting != self._watched:
            if self._watched:
                self._unwatch(self.sock)
            else:
                self._watch(self.sock)
            self._watched = not self._watched

    def accept(self, core: ServerCore, now: float) -> list[tuple[socket.socket, str]]:
        """:func:`accept_batch` while open; nothing once closed."""
        if self.sock is None:
            return []
        accepted = accept_batch(self.sock, core, now)
        self.sync(core)
        return accepted

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            if self._watched:
                self._unwatch(sock)
                self._watched = False
            sock.close()


def accept_batch(listener: socket.socket, core: ServerCore, now: float) -> list[tuple[socket.socket, str]]:
    """Accept what the listener holds, up to ``ACCEPT_BATCH``, so an accept storm cannot starve
    the connections there are; returns each socket and its peer's address.

    A lack of resources (EMFILE, ENFILE, ENOBUFS...) is reported to the core, which pauses
    accepting; the connections there are go on being served.
    """
    accepted: list[tuple[socket.socket, str]] = []
    for _ in range(ACCEPT_BATCH):
        try:
            sock, address = listener.accept()
        except (BlockingIOError, InterruptedError):
            break
        except ConnectionAbortedError:
            continue
        except OSError as exc:
            core.accept_failed(exc, now)
            break
        accepted.append((sock, str(address[0])))
    return accepted


def set_no_delay(sock: socket.socket) -> None:
    """Frames are written whole, so Nagle's algorithm would only delay them."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def connect_nonblocking(host: str, port: int) -> socket.socket:
    """A non-blocking TCP socket whose connection to ``host``:``port`` is under way: it becomes
    writable when done, and ``SO_ERROR`` then says how it went (a clustered room's Redis)."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setblocking(False)
        set_no_delay(sock)
        code = sock.connect_ex(address)
        if code not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
            raise OSError(code, os.strerror(code))
    except OSError:
        sock.close()
        raise
    return sock
