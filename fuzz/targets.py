"""Fuzz targets: each takes one input of arbitrary bytes and raises only on a real finding.

A finding is either an exception that is not one of the package's own errors (a
:class:`protocol.ProtocolError`), or a broken rule of the spec, raised as :class:`Finding`:
a frame over ``max_frame`` sent, an internal error, outcomes that depend on how the bytes
were split, a message the state does not allow, a value no codec may produce.

Every target runs the input under several configurations (both codecs, both roles or
states, several ways of splitting the stream), so that one input found by any engine
exercises all of them; a small ``max_frame`` (``MIN_MAX_FRAME``) makes every limit
reachable with short inputs. The targets are deterministic and keep no state between calls.
"""

from __future__ import annotations

import logging
import pickletools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import construct as cs

from protocol import (
    CLIENT_MESSAGES,
    NEED_DATA,
    SERVER_MESSAGES,
    Codec,
    Connection,
    ConnectionClosed,
    Error,
    FrameDecoder,
    Hello,
    Joined,
    Left,
    Member,
    Message,
    MsgpackCodec,
    PickleCodec,
    Ping,
    Pong,
    ProtocolError,
    Relayed,
    RemoteProtocolError,
    Role,
    Roster,
    Say,
    Shutdown,
    State,
    Welcome,
    decode_message,
    encode_frame,
    encode_message,
    get_codec,
)
from protocol.constants import (
    DEFAULT_MAX_FRAME,
    DEFAULT_MAX_OUTPUT_BUFFER,
    FATAL,
    HEADER_SIZE,
    MIN_MAX_FRAME,
    PROTOCOL_VERSION,
    ErrorCode,
    LeaveReason,
)
from protocol.frame import FRAME, build_frame, parse_frame
from protocol.messages import from_wire
from protocol.names import name_problem
from protocol.server import ClientId, ServerCore
from protocol.server.memory import MemoryServer


class Finding(AssertionError):
    """The input made the package break a rule of the spec."""


def check(condition: bool, what: str) -> None:
    """Raise :class:`Finding` unless ``condition`` holds (unlike ``assert``, never optimised away)."""
    if not condition:
        raise Finding(what)


#: The limit every target but the frame decoder's runs with: the smallest a server may use,
#: so that oversized frames, text_too_long and roster truncation are a short input away.
LIMIT: Final = MIN_MAX_FRAME
#: Frame decoder limits: none at all, tiny, the minimum and the default.
FRAME_LIMITS: Final = (0, 9, MIN_MAX_FRAME, DEFAULT_MAX_FRAME)
#: Inputs up to this size are also fed one octet at a time, longer ones 7 octets at a time.
BYTEWISE_UP_TO: Final = 128


def _codecs() -> tuple[Codec, Codec]:
    return MsgpackCodec(), PickleCodec()


def chunkings(data: bytes) -> Iterator[list[bytes]]:
    """Ways to split ``data`` into reads: whole, and in small pieces.

    Nothing a receiver does may depend on where the reads fall (§3, §15.1).
    """
    yield [data]
    if len(data) > 1:
        step = 1 if len(data) <= BYTEWISE_UP_TO else 7
        yield [data[i : i + step] for i in range(0, len(data), step)]


def _check_error_fits(codec: Codec, exc: ProtocolError) -> None:
    """The error a server would send for ``exc`` fits the smallest max_frame (§3.2)."""
    try:
        frame = encode_message(codec, Error(exc.code.value, exc.message, exc.fatal))
    except ProtocolError as failure:
        raise Finding(f"the error for {exc!r} cannot be encoded in {codec.name}: {failure!r}") from None
    check(
        len(frame) - HEADER_SIZE <= LIMIT,
        f"the error for {exc.code.value} is {len(frame) - HEADER_SIZE} octets, over {LIMIT}: "
        f"message {exc.message[:120]!r}...",
    )


# --- framing -----------------------------------------------------------------------------------

FrameOutcome = tuple[list[bytes], str | None, int]


