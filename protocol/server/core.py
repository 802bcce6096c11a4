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
6. Congestion (§10.1): a connection whose buffered octets pass ``output_soft_limit`` is
   congested until they drain to half of it, and cut off as a slow consumer if it stays
   congested for ``slow_consumer_timeout``. A member whose buffered octets pass the hold mark
   (the lower of ``hold_mark`` and ``output_soft_limit``) holds the room's says until they
   drain to half of it: while one holds, every member's input is handled only up to its
   first ``say``, which waits; a connection with input waiting, or congested itself, is not
   read (``reading`` changes, handed to :meth:`~ServerCore.pump`). A holder that drains
   nothing over a whole ``hold_patience`` (checked every ``hold_patience``) stops holding
   until it drains again (§10.2).
7. Read budget (§14.2): one :meth:`~ServerCore.receive` handles at most ``read_budget`` of
   input (see :meth:`ServerRules.receive`); the rest waits in the core, and
   :attr:`~ServerCore.has_pending` asks the server to call :meth:`~ServerCore.process_pending`
   on its next turn without waiting for the socket.
8. Timeouts after the welcome (§7.5): a frame begun must complete within ``frame_timeout``
   (later octets of it do not restart the timer), and a member must complete a frame at
   least every ``idle_timeout``; both are fatal errors. A connection the core does not read
   is not timed.
