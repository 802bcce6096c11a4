"""One side of one connection, sans I/O (spec/PROTOCOL.md §7).

Bytes in, events out: :meth:`Connection.receive_data` then :meth:`Connection.next_event`
until it returns :data:`NEED_DATA`. Messages in, bytes out: :meth:`Connection.send`.

Every state decision is a lookup in the tables of :mod:`protocol.states`. Beyond them, in
either state a payload that is not a map with a string ``type``, or a known type with bad
fields, is ``bad_message`` (non-fatal); a frame over the limit is ``frame_too_large`` and an
undecodable payload ``bad_payload`` (both fatal). After a fatal error or shutdown, sent or
received, or the end of the stream, the connection is CLOSED.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum, auto
from typing import Final

from .codecs import Codec, MsgpackCodec
from .constants import DEFAULT_MAX_FRAME, HEADER_SIZE, ErrorCode
from .errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from .frame import FrameDecoder, encode_frame
from .logtext import escape
from .messages import (
    CLIENT_MESSAGES,
    SERVER_MESSAGES,
    Error,
    Message,
    Relayed,
    Welcome,
    from_wire,
)
from .states import (
    CLIENT_RECEIVES,
    CLIENT_SENDS,
    FATAL_ERROR,
    OTHER,
    SERVER_RECEIVES,
    SERVER_SENDS,
    State,
    rule,
)


class Role(Enum):
    CLIENT = auto()
    SERVER = auto()


class NeedData(Enum):
    """The type of :data:`NEED_DATA`."""

    NEED_DATA = auto()


_SERVER_ACTIVE_RECEIVES: Final = SERVER_RECEIVES[State.ACTIVE]

#: ``next_event`` has nothing complete to return; feed more bytes.
NEED_DATA: Final = NeedData.NEED_DATA


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer ended the stream. ``clean`` is false when it stopped inside a frame (§3.4)."""

    clean: bool


Event = Message | ConnectionClosed | NeedData

#: msgpack's fixstr of length 0.
_EMPTY_MSGPACK_STR = b"\xa0"


def encode_message(codec: Codec, message: Message) -> bytes:
    """One whole frame carrying ``message``: encode once, then send it to any number of peers."""
    return encode_frame(codec.encode(message.to_wire()))


def decode_message(codec: Codec, payload: bytes, accepted: Mapping[str, type[Message]]) -> Message:
    """The message a frame's ``payload`` carries, of a type in ``accepted``
    (:data:`~protocol.SERVER_MESSAGES` or :data:`~protocol.CLIENT_MESSAGES`).

    Raises :class:`RemoteProtocolError`: ``bad_payload`` if it does not decode, ``bad_message``
    if it is not such a message.
    """
    return from_wire(codec.decode(payload), accepted)


class RelayEncoder:
    """The frames of ``message{name, host, text}`` for one sender (§8.4).

    Equal to ``encode_message(codec, Relayed(name, host, text))``. With msgpack, whose map is
    its header then each key and value encoded on its own, in order, everything before the
    text is encoded once and only the text on each call.
    """

    __slots__ = ("_codec", "_head", "_host", "_msgpack", "_name")

    def __init__(self, codec: Codec, name: str, host: str) -> None:
        self._codec = codec
        self._name = name
        self._host = host
        self._msgpack = codec if isinstance(codec, MsgpackCodec) else None
        self._head = b""
        if self._msgpack is not None:
            empty = self._msgpack.encode(Relayed(name, host, "").to_wire())
            assert empty.endswith(_EMPTY_MSGPACK_STR)  # the text comes last (§4.2, §5.4.3)
            self._head = empty[: -len(_EMPTY_MSGPACK_STR)]

    def frame(self, text: str) -> bytes:
        if self._msgpack is None:
            return encode_message(self._codec, Relayed(self._name, self._host, text))
        return encode_frame(self._head + self._msgpack.encode_str(text))


