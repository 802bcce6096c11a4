"""Everything a chat server decides, without I/O (spec/PROTOCOL.md §7-§12).

A server owns sockets, buffers and timers; it tells :class:`ServerCore` what happened
(``connect``, ``receive``, ``connection_lost``, ``hello_timeout``, ``slow_consumer``,
``shutdown``) and carries out the :class:`Send` and :class:`Close` actions it gets back,
in order. :func:`dispatch` does that carrying out against a small :class:`Transport`
interface, including the output-buffer cap, so both servers share it.
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Protocol

from .codecs import Codec
from .connection import NEED_DATA, Connection, ConnectionClosed, RelayEncoder, Role, State, encode_message
from .constants import (
    DEFAULT_MAX_FRAME,
    DEFAULT_MAX_OUTPUT_BUFFER,
    HEADER_SIZE,
    MIN_MAX_FRAME,
    PROTOCOL_VERSION,
    SHUTDOWN_REASON,
    ErrorCode,
    LeaveReason,
)
from .errors import ProtocolError, RemoteProtocolError
from .messages import (
    Error,
    Hello,
    Joined,
    Left,
    Member,
    Ping,
    Pong,
    Roster,
    Say,
    Shutdown,
    Welcome,
    Who,
)
from .room import Room

ClientId = int

log = logging.getLogger("protocol.server")


@dataclass(frozen=True, slots=True)
class Send:
    """Queue ``data`` (whole frames) for every client in ``to`` except ``exclude``.

    When ``data`` holds several frames, ``frame_ends`` lists where each ends: the output cap
    (§10) still applies frame by frame.
    """

    data: bytes
    to: Sequence[ClientId]
    exclude: ClientId | None = None
    frame_ends: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Close:
    """Close ``client``. With ``flush``, first deliver what is queued (§9.2); without, drop it."""

    client: ClientId
    flush: bool


Action = Send | Close


@dataclass(slots=True)
class _Client:
    connection: Connection
    host: str
    relay: RelayEncoder | None = None  # from the join on


class ServerCore:
    """The room and every connection's protocol state."""

    def __init__(
        self,
        codec: Codec,
        *,
        server_name: str,
        max_frame: int = DEFAULT_MAX_FRAME,
    ) -> None:
        if max_frame < MIN_MAX_FRAME:
            raise ValueError(f"max_frame must be at least {MIN_MAX_FRAME}")
        self.codec = codec
        self.server_name = server_name
        self.max_frame = max_frame
        self.room: Room[ClientId] = Room()
        self._clients: dict[ClientId, _Client] = {}
        self._next_id = 0
        # Frames relaying the says of the run receive() is in, not yet queued (see receive()).
        self._relayed: list[bytes] = []

    def __contains__(self, client: object) -> bool:
        return client in self._clients

    @property
    def connections(self) -> int:
        return len(self._clients)

    # --- events from the server ---------------------------------------------------------

    def connect(self, host: str) -> ClientId:
        """A connection was accepted from ``host``; the server arms its hello timer."""
        self._next_id += 1
        client = self._next_id
        connection = Connection(Role.SERVER, codec=self.codec, max_frame=self.max_frame)
        self._clients[client] = _Client(connection, host)
        log.info("connection %d from %s", client, host)
        return client

    def receive(self, client: ClientId, data: bytes) -> list[Action]:
        """Bytes arrived from ``client``; ``b""`` is its end of stream.

        The frames relaying a run of consecutive ``say`` messages leave as one :class:`Send`:
        nothing else happens between them, so they have the same recipients, and joining
        them costs each recipient one write instead of one per message (§8.4, §11).
        """
        state = self._clients.get(client)
        if state is None:
            return []
        actions: list[Action] = []
        connection = state.connection
        connection.receive_data(data)
        try:
            while True:
                try:
                    event = connection.next_event()
                except RemoteProtocolError as exc:
                    self._send_relayed(client, actions)
                    self._refuse(client, exc, actions)
                    if exc.fatal:
                        return actions
                    continue
                if type(event) is not Say:
                    self._send_relayed(client, actions)
                if event is NEED_DATA:
                    return actions
                if isinstance(event, ConnectionClosed):
                    reason = LeaveReason.QUIT if event.clean else LeaveReason.CONNECTION_LOST
                    self._drop(client, reason, actions)
                    actions.append(Close(client, flush=True))
                    return actions
                self._handle(client, state, event, actions)
        except Exception:
            # A bug here must cost one connection, not the server (§9.1 internal_error).
            log.exception("internal error while serving connection %d", client)
            self._send_relayed(client, actions)
            if client in self._clients:
                self._refuse(
                    client, ProtocolError(ErrorCode.INTERNAL_ERROR, "internal server error"), actions
                )
            return actions

    def connection_lost(self, client: ClientId) -> list[Action]:
        """The connection failed (reset, timeout, socket error): forget it and tell the room."""
        actions: list[Action] = []
        self._drop(client, LeaveReason.CONNECTION_LOST, actions)
        return actions

    def hello_timeout(self, client: ClientId) -> list[Action]:
        """The hello timer of ``client`` expired; a no-op if it has joined or gone."""
        state = self._clients.get(client)
        if state is None or state.connection.state is not State.AWAIT_HELLO:
            return []
        actions: list[Action] = []
        self._refuse(client, ProtocolError(ErrorCode.HELLO_TIMEOUT, "no hello in time"), actions)
        return actions

    def slow_consumer(self, client: ClientId) -> list[Action]:
        """``client``'s output buffer passed its cap: cut it off and tell the room (§10)."""
        if client not in self._clients:
            return []
        log.warning("connection %d is a slow consumer", client)
        actions: list[Action] = [Close(client, flush=False)]
        self._drop(client, LeaveReason.SLOW_CONSUMER, actions)
        return actions

    def shutdown(self) -> list[Action]:
        """Tell every connection the server is stopping, then close them all (§12)."""
        data = encode_message(self.codec, Shutdown(SHUTDOWN_REASON))
        clients = list(self._clients)
        actions: list[Action] = [Send(data, clients)]
        actions.extend(Close(client, flush=True) for client in clients)
        self._clients.clear()
        self.room = Room()
        return actions

    # --- the protocol -------------------------------------------------------------------

    def _send_relayed(self, client: ClientId, actions: list[Action]) -> None:
        """Queue the frames relayed for ``client`` so far for every other member, in one Send."""
        relayed = self._relayed
        if len(relayed) == 1:
            actions.append(Send(relayed[0], self.room.members, exclude=client))
        elif relayed:
            ends = tuple(accumulate(map(len, relayed)))
            actions.append(Send(b"".join(relayed), self.room.members, exclude=client, frame_ends=ends))
        relayed.clear()

    def _handle(self, client: ClientId, state: _Client, message: object, actions: list[Action]) -> None:
        if isinstance(message, Say):
            relay = state.relay
            if relay is None:  # a member has one; anything else is a bug, caught in receive()
                raise LookupError(f"connection {client} says before joining")
            data = relay.frame(message.text)
            if len(data) - HEADER_SIZE > self.max_frame:
                self._send_relayed(client, actions)
                too_long = ProtocolError(
                    ErrorCode.TEXT_TOO_LONG, "the relayed message would not fit max_frame"
                )
                self._refuse(client, too_long, actions)
            else:
                # Sent by receive() once the run of says ends (_send_relayed).
                self._relayed.append(data)
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
            self._join(client, state, message.name, actions)

    def _join(self, client: ClientId, state: _Client, name: str, actions: list[Action]) -> None:
        try:
            seat = self.room.join(client, name, state.host)
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
        log.info("connection %d joined as %s (%d present)", client, seat.identity, count)

    def _roster_frame(self) -> bytes:
        members = tuple(Member(seat.name, seat.host) for seat in self.room.seats())
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
        """Send ``error``; after a fatal one, flush, close and tell the room."""
        fatal = error.fatal
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
        log.info("%s left: %s (%d present)", seat.identity, reason.value, len(self.room))


