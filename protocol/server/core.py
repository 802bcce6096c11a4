"""Every connection's whole life on a server, sans I/O (spec/PROTOCOL.md §7.4, §9.4, §10, §12).

:class:`ServerCore` decides everything; a server only moves bytes and keeps time:

- **Events in** (``now`` is the server's monotonic clock): :meth:`~ServerCore.connect`,
  :meth:`~ServerCore.receive` (``b""`` = end of stream), :meth:`~ServerCore.sent`,
  :meth:`~ServerCore.connection_lost`, :meth:`~ServerCore.expire`,
  :meth:`~ServerCore.accept_failed`, :meth:`~ServerCore.shutdown`.
- **Output out**: each connection's :class:`Outbox` holds the frames not yet handed to the
  I/O layer. :meth:`~ServerCore.take_dirty` lists the outboxes that went from empty to
  non-empty (the server writes them; an outbox already holding frames is waiting for its
  socket to become writable, and is written then).
- **Directives out**: :meth:`~ServerCore.take_directives` says which connections to
  half-close, close or abort, in order. After ``CLOSE`` or ``ABORT`` the core has forgotten
  the connection; later events for it are ignored.
- **Timers**: :meth:`~ServerCore.next_deadline`; the server calls :meth:`~ServerCore.expire`
  when it passes.

The rules, decided here once for both servers:

1. A connection's buffered octets are its outbox plus what its I/O layer reports as still
   held (``Outbox.held``). Queuing a frame that would make them pass ``max_output_buffer``
   queues nothing: the connection is aborted at once and the room told (§10). A queue never
   exceeds the cap, by any frame.
2. The hello timer starts at accept and is never restarted; it stops at welcome or close (§7.4).
3. Closing after a fatal error, an end of stream or a shutdown (§9.4): the outbox is flushed,
   then the connection half-closed (``HALF_CLOSE``) and drained until end of stream
   (``CLOSE``); if the peer already ended its stream, ``CLOSE`` follows the flush directly.
   Input while closing is discarded. All of it is bounded by ``close_linger`` from the start
   (``ABORT`` when it expires).
4. Shutdown (§12): every connection gets ``shutdown`` and is closed as in 3, with one
   deadline ``shutdown_flush_timeout`` for all (a connection accepted meanwhile too); a second
   request aborts every connection at once. :attr:`~ServerCore.finished` is true once none is
   left.
5. An accept error pauses accepting for ``ACCEPT_BACKOFF`` (:attr:`~ServerCore.accepting`).
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections.abc import Callable, Sequence
from enum import Enum
from itertools import accumulate

from ..codecs import Codec
from ..constants import (
    ACCEPT_BACKOFF,
    CLOSE_LINGER,
    DEFAULT_HELLO_TIMEOUT,
    DEFAULT_MAX_FRAME,
    DEFAULT_MAX_OUTPUT_BUFFER,
    FLUSH_EARLY,
    SHUTDOWN_FLUSH_TIMEOUT,
)
from .room import Room
from .rules import Action, ClientId, Close, Relay, Send, ServerRules
from .timers import Deadlines

log = logging.getLogger("protocol.server")

Buffer = bytes | memoryview


class Disposal(Enum):
    """What a directive tells the server to do with a connection's socket."""

    #: Flushed: ``shutdown(SHUT_WR)`` (asyncio: ``write_eof()``), then keep reading (§9.4).
    HALF_CLOSE = "half_close"
    #: Done: close the socket; whatever the transport still holds may be flushed first.
    CLOSE = "close"
    #: Close at once, discarding whatever is unsent (§10, or the linger ran out).
    ABORT = "abort"


Directive = tuple[Disposal, ClientId]


class Outbox:
    """One connection's frames not yet handed to the I/O layer, and where it is in closing.

    The server reads ``frames`` (the first ones first) and reports what it wrote with
    :meth:`ServerCore.sent`; it never changes an outbox itself. A frame fanned out to many
    connections is one bytes object in all their outboxes: queuing copies nothing.
    """

    __slots__ = (
        "client",
        "closing",
        "dirty",
        "eof",
        "frames",
        "gone",
        "held",
        "refresh_held",
        "shut",
        "size",
    )

    def __init__(self, client: ClientId) -> None:
        self.client = client
        self.frames: list[Buffer] = []
        self.size = 0  # octets in frames
        #: Octets the I/O layer took but its transport still holds (asyncio's write buffer),
        #: as last reported: it only shrinks between reports, so size + held bounds the buffer.
        self.held = 0
        #: The exact ``held`` now, when the I/O layer can tell (asyncio); asked only when the
        #: upper bound says a frame would not fit.
        self.refresh_held: Callable[[], int] | None = None
        self.closing = False  # §9.4 under way: nothing more is queued, input is discarded
        self.eof = False  # the peer ended its stream
        self.shut = False  # HALF_CLOSE was directed
        self.gone = False  # forgotten by the core
        self.dirty = False  # listed for the next take_dirty()

    @property
    def buffered(self) -> int:
        """The octets counted against the output cap (§10)."""
        return self.size + self.held