class Connection:
    """The protocol state of one connection, for either role."""

    def __init__(self, role: Role, *, codec: Codec | None = None, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.role = role
        self.codec: Codec = codec if codec is not None else MsgpackCodec()
        self.state = State.AWAIT_HELLO
        self._decoder = FrameDecoder(max_frame)
        # Complete payloads taken from the decoder in one go, how many have been handled, and
        # the octets of those not handled yet (headers included): kept, not summed on each
        # ask, since a server asks after every batch and one read can hold thousands.
        self._payloads: list[bytes] = []
        self._handled = 0
        self._unhandled = 0
        self._send_limit = max_frame
        self._accepted = CLIENT_MESSAGES if role is Role.SERVER else SERVER_MESSAGES
        self._eof = False
        self._failure: RemoteProtocolError | None = None
        #: Octets of the frame whose event ``next_event`` returned last, header included.
        self.last_size = 0

    @property
    def max_frame(self) -> int:
        """The largest payload accepted from the peer."""
        return self._decoder.max_frame

    @property
    def send_limit(self) -> int:
        """The largest payload this side may send: our own limit, or the server's once welcomed."""
        return self._send_limit

    @property
    def buffered(self) -> int:
        """Received bytes not yet returned as an event."""
        return self._unhandled + self._decoder.buffered

    @property
    def partial(self) -> int:
        """Octets of a frame begun but not complete, once every complete one was returned."""
        return self._decoder.buffered

    # --- bytes in, events out ----------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed received bytes; ``b""`` means the peer ended the stream."""
        if data:
            self._decoder.feed(data)
        else:
            self._eof = True

    def next_event(self) -> Event:
        """The next event, or :data:`NEED_DATA`.

        Raises :class:`RemoteProtocolError` for a violation by the peer; the connection goes
        on after a non-fatal one and is CLOSED after a fatal one, which later calls raise again.
        """
        if self._failure is not None:
            raise self._failure
        if self.state is State.CLOSED and not self._eof:
            return NEED_DATA
        try:
            while True:
                if self._handled < len(self._payloads):
                    payload = self._payloads[self._handled]
                    self._handled += 1
                    self.last_size = size = HEADER_SIZE + len(payload)
                    self._unhandled -= size
                else:
                    self._payloads = payloads = self._decoder.frames()
                    self._handled = 0
                    if payloads:
                        self._unhandled = HEADER_SIZE * len(payloads) + sum(map(len, payloads))
                        continue
                    if self._eof:
                        self.state = State.CLOSED
                        return ConnectionClosed(clean=self._decoder.buffered == 0)
                    return NEED_DATA
                if self.state is not State.CLOSED:
                    return self._receive(self.codec.decode(payload))
                # Closed by a sent shutdown or fatal error: later frames are discarded, not delivered.
        except RemoteProtocolError as exc:
            if exc.fatal:
                self.state = State.CLOSED
                self._failure = exc
            raise

    def _receive(self, value: object) -> Message:
        if self.role is Role.SERVER:
            if isinstance(value, dict) and type(value.get("type")) is str:
                # The type is judged against the state before its fields are (§7.3).
                kind: str = value["type"]
                # rule(SERVER_RECEIVES, ...) inlined, ACTIVE first: this runs for every message a
                # server reads, and an Enum's hash is a Python-level call.
                state = self.state
                rules = _SERVER_ACTIVE_RECEIVES if state is State.ACTIVE else SERVER_RECEIVES[state]
                verdict = rules.get(kind) or rules[OTHER]
                if verdict.refuse is not None:
                    why = verdict.why.format(type=f"'{escape(kind, 64)}'")
                    raise RemoteProtocolError(verdict.refuse, why)
            return from_wire(value, self._accepted)
        message = from_wire(value, self._accepted)
        verdict = rule(CLIENT_RECEIVES, self.state, _event(message))
        if verdict.refuse is not None:
            raise RemoteProtocolError(verdict.refuse, verdict.why.format(type=message.TYPE))
        if verdict.to is not None:
            self.state = verdict.to
            if isinstance(message, Welcome):
                # What we accept stays our own limit (§3.2); what we send must fit the server's.
                self._send_limit = message.max_frame
        return message

    # --- messages in, bytes out --------------------------------------------------------

    def send(self, message: Message) -> bytes:
        """The frame for ``message``; raises :class:`LocalProtocolError` if the state forbids it."""
        if self.state is State.CLOSED:
            raise LocalProtocolError(ErrorCode.BAD_MESSAGE, "the connection is closed")
        data = encode_message(self.codec, message)
        if len(data) - HEADER_SIZE > self._send_limit:
            raise LocalProtocolError(ErrorCode.FRAME_TOO_LARGE, f"{message.TYPE} does not fit max_frame")
        if self.role is Role.SERVER:
            if message.TYPE not in SERVER_MESSAGES:
                raise LocalProtocolError(ErrorCode.UNKNOWN_TYPE, f"a server does not send {message.TYPE}")
            table = SERVER_SENDS
        else:
            table = CLIENT_SENDS
        verdict = rule(table, self.state, _event(message))
        if verdict.refuse is not None:
            raise LocalProtocolError(verdict.refuse, verdict.why.format(type=message.TYPE))
        # The state moves only once the frame is known to be sendable.
        if verdict.to is not None:
            self.state = verdict.to
        return data


def _event(message: Message) -> str:
    """The event of ``message`` in the tables of :mod:`protocol.states`."""
    if isinstance(message, Error) and message.fatal:
        return FATAL_ERROR
    return message.TYPE


__all__ = [
    "NEED_DATA",
    "Connection",
    "ConnectionClosed",
    "Event",
    "NeedData",
    "ProtocolError",
    "RelayEncoder",
    "Role",
    "State",
    "decode_message",
    "encode_message",
]