class Transport(Protocol):
    """What :func:`dispatch` needs from a server's I/O layer."""

    def write(self, client: ClientId, data: bytes) -> None:
        """Queue ``data`` for ``client`` (never block)."""

    def close(self, client: ClientId, flush: bool) -> None:
        """Close as :class:`Close` says; later writes to ``client`` are dropped."""

    def buffered(self, client: ClientId) -> int:
        """Bytes queued for ``client`` and not yet accepted by the kernel."""


class FanOut(Protocol):
    """An optional :class:`Transport` method: queue one frame for many clients in one call.

    ``fan_out(data, clients, exclude, limit)`` must do exactly what :func:`fan_out_each`
    does with ``write`` and ``buffered``; a server implements it to run that loop over its own
    structures, without two method calls per recipient.
    """

    def __call__(
        self, data: bytes, clients: Sequence[ClientId], exclude: ClientId | None, limit: int
    ) -> list[ClientId]: ...


def fan_out_each(
    transport: Transport, data: bytes, clients: Sequence[ClientId], exclude: ClientId | None, limit: int
) -> list[ClientId]:
    """Queue ``data`` for every client in ``clients`` but ``exclude`` that holds at most ``limit``
    bytes; return the others, which are over the cap, in order."""
    over: list[ClientId] = []
    write = transport.write
    buffered = transport.buffered
    for client in clients:
        if client != exclude:
            if buffered(client) > limit:
                over.append(client)
            else:
                write(client, data)
    return over


def dispatch(
    core: ServerCore,
    actions: list[Action],
    transport: Transport,
    max_output_buffer: int = DEFAULT_MAX_OUTPUT_BUFFER,
) -> None:
    """Carry out ``actions`` in order; cut off every client whose queue would pass the cap (§10).

    Cutting one client off announces its departure, which may push others past the cap,
    so this runs until no queue is over.
    """
    fan_out: FanOut | None = getattr(transport, "fan_out", None)
    pending = actions
    while pending:
        over: list[ClientId] = []
        for action in pending:
            if isinstance(action, Send):
                data = action.data
                # Checked before queuing, so a queue never holds more than the cap (§10).
                limit = max_output_buffer - len(data)
                if fan_out is not None:
                    cut = fan_out(data, action.to, action.exclude, limit)
                else:
                    cut = fan_out_each(transport, data, action.to, action.exclude, limit)
                if cut and action.frame_ends:
                    # Frame by frame, a client is cut off at the first frame it cannot take:
                    # the departures come in that order (each left counts those remaining).
                    ends = action.frame_ends
                    cut.sort(
                        key=lambda client: bisect_right(ends, max_output_buffer - transport.buffered(client))
                    )
                over += cut
            else:
                transport.close(action.client, action.flush)
        pending = []
        for client in over:
            pending.extend(core.slow_consumer(client))