def _frames_by_schema(data: bytes, max_frame: int) -> FrameOutcome:
    """What a receiver must yield for ``data``, worked out with the normative construct schema."""
    payloads: list[bytes] = []
    position = 0
    while len(data) - position >= HEADER_SIZE:
        length = cs.Int32ub.parse(data[position : position + HEADER_SIZE])
        if length > max_frame:
            return payloads, ErrorCode.FRAME_TOO_LARGE.value, 0
        end = position + HEADER_SIZE + length
        if end > len(data):
            break
        frame = data[position:end]
        payload = bytes(FRAME.parse(frame).payload)
        check(parse_frame(frame) == payload, "parse_frame disagrees with the schema")
        check(build_frame(payload) == frame == encode_frame(payload), "a payload does not rebuild its frame")
        payloads.append(payload)
        position = end
    return payloads, None, len(data) - position


def _frames_by_decoder(chunks: list[bytes], max_frame: int) -> FrameOutcome:
    decoder = FrameDecoder(max_frame)
    payloads: list[bytes] = []
    for chunk in chunks:
        decoder.feed(chunk)
        try:
            while (payload := decoder.next_frame()) is not None:
                payloads.append(payload)
        except RemoteProtocolError as exc:
            check(exc.code is ErrorCode.FRAME_TOO_LARGE, f"framing raised {exc!r}")
            check(decoder.buffered == 0, "a failed decoder keeps its buffer")
            for _ in range(2):
                # The stream cannot be resynchronised: more input changes nothing.
                decoder.feed(b"\x00\x00\x00\x00")
                try:
                    decoder.next_frame()
                except RemoteProtocolError as again:
                    check(again.code is ErrorCode.FRAME_TOO_LARGE, f"then raised {again!r}")
                else:
                    raise Finding("a failed decoder yielded a frame") from None
            return payloads, exc.code.value, 0
        # Drained: what is kept is one incomplete frame (§3.2), plus at most the last read.
        check(decoder.buffered < HEADER_SIZE + max_frame, f"{decoder.buffered} octets buffered")
        kept = len(decoder._buffer) - decoder.buffered
        check(kept <= len(chunk), f"{kept} consumed octets kept after a read of {len(chunk)}")
    return payloads, None, decoder.buffered


def fuzz_frame_decoder(data: bytes) -> None:
    """FrameDecoder against the construct schema, for several limits and every way of reading."""
    for max_frame in FRAME_LIMITS:
        expected = _frames_by_schema(data, max_frame)
        for chunks in chunkings(data):
            outcome = _frames_by_decoder(chunks, max_frame)
            check(
                outcome == expected,
                f"max_frame {max_frame}, reads of {[len(c) for c in chunks][:8]}: decoder "
                f"{_describe(outcome)}, schema {_describe(expected)}",
            )


def _describe(outcome: FrameOutcome) -> str:
    payloads, error, rest = outcome
    return f"{len(payloads)} payloads, error {error}, {rest} octets left"


# --- codecs ------------------------------------------------------------------------------------

_SCALARS = (str, bytes, int, float, bool, type(None))
_HASHABLE = (str, bytes)


def _check_plain(value: Any, codec: Codec) -> None:
    """A decoded payload holds only containers and scalars, and hashes only str and bytes (§4.2, §4.3).

    A pickle can share and nest objects (memo), so each object is visited once.
    """
    pickled = codec.name == "pickle"
    containers: tuple[type, ...] = (dict, list, tuple, set, frozenset) if pickled else (dict, list)
    scalars: tuple[type, ...] = (*_SCALARS, bytearray) if pickled else _SCALARS
    seen: set[int] = set()
    pending = [value]
    while pending:
        item = pending.pop()
        kind = type(item)
        if kind in scalars:
            continue
        check(kind in containers, f"{codec.name} decoded a {kind.__name__}")
        if id(item) in seen:
            continue
        seen.add(id(item))
        if kind is dict or kind is set or kind is frozenset:
            for key in item:
                check(type(key) in _HASHABLE, f"{codec.name} hashed a {type(key).__name__}")
        pending.extend(item.values() if kind is dict else item)


def _decode_as_message(codec: Codec, value: Any, accepted: dict[str, type[Message]]) -> None:
    try:
        message = from_wire(value, accepted)
    except RemoteProtocolError as exc:
        check(
            exc.code in (ErrorCode.BAD_MESSAGE, ErrorCode.UNKNOWN_TYPE),
            f"from_wire raised {exc!r}",
        )
        _check_error_fits(codec, exc)
        return
    # A message read from the wire goes back out unchanged (§5.1 rule 7).
    frame = encode_message(codec, message)
    again = from_wire(codec.decode(parse_frame(frame)), accepted)
    check(again == message, f"{message!r} came back as {again!r}")


