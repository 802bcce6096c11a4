"""One connection to Redis, sans I/O: commands in, RESP octets out; octets in, replies out.

The server owns the socket. It asks :attr:`RedisLink.wants_connect` when to open one
(the link's backoff decides), reports :meth:`connected`, :meth:`receive` and :meth:`lost`,
writes :meth:`take_output`, and closes the socket when :attr:`wants_close` says so. Time
comes in as ``now``; :meth:`next_deadline` says when :meth:`expire` is due (reconnecting,
a reply that did not come).

RESP is parsed by ``hiredis.Reader`` and encoded by ``hiredis.pack_command``, both sans-I/O.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from enum import Enum
from typing import Any

import hiredis

from ..constants import CLUSTER_BACKOFF_MAX, CLUSTER_BACKOFF_MIN, CLUSTER_REPLY_TIMEOUT

log = logging.getLogger("protocol.cluster")

#: A reply as hiredis gives it: bytes, int, None, a list of replies, or a ``ReplyError``.
Reply = Any
Callback = Callable[[Reply], None]
Argument = str | int | float | bytes


class LinkState(Enum):
    DOWN = "down"  # no socket; one is wanted from the backoff deadline on
    CONNECTING = "connecting"  # the server is opening the socket
    UP = "up"


class LinkError(Exception):
    """Redis answered something this link cannot parse: the link is dropped."""


class RedisLink:
    """One Redis connection's protocol state: queued output, replies awaited, reconnects."""

    def __init__(self, name: str, host: str, port: int, db: int) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.db = db
        self.state = LinkState.DOWN
        #: The socket is to be closed (the link gave up on it); the server calls :meth:`lost`.
        self.wants_close = False
        self._output: list[bytes] = []
        self._waiting: deque[tuple[Callback | None, float]] = deque()  # FIFO, as Redis answers
        self._reader = hiredis.Reader()
        self._retry_at: float | None = 0.0  # connect at once
        self._backoff = CLUSTER_BACKOFF_MIN
        #: Called with ``now`` when the link comes up (after SELECT) and when it goes down.
        self.on_up: Callable[[float], None] = lambda now: None
        self.on_down: Callable[[float], None] = lambda now: None

    def __repr__(self) -> str:
        return f"RedisLink({self.name}, {self.host}:{self.port}/{self.db}, {self.state.value})"

    # --- what the server reads -----------------------------------------------------------------

    def wants_connect(self, now: float) -> bool:
        """Whether the server should open a socket now (the link is down and its backoff over)."""
        return self.state is LinkState.DOWN and self._retry_at is not None and now >= self._retry_at

    @property
    def has_output(self) -> bool:
        return bool(self._output) and self.state is LinkState.UP

    def take_output(self) -> bytes:
        """Everything queued since the last call, as one write (one per loop turn)."""
        if self.state is not LinkState.UP or not self._output:
            return b""
        data = b"".join(self._output)
        self._output.clear()
        return data

    def next_deadline(self) -> float | None:
        if self.state is LinkState.DOWN:
            return self._retry_at
        if self._waiting:
            return self._waiting[0][1]  # replies come in order: the oldest is due first
        return None

    # --- events from the server ----------------------------------------------------------------

    def connecting(self) -> None:
        """The server started opening a socket."""
        self.state = LinkState.CONNECTING
        self.wants_close = False

    def connected(self, now: float) -> None:
        """The socket is open: select the database, then the link is up."""
        self._now_hint = now
        self.state = LinkState.UP
        self._reader = hiredis.Reader()
        self._output.clear()
        self._waiting.clear()
        self._backoff = CLUSTER_BACKOFF_MIN
        log.info("%s link to %s:%d up", self.name, self.host, self.port)
        self.command(("SELECT", self.db), self._selected)
        self.on_up(now)

    def receive(self, data: bytes, now: float) -> None:
        """Octets from Redis; ``b""`` is the end of the stream (Redis went away)."""
        if self.state is not LinkState.UP:
            return
        if not data:
            self._drop(now, "Redis closed the connection")
            return
        self._reader.feed(data)
        while self.state is LinkState.UP:
            try:
                reply = self._reader.gets()
            except hiredis.ProtocolError as exc:
                self._drop(now, f"unreadable reply: {exc}")
                return
            if reply is False:
                return
            if not self._waiting:
                self._drop(now, "a reply nobody asked for")
                return
            callback, _ = self._waiting.popleft()
            if callback is None:
                continue
            try:
                callback(reply)
            except Exception:
                # A reply of a shape nobody expected (or a bug applying it) costs the link, which
                # reconnects and resumes, never the server.
                log.exception("%s link: could not apply a reply from Redis", self.name)
                if self.state is LinkState.UP:
                    self._drop(now, "a reply that could not be applied")
                return

    def lost(self, now: float, why: str = "connection failed") -> None:
        """The socket failed or could not be opened; the server has closed it."""
        if self.state is LinkState.DOWN:
            self.wants_close = False
            return
        self._drop(now, why)
        self.wants_close = False

    def drop(self, now: float, why: str) -> None:
        """Give up on the socket (the server closes it, see :attr:`wants_close`); reconnect later."""
        if self.state is not LinkState.DOWN:
            self._drop(now, why)

    def expire(self, now: float) -> None:
        if self.state is LinkState.UP and self._waiting and now >= self._waiting[0][1]:
            self._drop(now, f"no reply within {CLUSTER_REPLY_TIMEOUT:g} s")

    def stop(self) -> None:
        """No more reconnecting: the server is stopping."""
        self._retry_at = None

    # --- commands --------------------------------------------------------------------------------

    def command(
        self, args: tuple[Argument, ...], callback: Callback | None = None, *, wait: float | None = None
    ) -> None:
        """Queue ``args``; ``callback`` gets the reply. ``wait`` is how long Redis may hold the
        reply on purpose (a blocking read); the reply is overdue ``CLUSTER_REPLY_TIMEOUT`` later.
        Only while the link is up: a command queued on a link that is down is dropped."""
        if self.state is not LinkState.UP:
            return
        # The stub types the argument as a 1-tuple; any tuple of arguments is what it packs.
        self._output.append(hiredis.pack_command(args))  # type: ignore[arg-type]
        self._waiting.append((callback, self._now_hint + (wait or 0.0) + CLUSTER_REPLY_TIMEOUT))

    #: The time of the latest event, for reply deadlines of commands queued from callbacks.
    _now_hint = 0.0

    def tick(self, now: float) -> None:
        """Tell the link the time before queuing commands that wait (``wait=``)."""
        self._now_hint = now

    # --- internals -------------------------------------------------------------------------------

    def _selected(self, reply: Reply) -> None:
        if isinstance(reply, hiredis.ReplyError):
            log.error("%s link: SELECT %d refused: %s", self.name, self.db, reply)

    def _drop(self, now: float, why: str) -> None:
        was_up = self.state is LinkState.UP
        self.state = LinkState.DOWN
        self.wants_close = True
        self._output.clear()
        self._waiting.clear()
        if self._retry_at is not None:
            self._retry_at = now + self._backoff
            self._backoff = min(self._backoff * 2, CLUSTER_BACKOFF_MAX)
        if was_up:
            log.warning("%s link to %s:%d lost: %s", self.name, self.host, self.port, why)
        else:
            log.info("%s link to %s:%d not up: %s", self.name, self.host, self.port, why)
        self.on_down(now)