class ServerCore:
    """The room, every connection's protocol state, outboxes and timers of one server."""

    def __init__(
        self,
        codec: Codec,
        *,
        server_name: str,
        max_frame: int = DEFAULT_MAX_FRAME,
        hello_timeout: float = DEFAULT_HELLO_TIMEOUT,
        max_output_buffer: int = DEFAULT_MAX_OUTPUT_BUFFER,
        close_linger: float = CLOSE_LINGER,
        shutdown_flush_timeout: float = SHUTDOWN_FLUSH_TIMEOUT,
        rules: ServerRules | None = None,
    ) -> None:
        """``rules`` replaces the one-process rules made from ``codec``, ``server_name`` and
        ``max_frame`` (a clustered room's, :mod:`protocol.cluster`)."""
        self.rules = rules or ServerRules(codec, server_name=server_name, max_frame=max_frame)
        self.max_output_buffer = max_output_buffer
        self.shutdown_flush_timeout = shutdown_flush_timeout
        self._outboxes: dict[ClientId, Outbox] = {}
        self._dirty: list[Outbox] = []
        self._directives: list[Directive] = []
        self._hello: Deadlines[ClientId] = Deadlines(hello_timeout)
        self._linger: Deadlines[ClientId] = Deadlines(close_linger)
        self._next_id = 0
        self._now = 0.0  # the latest time an event brought, for the shutdown log
        self._accept_paused_until: float | None = None
        self._stop_started: float | None = None
        self._stop_deadline: float | None = None
        self._stop_connections = 0
        self._stop_aborted = 0
        #: An outbox listed for the next take_dirty() passed FLUSH_EARLY: write before the
        #: loop iteration ends.
        self.flush_early = False

    # --- what the server reads ----------------------------------------------------------------

    @property
    def codec(self) -> Codec:
        return self.rules.codec

    @property
    def max_frame(self) -> int:
        return self.rules.max_frame

    @property
    def room(self) -> Room[ClientId]:
        return self.rules.room

    @property
    def connections(self) -> int:
        """Connections not yet closed or aborted, closing ones included."""
        return len(self._outboxes)

    def __contains__(self, client: object) -> bool:
        return client in self._outboxes

    def outbox(self, client: ClientId) -> Outbox | None:
        return self._outboxes.get(client)

    @property
    def accepting(self) -> bool:
        """Whether the server should accept: not stopping, and not paused by an accept error."""
        return self._stop_deadline is None and self._accept_paused_until is None

    @property
    def stopping(self) -> bool:
        return self._stop_deadline is not None

    @property
    def finished(self) -> bool:
        """Shutdown was requested and every connection is gone: the server can exit."""
        return self._stop_deadline is not None and not self._outboxes and self.rules.settled

    @property
    def has_output(self) -> bool:
        """Whether :meth:`take_dirty` or :meth:`take_directives` has something."""
        return bool(self._dirty or self._directives)

    def take_dirty(self) -> list[Outbox]:
        """The outboxes that received frames while empty, in order; each once."""
        self.flush_early = False
        dirty, self._dirty = self._dirty, []
        for outbox in dirty:
            outbox.dirty = False
        return [outbox for outbox in dirty if not outbox.gone]

    def take_directives(self) -> list[Directive]:
        directives, self._directives = self._directives, []
        return directives

    def pump(
        self,
        write: Callable[[Outbox], object],
        dispose: Callable[[Disposal, ClientId], object],
    ) -> None:
        """Hand each dirty outbox to ``write`` and each directive to ``dispose``, in order, until
        neither is left (writing can complete a close; a failed close can announce a departure)."""
        while self._dirty or self._directives:
            for outbox in self.take_dirty():
                write(outbox)
            for disposal, client in self.take_directives():
                dispose(disposal, client)

    def next_deadline(self) -> float | None:
        """When :meth:`expire` must next be called, or ``None`` if no timer runs."""
        deadlines = [
            d
            for d in (
                self._hello.next_deadline(),
                self._linger.next_deadline(),
                self._accept_paused_until,
                self._stop_deadline if self._outboxes else None,
                self.rules.next_deadline(),
            )
            if d is not None
        ]
        return min(deadlines) if deadlines else None

    # --- events from the server ---------------------------------------------------------------

    def connect(self, host: str, now: float) -> ClientId:
        """A connection was accepted from ``host``; its hello timer starts now (§7.4)."""
        self._now = now
        self._next_id += 1
        client = self._next_id
        self._outboxes[client] = Outbox(client)
        self.rules.connect(client, host)
        if self._stop_deadline is not None:
            # Accepted as the listener closed: told, like every other connection (§12).
            self._stop_connections += 1
            self._carry_out(self.rules.shutdown())
        else:
            self._hello.arm(client, now)
        return client

    def receive(self, client: ClientId, data: bytes, now: float) -> None:
        """Bytes arrived from ``client``; ``b""`` is its end of stream."""
        self._now = now
        outbox = self._outboxes.get(client)
        if outbox is None:
            return
        if not data:
            outbox.eof = True
        if outbox.closing:
            # Draining (§9.4 step 4): input is discarded, and the end of stream ends it.
            if outbox.eof and outbox.shut:
                self._forget(outbox, Disposal.CLOSE)
            return
        self._carry_out(self.rules.receive(client, data))
        if client in self._hello and self.rules.joined(client):
            self._hello.cancel(client)  # welcomed: the timer stops (§7.4)

    def sent(self, client: ClientId, count: int, held: int = 0) -> None:
        """The server wrote the first ``count`` octets of ``client``'s outbox; its transport
        still holds ``held`` octets of what it was given (0 when writing to the socket)."""
        outbox = self._outboxes.get(client)
        if outbox is None:
            return
        if count:
            _drop_written(outbox, count)
        outbox.held = held
        if outbox.closing and not outbox.frames and not outbox.shut:
            self._flushed(outbox)

    def connection_lost(self, client: ClientId) -> None:
        """The server saw a reset or socket error and closed the socket: forget the connection."""
        outbox = self._outboxes.get(client)
        if outbox is None:
            return
        self._forget(outbox, None)
        if not outbox.closing:
            self._carry_out(self.rules.connection_lost(client))

    def expire(self, now: float) -> None:
        """Run every timer due by ``now``: hello timeouts, lingers, pauses, the shutdown deadline."""
        self._now = now
        self._carry_out(self.rules.expire(now))
        for client in self._hello.expire(now):
            self._carry_out(self.rules.hello_timeout(client))
        for client in self._linger.expire(now):
            outbox = self._outboxes.get(client)
            if outbox is not None:
                self._forget(outbox, Disposal.ABORT)  # CLOSE_LINGER is over, whatever remains
        if self._accept_paused_until is not None and now >= self._accept_paused_until:
            self._accept_paused_until = None
        if self._stop_deadline is not None and now >= self._stop_deadline and self._outboxes:
            log.warning("shutdown flush timed out; aborting %d connections", len(self._outboxes))
            self._abort_all()

    def settle(self, now: float) -> None:
        """Carry out what the rules decided outside any connection's event: after the server fed
        a clustered room's Redis links (:mod:`protocol.cluster`)."""
        self._now = now
        self._carry_out(self.rules.take_actions())

    def accept_failed(self, error: OSError, now: float) -> None:
        """Accepting failed for lack of resources (EMFILE, ENOBUFS...): pause it a while."""
        log.error("accept failed: %s; pausing accepts for %.1f s", error, ACCEPT_BACKOFF)
        self._accept_paused_until = now + ACCEPT_BACKOFF

    def shutdown(self, now: float) -> None:
        """Stop (§12): the first call starts the bounded flush, a second one aborts everything."""
        self._now = now
        if self._stop_deadline is not None:
            log.warning("stop requested again: aborting %d connections now", len(self._outboxes))
            self._abort_all()
            return
        self._stop_started = now
        self._stop_deadline = now + self.shutdown_flush_timeout
        self._stop_connections = len(self._outboxes)
        log.info("shutting down: telling %d connections (%d members)", len(self._outboxes), len(self.room))
        self._carry_out(self.rules.shutdown())
        self._log_if_stopped()

    # --- carrying out the rules' actions ------------------------------------------------------

    def _carry_out(self, actions: list[Action]) -> None:
        """Queue and close as ``actions`` say, in order; cut off every connection whose queue
        would pass the cap (§10). A departure may push others over, so this runs until no
        queue is over."""
        pending = actions
        while pending:
            over: list[ClientId] = []
            for action in pending:
                if type(action) is Send:
                    over += self._fan_out(action.data, action.to, action.exclude)
                elif type(action) is Relay:
                    over += self._fan_out_run(action.frames, action.to, action.exclude)
                else:
                    assert type(action) is Close
                    self._close(action.client, action.flush)
            pending = []
            for client in over:
                pending.extend(self.rules.slow_consumer(client))
                outbox = self._outboxes.get(client)
                if outbox is not None and outbox.closing:
                    # Its fatal error (or shutdown) frame was what would not fit: closed at once,
                    # without the linger, and announced once only (§9.4 with §10).
                    self._forget(outbox, Disposal.ABORT)

    def _fan_out(self, data: bytes, clients: Sequence[ClientId], exclude: ClientId | None) -> list[ClientId]:
        """Queue ``data`` for ``clients`` but ``exclude``; return those it would push over the cap."""
        over: list[ClientId] = []
        outboxes = self._outboxes
        dirty = self._dirty
        size = len(data)
        limit = self.max_output_buffer - size
        for client in clients:
            if client == exclude:
                continue
            outbox = outboxes.get(client)
            if outbox is None or outbox.closing:
                continue
            if outbox.size + outbox.held > limit and not self._fits_after_refresh(outbox, limit):
                over.append(client)
                continue
            if not outbox.frames:
                outbox.dirty = True
                dirty.append(outbox)
            outbox.frames.append(data)
            outbox.size += size
            # Only an outbox the server is about to write: one waiting for its socket to become
            # writable gains nothing from an early flush, and would make every flush early.
            if outbox.dirty and outbox.size > FLUSH_EARLY:
                self.flush_early = True
        return over

    def _fan_out_run(
        self, frames: list[bytes], clients: Sequence[ClientId], exclude: ClientId | None
    ) -> list[ClientId]:
        """:meth:`_fan_out` of several frames joined; a connection that cannot take them all is
        cut off, and the cut-offs are ordered by the first frame each could not take."""
        if len(frames) == 1:
            return self._fan_out(frames[0], clients, exclude)
        over = self._fan_out(b"".join(frames), clients, exclude)
        if len(over) > 1:
            ends = tuple(accumulate(map(len, frames)))
            cap = self.max_output_buffer
            outboxes = self._outboxes
            over.sort(key=lambda client: bisect_right(ends, cap - outboxes[client].buffered))
        return over

    @staticmethod
    def _fits_after_refresh(outbox: Outbox, limit: int) -> bool:
        if outbox.refresh_held is None:
            return False
        outbox.held = outbox.refresh_held()
        return outbox.size + outbox.held <= limit

    def _close(self, client: ClientId, flush: bool) -> None:
        outbox = self._outboxes.get(client)
        if outbox is None or outbox.closing:
            return
        if not flush:
            self._forget(outbox, Disposal.ABORT)
            return
        outbox.closing = True
        self._hello.cancel(client)
        self._linger.arm(client, self._now)
        if not outbox.frames:
            self._flushed(outbox)

    def _flushed(self, outbox: Outbox) -> None:
        """A closing connection's outbox is empty: half-close, or close if its stream ended."""
        if outbox.eof:
            self._forget(outbox, Disposal.CLOSE)
        else:
            outbox.shut = True
            self._directives.append((Disposal.HALF_CLOSE, outbox.client))

    def _forget(self, outbox: Outbox, disposal: Disposal | None) -> None:
        client = outbox.client
        if self._outboxes.pop(client, None) is None:
            return
        outbox.gone = True
        outbox.frames = []
        outbox.size = 0
        self._hello.cancel(client)
        self._linger.cancel(client)
        if disposal is not None:
            self._directives.append((disposal, client))
        if self._stop_started is not None:
            self._stop_aborted += disposal is Disposal.ABORT
            self._log_if_stopped()

    def _abort_all(self) -> None:
        # Only while stopping: the rules have closed every connection already (no left is due).
        for outbox in list(self._outboxes.values()):
            self._forget(outbox, Disposal.ABORT)

    def _log_if_stopped(self) -> None:
        if self._stop_started is not None and not self._outboxes:
            log.info(
                "shutdown complete: %d connections closed in %.3f s (%d aborted)",
                self._stop_connections,
                self._now - self._stop_started,
                self._stop_aborted,
            )
            self._stop_started = None


def _drop_written(outbox: Outbox, count: int) -> None:
    """Remove the first ``count`` octets from ``outbox``: whole frames, then part of one."""
    frames = outbox.frames
    outbox.size -= count
    if not outbox.size:
        frames.clear()
        return
    done = 0
    while count:
        size = len(frames[done])
        if count < size:
            frames[done] = memoryview(frames[done])[count:]
            break
        count -= size
        done += 1
    del frames[:done]