#: The value limit of the codecs below: small, so that fuzz inputs cross it (§4.2 rule 9, §4.3 rule 8).
OBJECTS: Final = 8


def _msgpack_values(value: Any) -> int:
    """How many msgpack values ``value`` was decoded from: itself, each key and item, at any depth."""
    count = 0
    pending = [value]
    while pending:
        item = pending.pop()
        count += 1
        if type(item) is dict:
            count += len(item)  # the keys: str or bytes, each one value
            pending.extend(item.values())
        elif type(item) is list:
            pending.extend(item)
    return count


def _holds_map(value: Any) -> bool:
    pending = [value]
    while pending:
        item = pending.pop()
        if type(item) is dict:
            return True
        if type(item) is list:
            pending.extend(item)
    return False


def _count_note(value: Any) -> str:
    return f"a payload of {_msgpack_values(value)} decoded values and no map, over {OBJECTS}"


def _check_limited(codec: Codec, data: bytes, value: Any) -> None:
    """A codec with a value limit decodes ``data`` (which decodes without one) if and only if
    it holds at most the limit: opcodes for pickle, values for msgpack."""
    limited = get_codec(codec.name, max_objects=OBJECTS)
    if codec.name == "pickle":
        within: bool | None = sum(1 for _ in pickletools.genops(data)) <= OBJECTS
    else:
        count = _msgpack_values(value)
        # A map that repeats a key decodes to fewer values than the payload holds, so only
        # "over" is certain from the decoded value.
        within = False if count > OBJECTS else None
    try:
        limited.decode(data)
    except RemoteProtocolError as exc:
        check(exc.code is ErrorCode.BAD_PAYLOAD, f"the limited {codec.name} raised {exc!r}")
        check(within is not True, f"the limited {codec.name} refused a payload within {OBJECTS}: {exc!r}")
        # Refused with fewer decoded values than the limit: only repeated keys can explain it.
        check(within is False or _holds_map(value), f"msgpack refused {_count_note(value)}")
        _check_error_fits(codec, exc)
        return
    check(within is not False, f"the limited {codec.name} decoded a payload over {OBJECTS}")


def fuzz_codecs(data: bytes) -> None:
    """``data`` as one payload, decoded by both codecs and read as a message of either direction;
    with a value limit, decoded exactly when it holds no more values than the limit."""
    for codec in _codecs():
        try:
            value = codec.decode(data)
        except RemoteProtocolError as exc:
            check(exc.code is ErrorCode.BAD_PAYLOAD, f"{codec.name} decode raised {exc!r}")
            _check_error_fits(codec, exc)
            refused = False
            try:
                get_codec(codec.name, max_objects=OBJECTS).decode(data)
            except RemoteProtocolError:
                refused = True
            check(refused, f"the limited {codec.name} decoded what the unlimited one refused")
            continue
        _check_plain(value, codec)
        _check_limited(codec, data, value)
        _decode_as_message(codec, value, CLIENT_MESSAGES)
        _decode_as_message(codec, value, SERVER_MESSAGES)


# --- one connection ----------------------------------------------------------------------------

HELLO: Final = Hello("alice")


def _welcome(name: str, codec: Codec) -> Welcome:
    return Welcome(name, "192.0.2.1", 1, LIMIT, "fuzz/1", PROTOCOL_VERSION, codec.name.value)


#: Where each run of fuzz_connection starts: role and state.
STARTS: Final = (
    (Role.SERVER, State.AWAIT_HELLO),
    (Role.SERVER, State.ACTIVE),
    (Role.CLIENT, State.AWAIT_HELLO),
    (Role.CLIENT, State.AWAIT_WELCOME),
    (Role.CLIENT, State.ACTIVE),
)


def _connection(codec: Codec, role: Role, start: State) -> Connection:
    connection = Connection(role, codec=codec, max_frame=LIMIT)
    if role is Role.SERVER and start is State.ACTIVE:
        connection.receive_data(encode_message(codec, HELLO))
        check(connection.next_event() == HELLO, "the server side did not read hello")
        connection.send(_welcome("alice", codec))
    elif role is Role.CLIENT and start is not State.AWAIT_HELLO:
        connection.send(HELLO)
        if start is State.ACTIVE:
            welcome = _welcome("alice", codec)
            connection.receive_data(encode_message(codec, welcome))
            check(connection.next_event() == welcome, "the client side did not read welcome")
    check(connection.state is start, f"set-up reached {connection.state}, not {start}")
    return connection


