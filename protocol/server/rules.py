"""What a chat server says, to whom, for each event (spec/PROTOCOL.md §7-§12): no I/O, no clock.

:class:`ServerRules` holds the room and every connection's protocol state. Each event method
returns the actions the protocol calls for, in order: :class:`Send` (this frame to these
connections), :class:`Relay` (a run of one sender's relayed messages to the room) and
:class:`Close` (end this connection, flushing first or not). It does not
know about buffers, timers or sockets: :class:`protocol.server.ServerCore` carries the actions
out and owns the rest of each connection's life.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from ..codecs import Codec, MsgpackCodec, PickleCodec
from ..connection import NEED_DATA, Connection, ConnectionClosed, RelayEncoder, Role, State, encode_message
from ..constants import (
    DEFAULT_MAX_FRAME,
    HEADER_SIZE,
    MAX_PAYLOAD_OBJECTS,
    MIN_MAX_FRAME,
    PROTOCOL_VERSION,
    READ_BUDGET_MIN_COST,
    SHUTDOWN_REASON,
    ErrorCode,
    LeaveReason,
)
from ..errors import ProtocolError, RemoteProtocolError
from ..logtext import escape
from ..messages import Error, Hello, Joined, Left, Member, Ping, Pong, Roster, Say, Shutdown, Welcome, Who
from ..names import name_problem
from .access import Access
from .room import Room, Seat

ClientId = int

log = logging.getLogger("protocol.server")


# Actions are not frozen, only treated as immutable: a frozen dataclass's __init__ costs
# several times a plain one's, and one is made for nearly every message.
@dataclass(slots=True)
class Send:
    """Queue ``data`` (one whole frame) for every client in ``to`` except ``exclude``."""

    data: bytes
    to: Sequence[ClientId]
    exclude: ClientId | None = None


@dataclass(slots=True)
class Close:
    """End ``client``'s connection: with ``flush`` by the procedure of §9.4, without at once (§10)."""

    client: ClientId
    flush: bool


@dataclass(slots=True)
class Relay:
    """Queue ``frames``, the ``message`` frames of consecutive says of one sender (§8.4), for
    every client in ``to`` except ``exclude`` (the sender).

    Nothing happens between consecutive says, so they have the same recipients: queued as
    one buffer, they cost each recipient one append and one write instead of one per message.
    The output cap (§10) still applies frame by frame.
    """

    frames: list[bytes]
    to: Sequence[ClientId]
    exclude: ClientId


Action = Send | Relay | Close


class Stop(Enum):
    """Why :meth:`ServerRules.receive` returned."""

    #: Every complete frame was handled (or the connection closed): the socket can be read.
    DONE = "done"
    #: The read budget ran out; complete frames remain, for :meth:`ServerRules.resume`.
    BUDGET = "budget"
    #: A ``say`` waits while says are held (a recipient is congested, §10.1).
    HELD = "held"


@dataclass(slots=True)
class _Client:
    connection: Connection
    host: str
    relay: RelayEncoder | None = None  # from the join on
    #: A say taken from the connection but not handled yet: says were held (§10.1).
    waiting: Say | None = None
    held: bool = False  # input is not handled until released (a subclass decides, §18.4)