9. Totals (§14.2): when the octets queued for all connections pass ``max_total_output`` the
   connection holding the most is cut off as a slow consumer; when the input held for all
   passes ``max_total_input`` the one holding the most gets ``server_busy``. While either
   total is above ``BUSY_MARK`` of its bound, a new connection gets ``server_busy``.
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
    BUSY_MARK,
    CLOSE_LINGER,
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
    DEFAULT_SLOW_CONSUMER_TIMEOUT,
    FLUSH_EARLY,
    SHUTDOWN_FLUSH_TIMEOUT,
    ErrorCode,
)
from .access import Access
from .room import Room
from .rules import Action, ClientId, Close, Relay, Send, ServerRules, Stop
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
        "congested",
        "dirty",
        "drained",
        "eof",
        "frames",
        "gone",
        "held",
        "input",
        "reading",
        "refresh_held",
        "shut",
        "size",
        "stalled",
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
        self.congested = False  # §10.1: over the soft limit, not yet drained to half of it
        self.drained = False  # some output left since the hold patience was last checked
        self.stalled = False  # §10.2: over the hold mark, drained nothing for hold_patience
        #: Whether the server reads the socket, as last directed (§10.1, §14.2).
        self.reading = True
        self.input = 0  # octets received and not handled, as counted against max_total_input

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
        output_soft_limit: int = DEFAULT_OUTPUT_SOFT_LIMIT,
        slow_consumer_timeout: float = DEFAULT_SLOW_CONSUMER_TIMEOUT,
        hold_mark: int = DEFAULT_HOLD_MARK,
        hold_patience: float = DEFAULT_HOLD_PATIENCE,
        frame_timeout: float = DEFAULT_FRAME_TIMEOUT,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        read_budget: int = DEFAULT_READ_BUDGET,
        max_total_output: int = DEFAULT_MAX_TOTAL_OUTPUT,
        max_total_input: int = DEFAULT_MAX_TOTAL_INPUT,
        access: Access | None = None,
        rules: ServerRules | None = None,
    ) -> None:
        """``rules`` replaces the one-process rules made from ``codec``, ``server_name``,
        ``max_frame`` and ``access`` (a clustered room's, :mod:`protocol.cluster`)."""
        self.rules = rules or ServerRules(
            codec, server_name=server_name, max_frame=max_frame, access=access
        )
        self.max_output_buffer = max_output_buffer
        self.output_soft_limit = output_soft_limit
        #: Buffered octets over which a member holds the room's says (§10.1 rule 2).
        self.hold_mark = min(hold_mark, output_soft_limit)
        self.read_budget = read_budget
        self.max_total_output = max_total_output
        self.max_total_input = max_total_input
        #: Octets buffered for all connections (§14.2), and received but not handled.
        self.queued = 0
        self.input_total = 0
        self._congested: dict[ClientId, Outbox] = {}
        self._holding = False  # a member over the hold mark is not stalled: says wait (§10.1)
        self._holders: dict[ClientId, Outbox] = {}  # over the hold mark, stalled or not
        self._patience: Deadlines[ClientId] = Deadlines(hold_patience)
        self._pending: dict[ClientId, None] = {}  # the read budget ran out, frames remain
        self._parked: dict[ClientId, None] = {}  # the same, but congested: waits for its drain
        self._held: dict[ClientId, None] = {}  # a say waits for the room to drain
        self._reading: list[tuple[ClientId, bool]] = []
        self._slow: Deadlines[ClientId] = Deadlines(slow_consumer_timeout)
        self._frame: Deadlines[ClientId] = Deadlines(frame_timeout)
        self._idle: Deadlines[ClientId] = Deadlines(idle_timeout)
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
        """Whether :meth:`take_dirty`, :meth:`take_directives` or :meth:`take_reading` has something."""
        return bool(self._dirty or self._directives or self._reading)

    @property
    def has_pending(self) -> bool:
        """Whether :meth:`process_pending` has input to handle (call it without waiting)."""
        return bool(self._pending)

    @property
    def congested(self) -> int:
        """Connections over the soft limit now (§10.1)."""
        return len(self._congested)

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

    def take_reading(self) -> list[tuple[ClientId, bool]]:
        """Connections to stop (``False``) or go on (``True``) reading, in order (§10.1, §14.2)."""
        reading, self._reading = self._reading, []
        return reading

    def pump(
        self,
        write: Callable[[Outbox], object],
        dispose: Callable[[Disposal, ClientId], object],
        reading: Callable[[ClientId, bool], object] | None = None,
    ) -> None:
        """Hand each dirty outbox to ``write``, each directive to ``dispose`` and each change of
        reading to ``reading``, in order, until none is left (writing can complete a close; a
        failed close can announce a departure)."""
        while self._dirty or self._directives or self._reading:
            for outbox in self.take_dirty():
                write(outbox)
            for disposal, client in self.take_directives():
                dispose(disposal, client)
            for client, on in self.take_reading():
                if reading is not None and client in self._outboxes:
                    reading(client, on)

    def next_deadline(self) -> float | None:
        """When :meth:`expire` must next be called, or ``None`` if no timer runs."""
        deadlines = [
            d
            for d in (
                self._hello.next_deadline(),
                self._linger.next_deadline(),
                self._slow.next_deadline(),
                self._patience.next_deadline(),
                self._frame.next_deadline(),
                self._idle.next_deadline(),
                self._accept_paused_until,
                self._stop_deadline if self._outboxes else None,
                self.rules.next_deadline(),
            )
            if d is not None
        ]
        return min(deadlines) if deadlines else None

    # --- events from the server ---------------------------------------------------------------

    def connect(self, host: str, now: float) -> ClientId:
        """A connection was accepted from ``host``; its hello timer starts now (§7.4). Rules
        that close it at once leave it no outbox (:meth:`outbox` is ``None``): the server then
        closes the socket itself."""
        self._now = now
        self._next_id += 1
        client = self._next_id
        self._outboxes[client] = Outbox(client)
        self.rules.connect(client, host)
        if self._stop_deadline is not None:
            # Accepted as the listener closed: told, like every other connection (§12).
            self._stop_connections += 1
            self._carry_out(self.rules.shutdown())
        elif self.busy:
            self._carry_out(self.rules.fail(client, ErrorCode.SERVER_BUSY, "server busy, try later"))
        else:
            self._hello.arm(client, now)
        return client

    @property
    def busy(self) -> bool:
        """Whether new connections are refused: a total is above ``BUSY_MARK`` of its bound (§14.2)."""
        return (
            self.queued > self.max_total_output * BUSY_MARK
            or self.input_total > self.max_total_input * BUSY_MARK
        )

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
        rules = self.rules
        actions = rules.receive(client, data, now, self.read_budget, self._holding or rules.holding_says)
        stop, spent = rules.stop, rules.spent
        self._carry_out(actions)
        if client in self._hello and rules.joined(client):
            self._hello.cancel(client)  # welcomed: the timer stops (§7.4)
        self._after_input(outbox, stop, spent, now)

    def process_pending(self, now: float) -> None:
        """Handle, within one read budget each, the input of every connection that has some
        left over from an earlier turn (:attr:`has_pending`)."""
        self._now = now
        rules = self.rules
        for client in list(self._pending):
            outbox = self._outboxes.get(client)
            if outbox is None or client not in self._pending:
                continue
            actions = rules.resume(client, now, self.read_budget, self._holding or rules.holding_says)
            stop, spent = rules.stop, rules.spent
            self._carry_out(actions)
            self._after_input(outbox, stop, spent, now)

    def _after_input(self, outbox: Outbox, stop: Stop, spent: int, now: float) -> None:
        """After handling input: what waits, the frame and idle timers, the input total."""
        client = outbox.client
        if outbox.gone or outbox.closing:
            return
        if stop is Stop.DONE:
            if self._pending or self._held or self._parked:
                self._pending.pop(client, None)
                self._held.pop(client, None)
                self._parked.pop(client, None)
        elif stop is Stop.BUDGET:
            (self._parked if outbox.congested else self._pending)[client] = None
        else:
            self._held[client] = None
            self._pending.pop(client, None)
            self._parked.pop(client, None)
        partial = self.rules.partial(client)
        if stop is not Stop.DONE or partial or outbox.input:
            held = self.rules.pending_octets(client) if stop is not Stop.DONE or partial else 0
            self.input_total += held - outbox.input
            outbox.input = held
        reading = stop is Stop.DONE and not outbox.congested
        if reading != outbox.reading:
            self._set_reading(outbox, reading)
        elif reading and client in self.rules.room:
            # §7.5: a completed frame restarts the idle timer; the frame timer runs from the
            # first octet of a frame, so a trickle of its later octets does not restart it.
            if spent:
                self._idle.arm(client, now)
                self._frame.cancel(client)
            if partial and client not in self._frame:
                self._frame.arm(client, now)
        if self.input_total > self.max_total_input:
            self._cut_largest_input()

    def sent(self, client: ClientId, count: int, held: int = 0) -> None:
        """The server wrote the first ``count`` octets of ``client``'s outbox; its transport
        still holds ``held`` octets of what it was given (0 when writing to the socket)."""
        outbox = self._outboxes.get(client)
        if outbox is None:
            return
        if count:
            _drop_written(outbox, count)
        if held < outbox.held + count:
            # Some octets left the buffered ones, taken by the socket (count alone may only
            # have moved into the transport's buffer).
            outbox.drained = True
            if outbox.stalled:
                self._unstall(outbox)
        self.queued += held - outbox.held - count
        outbox.held = held
        if outbox.congested and outbox.size + held <= self.output_soft_limit // 2:
            self._uncongest(outbox)
        if client in self._holders and outbox.size + held <= self.hold_mark // 2:
            self._unhold(outbox)
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
        self._note_decisions(now)
        for client in self._hello.expire(now):
            self._carry_out(self.rules.hello_timeout(client))
        for client in self._slow.expire(now):
            log.warning("connection %d stayed congested too long", client)
            self._carry_out([], over=[client])
        for client in self._patience.expire(now):
            self._check_patience(client, now)
        for client in self._frame.expire(now):
            self._carry_out(self.rules.fail(client, ErrorCode.FRAME_TIMEOUT, "frame not completed in time"))
        for client in self._idle.expire(now):
            self._carry_out(self.rules.fail(client, ErrorCode.IDLE_TIMEOUT, "no frame for too long"))
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
        self._note_decisions(now)

    def _note_decisions(self, now: float) -> None:
        """What the rules decided outside a connection's event (a clustered room's log): the
        hellos welcomed, the input no longer held, and whether says may go on."""
        rules = self.rules
        for client in rules.take_welcomed():
            self._hello.cancel(client)  # welcomed: the timer stops (§7.4), the idle one starts (§7.5)
            outbox = self._outboxes.get(client)
            if outbox is not None and outbox.reading and not outbox.closing:
                self._idle.arm(client, now)
        for client in rules.take_released():
            outbox = self._outboxes.get(client)
            if outbox is not None and not outbox.closing and client not in self._held:
                (self._parked if outbox.congested else self._pending)[client] = None
        if self._held and not self._holding and not rules.holding_says:
            self._release_held()

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

    def _carry_out(self, actions: list[Action], over: Sequence[ClientId] = ()) -> None:
        """Queue and close as ``actions`` say, in order; cut off every connection whose queue
        would pass the cap (§10), and those in ``over``. A departure may push others over, so
        this runs until no queue is over; then, while the total is over its bound, the largest
        queue is cut off (§14.2)."""
        pending = actions
        cut = list(over)
        while pending or cut:
            over = cut
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
            cut = []
            if not pending and self.queued > self.max_total_output:
                cut = self._largest_output()

    def _largest_output(self) -> list[ClientId]:
        """The connection holding the most output, once the total is known to be over (§14.2)."""
        for outbox in self._outboxes.values():
            if outbox.refresh_held is not None and outbox.held:
                self._refresh_held(outbox, outbox.refresh_held)
        if self.queued <= self.max_total_output or not self._outboxes:
            return []
        largest = max(self._outboxes.values(), key=lambda outbox: outbox.buffered)
        if not largest.buffered:
            return []
        log.warning("output over its total (%d octets): cutting off %d", self.queued, largest.client)
        return [largest.client]

    def _cut_largest_input(self) -> None:
        """Refuse the connections holding the most input until the total is within its bound."""
        while self.input_total > self.max_total_input:
            largest = max(self._outboxes.values(), key=lambda outbox: outbox.input)
            if not largest.input:
                break
            client = largest.client
            log.warning("input over its total (%d octets): refusing connection %d", self.input_total, client)
            actions = self.rules.fail(client, ErrorCode.SERVER_BUSY, "server busy: too much unfinished input")
            self._carry_out(actions)
            if not largest.closing and not largest.gone:
                self._forget(largest, Disposal.ABORT)
            self._untrack(largest)

    def _fan_out(self, data: bytes, clients: Sequence[ClientId], exclude: ClientId | None) -> list[ClientId]:
        """Queue ``data`` for ``clients`` but ``exclude``; return those it would push over the cap."""
        over: list[ClientId] = []
        outboxes = self._outboxes
        dirty = self._dirty
        size = len(data)
        # Below the hold mark (never above the soft limit) and the cap, a frame is queued at
        # once; past either, the slow path decides (the cap can be set below them).
        limit = min(self.max_output_buffer, self.hold_mark) - size
        skipped = 0
        for client in clients:
            if client == exclude:
                skipped += 1
                continue
            outbox = outboxes.get(client)
            if outbox is None or outbox.closing:
                skipped += 1
                continue
            if outbox.size + outbox.held > limit and not self._room_for(outbox, size):
                over.append(client)
                skipped += 1
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
        self.queued += size * (len(clients) - skipped)
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

    def _refresh_held(self, outbox: Outbox, refresh: Callable[[], int]) -> int:
        """Ask the transport what it holds of ``outbox`` now; less than last time is a drain."""
        held = refresh()
        if held < outbox.held:
            outbox.drained = True
            if outbox.stalled:
                self._unstall(outbox)
        self.queued += held - outbox.held
        outbox.held = held
        return held

    def _room_for(self, outbox: Outbox, size: int) -> bool:
        """Whether ``size`` more octets fit under the cap (asking the transport what it holds
        when they would not); queuing them past the soft limit makes the connection congested."""
        limit = self.max_output_buffer - size
        if outbox.size + outbox.held > limit:
            if outbox.refresh_held is None:
                return False
            held = self._refresh_held(outbox, outbox.refresh_held)
            if outbox.size + held > limit:
                return False
        buffered = outbox.size + outbox.held + size
        if buffered > self.hold_mark and outbox.client not in self._holders:
            self._hold(outbox)
        if not outbox.congested and buffered > self.output_soft_limit:
            self._congest(outbox)
        return True

    # --- congestion and reading (§10.1, §14.2) -------------------------------------------------

    def _congest(self, outbox: Outbox) -> None:
        client = outbox.client
        outbox.congested = True
        self._congested[client] = outbox
        self._slow.arm(client, self._now)
        if self._pending.pop(client, 0) is None:
            self._parked[client] = None  # its own answers wait until it reads (§10.1 rule 3)
        if outbox.reading:
            self._set_reading(outbox, False)

    def _uncongest(self, outbox: Outbox) -> None:
        client = outbox.client
        outbox.congested = False
        self._congested.pop(client, None)
        self._slow.cancel(client)
        if self._parked.pop(client, 0) is None:
            self._pending[client] = None
        waiting = client in self._pending or client in self._held
        if not outbox.gone and not outbox.reading and not waiting:
            self._set_reading(outbox, True)

    def _hold(self, outbox: Outbox) -> None:
        """``outbox`` passed the hold mark: while it is a member, says wait (§10.1 rule 2)."""
        client = outbox.client
        self._holders[client] = outbox
        outbox.drained = False
        self._patience.arm(client, self._now)
        if client in self.rules.room:
            self._holding = True
            self.rules.holding(client, True)

    def _unhold(self, outbox: Outbox) -> None:
        """``outbox`` drained to half the hold mark, or is forgotten."""
        client = outbox.client
        del self._holders[client]
        self._patience.cancel(client)
        if not outbox.stalled:
            self.rules.holding(client, False)
        outbox.stalled = False
        self._update_holding()

    def _check_patience(self, client: ClientId, now: float) -> None:
        """A holder's patience window ended: it holds on only if some of its output left (§10.2)."""
        outbox = self._holders.get(client)
        if outbox is None:
            return
        if outbox.refresh_held is not None and outbox.held:
            # The transport's buffer may have drained without a report (asyncio reports at
            # its low-water mark only).
            held = self._refresh_held(outbox, outbox.refresh_held)
            if outbox.size + held <= self.hold_mark // 2:
                self._unhold(outbox)
                return
        if outbox.drained:
            outbox.drained = False
            self._patience.arm(client, now)
            return
        log.warning("connection %d drained nothing for its hold patience: says go on", client)
        outbox.stalled = True
        self.rules.holding(client, False)
        self._update_holding()

    def _unstall(self, outbox: Outbox) -> None:
        """A stalled holder drained again: it holds the room's says again (§10.2)."""
        outbox.stalled = False
        outbox.drained = False
        self._patience.arm(outbox.client, self._now)
        if outbox.client in self.rules.room:
            self._holding = True
            self.rules.holding(outbox.client, True)

    def _update_holding(self) -> None:
        """Whether a member still holds; if none does, the says that waited go on (§10.1)."""
        if not self._holding:
            return
        room = self.rules.room
        if any(other in room and not held.stalled for other, held in self._holders.items()):
            return
        self._holding = False
        if not self.rules.holding_says:
            self._release_held()

    def _release_held(self) -> None:
        """The says that waited go on, on the next turn (§10.1)."""
        for held in self._held:
            congested = self._outboxes[held].congested
            (self._parked if congested else self._pending)[held] = None
        self._held.clear()

    def _set_reading(self, outbox: Outbox, reading: bool) -> None:
        client = outbox.client
        outbox.reading = reading
        self._reading.append((client, reading))
        if not reading:
            # §7.5: a connection the server does not read is not timed.
            self._frame.cancel(client)
            self._idle.cancel(client)
        elif client in self.rules.room:
            self._idle.arm(client, self._now)
            if self.rules.partial(client):
                self._frame.arm(client, self._now)

    def _untrack(self, outbox: Outbox) -> None:
        """Forget what congestion, waiting input and the timers of §7.5 knew of ``outbox``."""
        client = outbox.client
        if outbox.congested:
            self._uncongest(outbox)
        if client in self._holders:
            self._unhold(outbox)
        self._pending.pop(client, None)
        self._parked.pop(client, None)
        self._held.pop(client, None)
        self._frame.cancel(client)
        self._idle.cancel(client)
        self.input_total -= outbox.input
        outbox.input = 0
        if not outbox.reading and not outbox.gone:
            self._set_reading(outbox, True)  # closing reads until the end of stream (§9.4)

    def _close(self, client: ClientId, flush: bool) -> None:
        outbox = self._outboxes.get(client)
        if outbox is None or outbox.closing:
            return
        if not flush:
            self._forget(outbox, Disposal.ABORT)
            return
        outbox.closing = True
        self._hello.cancel(client)
        self._untrack(outbox)
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
        self.queued -= outbox.size + outbox.held
        outbox.gone = True
        outbox.frames = []
        outbox.size = 0
        outbox.held = 0
        self._untrack(outbox)
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