def _sent(connection: Connection, message: Message) -> None:
    """Send ``message``; the only acceptable refusal is a frame over the limit in force."""
    try:
        frame = connection.send(message)
    except ProtocolError as exc:
        check(exc.code is ErrorCode.FRAME_TOO_LARGE, f"sending {message.TYPE} raised {exc!r}")
        return
    check(len(frame) - HEADER_SIZE <= connection.send_limit, f"sent a {message.TYPE} over the limit")


def _server_reacts(connection: Connection, before: State, message: Message) -> None:
    check(message.TYPE in CLIENT_MESSAGES, f"a server read a {message.TYPE}")
    if isinstance(message, Hello):
        check(before is State.AWAIT_HELLO, f"hello delivered in {before}")
        if name_problem(message.name) is None:
            _sent(connection, _welcome(message.name, connection.codec))
            check(connection.state is State.ACTIVE, "welcome sent but not ACTIVE")
        else:
            _sent(connection, Error(ErrorCode.NAME_INVALID.value, "bad name", False))
    else:
        check(before is State.ACTIVE, f"{message.TYPE} delivered in {before}")
        if isinstance(message, Ping):
            _sent(connection, Pong(message.token))
        elif isinstance(message, Say):
            _sent(connection, Relayed("alice", "192.0.2.1", message.text))


def _client_reacts(connection: Connection, before: State, message: Message) -> None:
    check(message.TYPE in SERVER_MESSAGES, f"a client read a {message.TYPE}")
    if isinstance(message, Shutdown) or (isinstance(message, Error) and message.fatal):
        check(connection.state is State.CLOSED, f"{message.TYPE} did not close")
    elif isinstance(message, Welcome):
        check(before is State.AWAIT_WELCOME, f"welcome delivered in {before}")
        check(connection.send_limit == message.max_frame, "the welcome's max_frame does not bind sends")
    elif before is not State.ACTIVE:
        # A non-fatal error refuses the hello in flight, if any: the client may send another.
        check(isinstance(message, Error), f"{message.TYPE} in {before}")
        check(connection.state is State.AWAIT_HELLO, f"a non-fatal error in {before} did not allow a hello")
    if connection.state is State.ACTIVE:
        _sent(connection, Say("x" * 16))


ConnectionOutcome = list[tuple[str, Any]]


def _drive_connection(codec: Codec, role: Role, start: State, chunks: list[bytes]) -> ConnectionOutcome:
    connection = _connection(codec, role, start)
    react = _server_reacts if role is Role.SERVER else _client_reacts
    outcome: ConnectionOutcome = []
    for chunk in [*chunks, b""]:
        connection.receive_data(chunk)
        # Each event or error consumes a frame (4 octets at least); more calls than that is a loop.
        budget = connection.buffered // HEADER_SIZE + 2
        while True:
            budget -= 1
            check(budget >= 0, "next_event keeps returning without consuming input")
            before = connection.state
            try:
                event = connection.next_event()
            except RemoteProtocolError as exc:
                _check_error_fits(codec, exc)
                outcome.append(("error", (exc.code, exc.fatal)))
                if not exc.fatal:
                    check(connection.state is before, f"non-fatal {exc.code.value} changed the state")
                    continue
                check(connection.state is State.CLOSED, f"fatal {exc.code.value} left {connection.state}")
                try:
                    connection.next_event()
                except RemoteProtocolError as again:
                    check(again is exc, "a failed connection raised a different error")
                else:
                    raise Finding("a failed connection delivered an event") from None
                return outcome
            if event is NEED_DATA:
                break
            if isinstance(event, ConnectionClosed):
                check(chunk == b"", "end of stream reported before it came")
                check(connection.state is State.CLOSED, "end of stream did not close")
                outcome.append(("closed", event.clean))
                return outcome
            check(isinstance(event, Message), f"next_event returned {event!r}")
            assert isinstance(event, Message)
            react(connection, before, event)
            outcome.append(("event", event))
    raise Finding("end of stream was never reported")