class ServerRules:
    """The room and every connection's protocol state; events in, actions out."""

    def __init__(
        self,
        codec: Codec,
        *,
        server_name: str,
        max_frame: int = DEFAULT_MAX_FRAME,
        max_payload_objects: int = MAX_PAYLOAD_OBJECTS,
        access: Access | None = None,
    ) -> None:
        """``codec`` encodes what the server sends; client payloads are decoded by the same
        codec counting at most ``max_payload_objects`` values (§4.2 rule 9, §4.3 rule 8): a
        built-in codec made without a limit is given that one. With ``access``, a hello must
        present a token it admits (§17.3)."""
        if max_frame < MIN_MAX_FRAME:
            raise ValueError(f"max_frame must be at least {MIN_MAX_FRAME}")
        if codec.max_objects is None and isinstance(codec, MsgpackCodec | PickleCodec):
            codec = type(codec)(max_payload_objects)
        self.codec = codec
        self.server_name = server_name
        self.max_frame = max_frame
        self.room: Room[ClientId] = Room()
        self._clients: dict[ClientId, _Client] = {}
        #: Why the last :meth:`receive` or :meth:`resume` returned, and what it handled: the
        #: budget it spent (0: no frame completed).
        self.stop = Stop.DONE
        self.spent = 0
        self._roster: tuple[tuple[ClientId, ...], bytes] | None = None
        self.access = access
        self._now = 0.0  # the time of the event being handled, for the access limiter

    def __contains__(self, client: object) -> bool:
        return client in self._clients

    @property
    def connections(self) -> int:
        """Connections the protocol still serves (not yet closed)."""
        return len(self._clients)

    def joined(self, client: ClientId) -> bool:
        """Whether ``client`` is a member."""
        return client in self.room

    # --- what only a clustered room needs (protocol.cluster); nothing here otherwise ---------

    def next_deadline(self) -> float | None:
        """When :meth:`expire` is next due for the rules' own timers, if they have any."""
        return None

    def expire(self, now: float) -> list[Action]:
        """Run the rules' own timers due by ``now``."""
        return []

    def take_actions(self) -> list[Action]:
        """What the rules decided outside a connection's event (a clustered room's log)."""
        return []

    def take_welcomed(self) -> list[ClientId]:
        """The connections welcomed outside a connection's event since the last call (a
        clustered room decides a hello when its log does); here a hello is decided at once."""
        return []

    def take_released(self) -> list[ClientId]:
        """The connections whose held input may be handled again since the last call (a
        clustered room holds it until its log decides, §18.4); here input is never held so."""
        return []

    def holding(self, client: ClientId, holds: bool) -> None:
        """The core saw member ``client`` start holding the room's says (past the hold mark,
        §10.1) or stop (drained, out of patience, §10.2, or gone): a clustered node tells the
        other nodes, which hold their says too (§18.2); nothing here."""

    @property
    def holding_says(self) -> bool:
        """Whether says wait for a reason of the rules' own, besides congestion (a clustered
        node's says proposed and not yet applied, §18.2); never here."""
        return False

    @property
    def settled(self) -> bool:
        """Whether nothing is left to finish before a stopping server exits."""
        return True

    # --- events ------------------------------------------------------------------------------

    def connect(self, client: ClientId, host: str) -> None:
        """``client`` was accepted from ``host`` (an id the caller never reuses)."""
        connection = Connection(Role.SERVER, codec=self.codec, max_frame=self.max_frame)
        self._clients[client] = _Client(connection, host)
        log.info("connection %d from %s", client, host)

    def receive(
        self,
        client: ClientId,
        data: bytes,
        now: float = 0.0,
        budget: int = 1 << 62,
        hold_says: bool = False,
    ) -> list[Action]:
        """Bytes arrived from ``client`` at ``now``; ``b""`` is its end of stream.

        Frames are handled until ``budget`` is spent (each costs its octets, at least
        ``READ_BUDGET_MIN_COST``, and a ``who`` the octets of its roster), and with
        ``hold_says`` only up to the first ``say``; :attr:`stop` says which, and
        :meth:`resume` goes on from there.
        """
        self._now = now
        state = self._clients.get(client)
        self.stop = Stop.DONE
        self.spent = 0
        if state is None:
            return []
        state.connection.receive_data(data)
        return self._run(client, state, budget, hold_says)

    def resume(
        self, client: ClientId, now: float = 0.0, budget: int = 1 << 62, hold_says: bool = False
    ) -> list[Action]:
        """Go on handling the frames ``client`` has sent, as :meth:`receive` would."""
        self._now = now
        state = self._clients.get(client)
        self.stop = Stop.DONE
        self.spent = 0
        if state is None:
            return []
        return self._run(client, state, budget, hold_says)

    def _run(self, client: ClientId, state: _Client, budget: int, hold_says: bool) -> list[Action]:
        actions: list[Action] = []
        connection = state.connection
        spent = 0
        try:
            waiting = state.waiting
            if waiting is not None:
                if hold_says:
                    self.stop = Stop.HELD
                    return actions
                state.waiting = None
                spent = max(READ_BUDGET_MIN_COST, connection.last_size)
                self._handle(client, state, waiting, actions)
            while True:
                if spent >= budget:
                    self.stop = Stop.BUDGET
                    return actions
                try:
                    event = connection.next_event()
                except RemoteProtocolError as exc:
                    self._refuse(client, exc, actions)
                    if exc.fatal:
                        return actions
                    # A frame refused is a frame read: it costs the budget, and counts as a
                    # completed frame for the timers of §7.5.
                    size = connection.last_size
                    spent += size if size > READ_BUDGET_MIN_COST else READ_BUDGET_MIN_COST
                    continue
                if event is NEED_DATA:
                    return actions
                if isinstance(event, ConnectionClosed):
                    reason = LeaveReason.QUIT if event.clean else LeaveReason.CONNECTION_LOST
                    self._drop(client, reason, actions)
                    actions.append(Close(client, flush=True))
                    return actions
                if hold_says and type(event) is Say:
                    state.waiting = event
                    self.stop = Stop.HELD
                    return actions
                size = connection.last_size
                spent += size if size > READ_BUDGET_MIN_COST else READ_BUDGET_MIN_COST
                if type(event) is Who:
                    spent += len(self._roster_frame())
                self._handle(client, state, event, actions)
                if state.held:  # its later input waits for a decision (clustered rooms, §18.4)
                    return actions
        except Exception:
            # A bug here must cost one connection, not the server (§9.1 internal_error).
            log.exception("internal error while serving connection %d", client)
            if client in self._clients:
                internal = ProtocolError(ErrorCode.INTERNAL_ERROR, "internal server error")
                self._refuse(client, internal, actions)
            return actions
        finally:
            self.spent = spent

    def pending_octets(self, client: ClientId) -> int:
        """Octets received from ``client`` and not handled yet (a partial frame included)."""
        state = self._clients.get(client)
        if state is None:
            return 0
        return state.connection.buffered

    def partial(self, client: ClientId) -> bool:
        """Whether ``client`` has begun a frame it has not completed."""
        state = self._clients.get(client)
        return state is not None and state.connection.partial > 0

    def fail(self, client: ClientId, code: ErrorCode, text: str) -> list[Action]:
        """Refuse ``client`` with the fatal ``code`` (a timeout, server_busy), if it is still served."""
        if client not in self._clients:
            return []
        actions: list[Action] = []
        self._refuse(client, ProtocolError(code, text), actions)
        return actions

    def connection_lost(self, client: ClientId) -> list[Action]:
        """The connection failed (reset, socket error): forget it and tell the room."""
        actions: list[Action] = []
        self._drop(client, LeaveReason.CONNECTION_LOST, actions)
        return actions

    def hello_timeout(self, client: ClientId) -> list[Action]:
        """The hello timer of ``client`` expired; nothing if it has joined or gone (§7.4)."""
        state = self._clients.get(client)
        if state is None or state.connection.state is not State.AWAIT_HELLO:
            return []
        actions: list[Action] = []
        self._refuse(client, ProtocolError(ErrorCode.HELLO_TIMEOUT, "no hello in time"), actions)
        return actions

    def slow_consumer(self, client: ClientId) -> list[Action]:
        """``client``'s output would pass its cap: cut it off and tell the room (§10)."""
        if client not in self._clients:
            return []
        log.warning("connection %d is a slow consumer", client)
        actions: list[Action] = [Close(client, flush=False)]
        self._drop(client, LeaveReason.SLOW_CONSUMER, actions)
        return actions

    def shutdown(self) -> list[Action]:
        """Tell every connection the server is stopping, then close them all, without left (§12).

        A connection made after this (accepted as the listener closed) is given the same
        notice through this method again.
        """
        data = encode_message(self.codec, Shutdown(SHUTDOWN_REASON))
        clients = list(self._clients)
        actions: list[Action] = [Send(data, clients)]
        actions.extend(Close(client, flush=True) for client in clients)
        self._clients.clear()
        self.room = Room()
        return actions

    # --- the protocol ------------------------------------------------------------------------

    def _handle(self, client: ClientId, state: _Client, message: object, actions: list[Action]) -> None:
        if isinstance(message, Say):
            data = self._relay_frame(client, state, message, actions)
            if data is not None:
                members = self.room.members
                last = actions[-1] if actions else None
                if type(last) is Relay and last.to is members:  # the run goes on
                    last.frames.append(data)
                else:
                    actions.append(Relay([data], members, client))
        elif isinstance(message, Ping):
            data = encode_message(self.codec, Pong(message.token))
            if len(data) - HEADER_SIZE > self.max_frame:
                # Possible with pickle only: a protocol 0 ping can be denser than our protocol 2 pong.
                too_long = ProtocolError(ErrorCode.TEXT_TOO_LONG, "the pong would not fit max_frame")
                self._refuse(client, too_long, actions)
            else:
                actions.append(Send(data, (client,)))
        elif isinstance(message, Who):
            actions.append(Send(self._roster_frame(), (client,)))
        elif isinstance(message, Hello):
            self._join(client, state, message, actions)

    def _join(self, client: ClientId, state: _Client, hello: Hello, actions: list[Action]) -> None:
        try:
            if self.access is not None:  # without it the room's own check of the name serves
                self._admit(state, hello)
            seat = self.room.join(client, hello.name, state.host)
        except RemoteProtocolError as exc:
            self._refuse(client, exc, actions)
            return
        state.relay = RelayEncoder(self.codec, seat.name, seat.host)
        count = len(self.room)
        welcome = Welcome(
            name=seat.name,
            host=seat.host,
            clients=count,
            max_frame=self.max_frame,
            server=self.server_name,
            codec=self.codec.name.value,
            proto=PROTOCOL_VERSION,
        )
        actions.append(Send(state.connection.send(welcome), (client,)))
        joined = encode_message(self.codec, Joined(seat.name, seat.host, count))
        actions.append(Send(joined, self.room.members, exclude=client))
        log.info("connection %d joined as %s (%d present)", client, escape(seat.identity), count)

    def _relay_frame(self, client: ClientId, state: _Client, say: Say, actions: list[Action]) -> bytes | None:
        """The ``message`` frame ``say`` becomes, or None (refused) if it would not fit max_frame."""
        relay = state.relay
        if relay is None:  # a member has one; anything else is a bug, caught in receive()
            raise LookupError(f"connection {client} says before joining")
        data = relay.frame(say.text)
        if len(data) - HEADER_SIZE > self.max_frame:
            too_long = ProtocolError(ErrorCode.TEXT_TOO_LONG, "the relayed message would not fit max_frame")
            self._refuse(client, too_long, actions)
            return None
        return data

    def _admit(self, state: _Client, hello: Hello) -> None:
        """The checks of a hello before the room's (§7.3 step 6): name_invalid, then the token
        (§17.3), so a stranger learns nothing of who is in the room. Raises RemoteProtocolError."""
        problem = name_problem(hello.name)
        if problem is not None:
            raise RemoteProtocolError(ErrorCode.NAME_INVALID, problem)
        if self.access is not None:
            self.access.check(state.host, hello.name, hello.token, self._now)

    def _roster_seats(self) -> list[Seat]:
        """Every member in join order, as ``roster`` lists them (§8.5)."""
        return self.room.seats()

    def _roster_frame(self) -> bytes:
        """The roster frame, encoded once per membership (``Room.members`` is new at each change)."""
        cached = self._roster
        if cached is not None and cached[0] is self.room.members:
            return cached[1]
        data = self._encode_roster()
        self._roster = (self.room.members, data)
        return data

    def _encode_roster(self) -> bytes:
        members = tuple(Member(seat.name, seat.host) for seat in self._roster_seats())
        data = encode_message(self.codec, Roster(members, truncated=False))
        if len(data) - HEADER_SIZE <= self.max_frame:
            return data
        # Too many to list in one frame: the longest prefix that fits, by bisection (§8.5).
        low, high = 0, len(members)
        while low < high:
            middle = (low + high + 1) // 2
            candidate = encode_message(self.codec, Roster(members[:middle], truncated=True))
            if len(candidate) - HEADER_SIZE <= self.max_frame:
                low = middle
            else:
                high = middle - 1
        return encode_message(self.codec, Roster(members[:low], truncated=True))

    def _refuse(self, client: ClientId, error: ProtocolError, actions: list[Action]) -> None:
        """Send ``error``; after a fatal one, close by §9.4 and tell the room."""
        fatal = error.fatal
        # error.message is already escaped where it quotes a peer's text (protocol.logtext).
        message = Error(error.code.value, error.message, fatal)
        actions.append(Send(encode_message(self.codec, message), (client,)))
        if fatal:
            log.warning("connection %d: fatal %s: %s", client, error.code.value, error.message)
            self._drop(client, LeaveReason.ERROR, actions)
            actions.append(Close(client, flush=True))
        else:
            log.info("connection %d: %s: %s", client, error.code.value, error.message)

    def _drop(self, client: ClientId, reason: LeaveReason, actions: list[Action]) -> None:
        state = self._clients.pop(client, None)
        if state is None:
            return
        seat = self.room.leave(client)
        if seat is None:
            log.info("connection %d from %s closed before joining (%s)", client, state.host, reason.value)
            return
        left = Left(seat.name, seat.host, len(self.room), reason.value)
        actions.append(Send(encode_message(self.codec, left), self.room.members))
        log.info("%s left: %s (%d present)", escape(seat.identity), reason.value, len(self.room))