def fuzz_connection(data: bytes) -> None:
    """``data`` as the stream a Connection receives, in each role and state, however it is split."""
    for codec in _codecs():
        for role, start in STARTS:
            outcomes = [_drive_connection(codec, role, start, chunks) for chunks in chunkings(data)]
            for other in outcomes[1:]:
                check(
                    other == outcomes[0],
                    f"{codec.name} {role.name} from {start.name}: the outcome depends on how the "
                    f"stream is split: {outcomes[0][:6]} vs {other[:6]}",
                )


# --- the server core ---------------------------------------------------------------------------

ALICE: Final = Member("alice", "192.0.2.1")
BOB: Final = Member("bob", "::1")
MALLORY_HOST: Final = "198.51.100.7"


class _InternalErrors(logging.Handler):
    """Keeps the tracebacks ServerCore logs when it turns an exception into internal_error."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.tracebacks: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.tracebacks.append(logging.Formatter().formatException(record.exc_info))


@dataclass
class _Room:
    """A core with two quiet members, alice and bob, and mallory, who sends the input."""

    codec: Codec
    core: ServerCore = field(init=False)
    memory: MemoryServer = field(init=False)
    members: dict[ClientId, Member] = field(default_factory=dict)
    mallory: ClientId = 0

    def __post_init__(self) -> None:
        self.core = ServerCore(self.codec, server_name="fuzz/1", max_frame=LIMIT)
        self.memory = MemoryServer(self.core)
        for member in (ALICE, BOB):
            client = self.memory.connect(member.host)
            self.feed(client, encode_message(self.codec, Hello(member.name)))
            self.members[client] = member
        self.mallory = self.memory.connect(MALLORY_HOST)

    def feed(self, client: ClientId, data: bytes) -> None:
        seen = len(self.memory.directives)
        self.memory.receive(client, data)
        for _, target in self.memory.directives[seen:]:
            check(target == client, f"input from {client} closed client {target}")
        check(self.memory.peak <= DEFAULT_MAX_OUTPUT_BUFFER, "an outbox passed the output cap")

    def queued(self) -> dict[ClientId, bytes]:
        """What every client has queued and not yet read."""
        clients = [*self.members, self.mallory]
        return {c: b"".join(outbox.frames) for c in clients if (outbox := self.core.outbox(c)) is not None}

    def take(self, client: ClientId) -> list[Message]:
        """Everything queued for ``client`` as messages; every frame must be a valid one (§3.2, §5)."""
        decoder = FrameDecoder(LIMIT)
        decoder.feed(self.memory.read(client))
        messages: list[Message] = []
        try:
            while (payload := decoder.next_frame()) is not None:
                messages.append(decode_message(self.codec, payload, SERVER_MESSAGES))
        except ProtocolError as exc:
            raise Finding(f"the server queued an invalid frame for client {client}: {exc!r}") from None
        check(decoder.buffered == 0, f"the server queued a partial frame for client {client}")
        for message in messages:
            check(
                not (isinstance(message, Error) and message.code == ErrorCode.INTERNAL_ERROR),
                f"internal_error sent to client {client}",
            )
        return messages


@dataclass
class _Verdict:
    """What mallory's input did, in terms both runs of one input must agree on."""

    queued: dict[ClientId, bytes]
    closed: dict[ClientId, bool]


def _frames_in(data: bytes) -> tuple[int, bool]:
    """How many frames ``data`` holds up to a framing error (counting it), and whether it ends mid-frame."""
    decoder = FrameDecoder(LIMIT)
    decoder.feed(data)
    count = 0
    try:
        while decoder.next_frame() is not None:
            count += 1
    except RemoteProtocolError:
        return count + 1, False
    return count, decoder.buffered != 0


def _serve_input(codec: Codec, joined: bool, chunks: list[bytes]) -> _Verdict:
    room = _Room(codec)
    mallory = room.mallory
    name = "mallory" if joined else None
    if joined:
        room.feed(mallory, encode_message(codec, Hello("mallory")))
        check(isinstance(room.take(mallory)[0], Welcome), "mallory was not welcomed")
    for client in room.members:
        room.take(client)
    for chunk in [*chunks, b""]:
        room.feed(mallory, chunk)
        if mallory not in room.core.rules:
            break
    check(mallory not in room.core.rules, "mallory is still served after its end of stream")
    check(room.memory.closed == {mallory: True}, f"closes: {room.memory.closed}")
    verdict = _Verdict(room.queued(), dict(room.memory.closed))
    frames, mid_frame = _frames_in(b"".join(chunks))
    name, fatal = _check_mallory_hears(room.take(mallory), name, frames)
    expected_reason = (
        LeaveReason.ERROR if fatal else LeaveReason.CONNECTION_LOST if mid_frame else LeaveReason.QUIT
    )
    streams = [room.take(client) for client in room.members]
    check(streams[0] == streams[1], "alice and bob heard different things")
    _check_member_hears(streams[0], joined, name, expected_reason.value)
    check(len(room.core.room) == len(room.members), "the room does not hold exactly alice and bob")
    return verdict


def _check_mallory_hears(heard: list[Message], name: str | None, frames: int) -> tuple[str | None, bool]:
    """Mallory hears only what its state allows (§7.1), at most one error per frame (§7.3)."""
    errors = 0
    fatal = False
    for message in heard:
        check(not fatal, f"{message.TYPE} sent after a fatal error")
        if isinstance(message, Error):
            errors += 1
            fatal = message.fatal
            check(FATAL[ErrorCode(message.code)] is message.fatal, f"{message.code}, fatal {message.fatal}")
        elif isinstance(message, Welcome):
            check(name is None, "a second welcome")
            name = message.name
            check(message.clients == 3 and message.host == MALLORY_HOST, f"welcome {message!r}")
        else:
            check(name is not None, f"{message.TYPE} sent before welcome")
            if isinstance(message, Roster):
                assert name is not None
                expected = (ALICE, BOB, Member(name, MALLORY_HOST))
                check(message == Roster(expected, False), f"roster {message!r}")
            else:
                check(isinstance(message, Pong), f"mallory was sent a {message.TYPE}")
    check(errors <= frames, f"{errors} errors for {frames} frames")
    return name, fatal


def _check_member_hears(heard: list[Message], joined: bool, name: str | None, reason: str) -> None:
    """A bystander hears mallory join at most once, its messages, then its departure (§8, §11)."""
    present = joined
    departed = False
    for message in heard:
        check(not departed, f"{message.TYPE} after mallory left")
        if isinstance(message, Joined):
            check(not present, "mallory joined twice")
            check(message == Joined(str(name), MALLORY_HOST, 3), f"{message!r}")
            present = True
        elif isinstance(message, Relayed):
            check(present and message.name == name and message.host == MALLORY_HOST, f"{message!r}")
        elif isinstance(message, Left):
            check(present, "left for a non-member")
            check(message == Left(str(name), MALLORY_HOST, 2, reason), f"{message!r}, reason {reason}")
            departed = True
        else:
            raise Finding(f"a bystander was sent a {message.TYPE}")
    check(departed == (present or joined), "mallory's departure was not announced")


def fuzz_server_core(data: bytes) -> None:
    """``data`` as what one connection sends a ServerCore with two members, joined or not first.

    Checks every frame the core queues for anyone (valid, within max_frame, allowed in the
    recipient's state), the departure and its reason, and that the octets queued and the
    closes do not depend on how the input was split.
    """
    errors = _InternalErrors()
    logger = logging.getLogger("protocol.server")
    logger.addHandler(errors)
    try:
        for codec in _codecs():
            for joined in (False, True):
                verdicts = []
                for chunks in chunkings(data):
                    try:
                        verdicts.append(_serve_input(codec, joined, chunks))
                    except Finding as finding:
                        if errors.tracebacks:
                            raise Finding(f"{finding}\n{errors.tracebacks[0]}") from None
                        raise
                for other in verdicts[1:]:
                    check(other == verdicts[0], f"{codec.name}: the core's output depends on read sizes")
    finally:
        logger.removeHandler(errors)


#: The targets by name, for ``python -m fuzz``.
TARGETS: Final[dict[str, Callable[[bytes], None]]] = {
    "frame_decoder": fuzz_frame_decoder,
    "codecs": fuzz_codecs,
    "connection": fuzz_connection,
    "server_core": fuzz_server_core,
}

__all__ = [
    "TARGETS",
    "Finding",
    "chunkings",
    "fuzz_codecs",
    "fuzz_connection",
    "fuzz_frame_decoder",
    "fuzz_server_core",
]
