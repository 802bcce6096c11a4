"""One connection's state machine (spec §7), both roles: every message type in every state,
sent and received, plus end of stream, limits and errors."""

from __future__ import annotations

from collections.abc import Callable
from itertools import cycle, pairwise
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import (
    NEED_DATA,
    Connection,
    ConnectionClosed,
    Error,
    Hello,
    Joined,
    Left,
    LocalProtocolError,
    Member,
    Message,
    MsgpackCodec,
    Ping,
    Pong,
    Relayed,
    RemoteProtocolError,
    Role,
    Roster,
    Say,
    Shutdown,
    State,
    Welcome,
    Who,
    encode_frame,
    encode_message,
)
from protocol.constants import DEFAULT_MAX_FRAME, FATAL, HEADER_SIZE, CodecName, ErrorCode

WELCOME = Welcome(
    name="alice",
    host="127.0.0.1",
    clients=1,
    max_frame=DEFAULT_MAX_FRAME,
    server="test/1",
    proto=1,
    codec="msgpack",
)

#: One message of every type; errors both fatal and not.
SAMPLES: dict[str, Message] = {
    "hello": Hello("alice"),
    "say": Say("hi"),
    "who": Who(),
    "ping": Ping("t-1"),
    "welcome": WELCOME,
    "joined": Joined("bob", "::1", 2),
    "message": Relayed("bob", "::1", "hi alice"),
    "left": Left("bob", "::1", 1, "quit"),
    "roster": Roster((Member("alice", "127.0.0.1"),), truncated=False),
    "pong": Pong("t-1"),
    "error": Error("name_taken", "the name is in use", fatal=False),
    "fatal_error": Error("bad_payload", "not msgpack", fatal=True),
    "shutdown": Shutdown("server shutting down"),
}
CLIENT_TYPES = ("hello", "say", "who", "ping")
SERVER_TYPES = tuple(key for key in SAMPLES if key not in CLIENT_TYPES)

AWAIT_HELLO, AWAIT_WELCOME, ACTIVE, CLOSED = (
    State.AWAIT_HELLO,
    State.AWAIT_WELCOME,
    State.ACTIVE,
    State.CLOSED,
)
HELLO_REQUIRED, ALREADY_JOINED = ErrorCode.HELLO_REQUIRED, ErrorCode.ALREADY_JOINED
UNKNOWN_TYPE, BAD_MESSAGE = ErrorCode.UNKNOWN_TYPE, ErrorCode.BAD_MESSAGE


def frame(message: Message) -> bytes:
    return encode_message(MsgpackCodec(), message)


def longest_fitting(make: Callable[[str], Message], limit: int) -> str:
    """The longest run of "x" for which ``make`` gives a payload of at most ``limit`` octets."""
    low, high = 0, limit
    while low < high:
        middle = (low + high + 1) // 2
        if len(frame(make("x" * middle))) - HEADER_SIZE <= limit:
            low = middle
        else:
            high = middle - 1
    return "x" * low


def server_in(state: State, **options: Any) -> Connection:
    """A server-side connection brought to ``state`` the way a real one gets there."""
    connection = Connection(Role.SERVER, **options)
    if state in (ACTIVE, CLOSED):
        connection.receive_data(frame(Hello("alice")))
        assert connection.next_event() == Hello("alice")
        connection.send(WELCOME)
    if state is CLOSED:
        connection.send(Shutdown("server shutting down"))
    assert connection.state is state
    return connection


def client_in(state: State, **options: Any) -> Connection:
    connection = Connection(Role.CLIENT, **options)
    if state is not AWAIT_HELLO:
        connection.send(Hello("alice"))
    if state in (ACTIVE, CLOSED):
        connection.receive_data(frame(WELCOME))
        assert connection.next_event() == WELCOME
    if state is CLOSED:
        connection.receive_data(frame(Shutdown("bye")))
        assert connection.next_event() == Shutdown("bye")
    assert connection.state is state
    return connection


class _Transparent:
    """A codec stand-in that turns every payload into a hello naming the payload's hex."""

    name = CodecName.MSGPACK
    max_objects: int | None = None

    def encode(self, value: dict[str, Any]) -> bytes:
        raise AssertionError("not for sending")

    def decode(self, payload: bytes) -> Any:
        return {"type": "hello", "name": payload.hex()}


def transparent_server() -> Connection:
    """A server connection that reports raw payloads, to observe framing through a Connection."""
    return Connection(Role.SERVER, codec=_Transparent())


# --- the tables (§7.1, §7.2) -----------------------------------------------------------------

# What a server does with each received type: None delivers it, a code is the error raised.
SERVER_RECEIVES: dict[State, dict[str, ErrorCode | None]] = {
    AWAIT_HELLO: {key: None if key == "hello" else HELLO_REQUIRED for key in SAMPLES},
    ACTIVE: {
        **{key: UNKNOWN_TYPE for key in SERVER_TYPES},
        "hello": ALREADY_JOINED,
        "say": None,
        "who": None,
        "ping": None,
    },
}

# What a server may send: the state it moves to, or the code of the LocalProtocolError.
SERVER_SENDS: dict[State, dict[str, State | ErrorCode]] = {
    AWAIT_HELLO: {
        **{key: UNKNOWN_TYPE for key in CLIENT_TYPES},
        **{key: HELLO_REQUIRED for key in ("joined", "message", "left", "roster", "pong")},
        "welcome": ACTIVE,
        "error": AWAIT_HELLO,
        "fatal_error": CLOSED,
        "shutdown": CLOSED,
    },
    ACTIVE: {
        **{key: UNKNOWN_TYPE for key in CLIENT_TYPES},
        **{key: ACTIVE for key in ("joined", "message", "left", "roster", "pong", "error")},
        "welcome": ALREADY_JOINED,
        "fatal_error": CLOSED,
        "shutdown": CLOSED,
    },
}

CLIENT_SENDS: dict[State, dict[str, State | ErrorCode]] = {
    AWAIT_HELLO: {**{key: HELLO_REQUIRED for key in SAMPLES}, "hello": AWAIT_WELCOME},
    AWAIT_WELCOME: {key: HELLO_REQUIRED for key in SAMPLES},
    ACTIVE: {
        **{key: UNKNOWN_TYPE for key in SERVER_TYPES},
        "hello": ALREADY_JOINED,
        "say": ACTIVE,
        "who": ACTIVE,
        "ping": ACTIVE,
    },
}

# What a client does with each received type: the state it moves to (the message is
# delivered), or the code of the RemoteProtocolError.
_ENDINGS: dict[str, State | ErrorCode] = {"fatal_error": CLOSED, "shutdown": CLOSED}
CLIENT_RECEIVES: dict[State, dict[str, State | ErrorCode]] = {
    AWAIT_HELLO: {
        **{key: UNKNOWN_TYPE for key in CLIENT_TYPES},
        **{key: BAD_MESSAGE for key in SERVER_TYPES},
        "error": AWAIT_HELLO,
        **_ENDINGS,
    },
    AWAIT_WELCOME: {
        **{key: UNKNOWN_TYPE for key in CLIENT_TYPES},
        **{key: BAD_MESSAGE for key in SERVER_TYPES},
        "welcome": ACTIVE,
        "error": AWAIT_HELLO,
        **_ENDINGS,
    },
    ACTIVE: {
        **{key: UNKNOWN_TYPE for key in CLIENT_TYPES},
        **{key: ACTIVE for key in SERVER_TYPES},
        "welcome": BAD_MESSAGE,
        **_ENDINGS,
    },
}


def cells(table: dict[State, dict[str, Any]]) -> list[Any]:
    return [
        pytest.param(state, key, expected, id=f"{state.name.lower()}-{key}")
        for state, row in table.items()
        for key, expected in row.items()
    ]


@pytest.mark.parametrize("table", [SERVER_RECEIVES, SERVER_SENDS, CLIENT_SENDS, CLIENT_RECEIVES])
def test_every_table_covers_every_message_type(table: dict[State, dict[str, Any]]) -> None:
    for row in table.values():
        assert set(row) == set(SAMPLES)


@pytest.mark.parametrize(("state", "key", "expected"), cells(SERVER_RECEIVES))
def test_server_receiving(state: State, key: str, expected: ErrorCode | None) -> None:
    connection = server_in(state)
    connection.receive_data(frame(SAMPLES[key]))
    if expected is None:
        assert connection.next_event() == SAMPLES[key]
        assert connection.state is state
        return
    with pytest.raises(RemoteProtocolError) as info:
        connection.next_event()
    assert info.value.code is expected
    assert connection.state is (CLOSED if FATAL[expected] else state)


@pytest.mark.parametrize("role", [Role.SERVER, Role.CLIENT])
@pytest.mark.parametrize("key", SAMPLES)
def test_nothing_is_delivered_once_closed(role: Role, key: str) -> None:
    connection = server_in(CLOSED) if role is Role.SERVER else client_in(CLOSED)
    connection.receive_data(frame(SAMPLES[key]))
    assert connection.next_event() is NEED_DATA
    connection.receive_data(b"")
    assert connection.next_event() == ConnectionClosed(clean=True)


@pytest.mark.parametrize(("state", "key", "expected"), cells(SERVER_SENDS))
def test_server_sending(state: State, key: str, expected: State | ErrorCode) -> None:
    connection = server_in(state)
    if isinstance(expected, State):
        assert connection.send(SAMPLES[key]) == frame(SAMPLES[key])
        assert connection.state is expected
        return
    with pytest.raises(LocalProtocolError) as info:
        connection.send(SAMPLES[key])
    assert info.value.code is expected
    assert connection.state is state


@pytest.mark.parametrize(("state", "key", "expected"), cells(CLIENT_SENDS))
def test_client_sending(state: State, key: str, expected: State | ErrorCode) -> None:
    connection = client_in(state)
    if isinstance(expected, State):
        assert connection.send(SAMPLES[key]) == frame(SAMPLES[key])
        assert connection.state is expected
        return
    with pytest.raises(LocalProtocolError) as info:
        connection.send(SAMPLES[key])
    assert info.value.code is expected
    assert connection.state is state


@pytest.mark.parametrize(("state", "key", "expected"), cells(CLIENT_RECEIVES))
def test_client_receiving(state: State, key: str, expected: State | ErrorCode) -> None:
    connection = client_in(state)
    connection.receive_data(frame(SAMPLES[key]))
    if isinstance(expected, State):
        assert connection.next_event() == SAMPLES[key]
        assert connection.state is expected
        return
    with pytest.raises(RemoteProtocolError) as info:
        connection.next_event()
    assert info.value.code is expected
    assert connection.state is state


@pytest.mark.parametrize("role", [Role.SERVER, Role.CLIENT])
@pytest.mark.parametrize("key", SAMPLES)
def test_nothing_can_be_sent_once_closed(role: Role, key: str) -> None:
    connection = server_in(CLOSED) if role is Role.SERVER else client_in(CLOSED)
    with pytest.raises(LocalProtocolError):
        connection.send(SAMPLES[key])
    assert connection.state is CLOSED


# --- errors --------------------------------------------------------------------------------


def test_fatal_error_closes_and_is_raised_again_on_every_later_call() -> None:
    connection = server_in(ACTIVE)
    connection.receive_data(encode_frame(b"") + frame(Ping("never")))
    for _ in range(3):
        with pytest.raises(RemoteProtocolError) as info:
            connection.next_event()
        assert info.value.code is ErrorCode.BAD_PAYLOAD
        assert info.value.fatal
    assert connection.state is CLOSED


def test_non_fatal_error_leaves_the_connection_reading_on() -> None:
    connection = server_in(ACTIVE)
    connection.receive_data(encode_frame(b"\x91\x01") + frame(Say("after")))
    with pytest.raises(RemoteProtocolError) as info:
        connection.next_event()
    assert info.value.code is BAD_MESSAGE
    assert not info.value.fatal
    assert connection.next_event() == Say("after")
    assert connection.state is ACTIVE


def test_hello_with_an_ill_typed_name_in_active_is_already_joined_not_bad_message() -> None:
    connection = server_in(ACTIVE)
    connection.receive_data(encode_frame(b"\x82\xa4type\xa5hello\xa4name\x2a"))
    with pytest.raises(RemoteProtocolError) as info:
        connection.next_event()
    assert info.value.code is ALREADY_JOINED


def test_say_with_an_ill_typed_field_before_hello_is_hello_required() -> None:
    connection = server_in(AWAIT_HELLO)
    connection.receive_data(encode_frame(b"\x82\xa4type\xa3say\xa4text\x05"))
    with pytest.raises(RemoteProtocolError) as info:
        connection.next_event()
    assert info.value.code is HELLO_REQUIRED


def test_received_frame_over_the_limit_is_fatal_before_its_payload_arrives() -> None:
    connection = server_in(ACTIVE, max_frame=1024)
    connection.receive_data((1025).to_bytes(4, "big"))
    with pytest.raises(RemoteProtocolError) as info:
        connection.next_event()
    assert info.value.code is ErrorCode.FRAME_TOO_LARGE
    assert connection.state is CLOSED
    assert connection.buffered == 0


def test_sending_a_frame_over_max_frame_is_refused_locally() -> None:
    connection = server_in(ACTIVE, max_frame=1024)
    token = longest_fitting(Pong, 1024)
    assert len(connection.send(Pong(token))) == HEADER_SIZE + 1024
    with pytest.raises(LocalProtocolError) as info:
        connection.send(Pong(token + "x"))
    assert info.value.code is ErrorCode.FRAME_TOO_LARGE


def test_client_sends_within_the_welcome_max_frame_and_keeps_its_own_receive_limit() -> None:
    connection = client_in(AWAIT_WELCOME)
    connection.receive_data(frame(Welcome("alice", "::1", 1, 2048, "test/1", 1, "msgpack")))
    assert isinstance(connection.next_event(), Welcome)
    assert connection.send_limit == 2048
    assert connection.max_frame == DEFAULT_MAX_FRAME  # §3.2: what it accepts stays its own
    text = longest_fitting(Say, 2048)
    assert len(connection.send(Say(text))) == HEADER_SIZE + 2048
    with pytest.raises(LocalProtocolError) as info:
        connection.send(Say(text + "x"))
    assert info.value.code is ErrorCode.FRAME_TOO_LARGE
    assert connection.state is ACTIVE  # a refused send changes nothing


def test_client_refuses_a_frame_over_its_own_limit_even_if_the_server_advertised_more() -> None:
    connection = client_in(AWAIT_WELCOME, max_frame=1024)
    connection.receive_data(frame(Welcome("alice", "::1", 1, 1 << 20, "test/1", 1, "msgpack")))
    assert isinstance(connection.next_event(), Welcome)
    connection.receive_data(frame(Relayed("bob", "::1", "x" * 2000)))
    with pytest.raises(RemoteProtocolError) as info:
        connection.next_event()
    assert info.value.code is ErrorCode.FRAME_TOO_LARGE


def test_an_oversized_welcome_is_refused_without_changing_the_state() -> None:
    connection = server_in(AWAIT_HELLO, max_frame=1024)
    with pytest.raises(LocalProtocolError):
        connection.send(Welcome("a", "h", 1, 1024, "s" * 2000, 1, "msgpack"))
    assert connection.state is AWAIT_HELLO


def test_client_receiving_unknown_type_is_a_non_fatal_error_it_can_ignore() -> None:
    connection = client_in(ACTIVE)
    connection.receive_data(encode_frame(b"\x81\xa4type\xa6future") + frame(Pong("p")))
    with pytest.raises(RemoteProtocolError) as info:
        connection.next_event()
    assert info.value.code is UNKNOWN_TYPE
    assert not info.value.fatal
    assert connection.next_event() == Pong("p")


# --- order and end of stream (§3.4) -------------------------------------------------------------


def test_frames_pipelined_in_one_read_are_delivered_in_order() -> None:
    connection = server_in(AWAIT_HELLO)
    connection.receive_data(frame(Hello("alice")) + frame(Say("one")) + frame(Who()) + frame(Ping("p")))
    assert connection.next_event() == Hello("alice")
    connection.send(WELCOME)
    assert [connection.next_event() for _ in range(3)] == [Say("one"), Who(), Ping("p")]
    assert connection.next_event() is NEED_DATA


@pytest.mark.parametrize(
    ("tail", "clean"),
    [
        (b"", True),
        (b"\x00\x00", False),
        (b"\x00\x00\x00\x05", False),
        (b"\x00\x00\x00\x05abc", False),
    ],
    ids=["at-boundary", "partial-header", "header-only", "partial-payload"],
)
def test_frames_before_eof_are_delivered_then_the_kind_of_eof(tail: bytes, clean: bool) -> None:
    connection = transparent_server()
    connection.receive_data(encode_frame(b"one") + encode_frame(b"") + tail)
    connection.receive_data(b"")
    assert connection.next_event() == Hello(b"one".hex())
    assert connection.next_event() == Hello("")
    assert connection.next_event() == ConnectionClosed(clean=clean)
    assert connection.state is CLOSED
    # End of stream stays reported.
    assert connection.next_event() == ConnectionClosed(clean=clean)


def test_truncated_frame_then_eof_is_an_unclean_close() -> None:
    connection = server_in(ACTIVE)
    connection.receive_data(frame(Say("cut short"))[:-3])
    assert connection.next_event() is NEED_DATA
    connection.receive_data(b"")
    assert connection.next_event() == ConnectionClosed(clean=False)


def test_eof_is_reported_only_after_the_buffered_frames() -> None:
    connection = server_in(ACTIVE)
    connection.receive_data(frame(Say("last words")))
    connection.receive_data(b"")
    assert connection.next_event() == Say("last words")
    assert connection.next_event() == ConnectionClosed(clean=True)


def test_client_sees_the_server_close() -> None:
    connection = client_in(ACTIVE)
    connection.receive_data(frame(Joined("bob", "::1", 2)))
    connection.receive_data(b"")
    assert connection.next_event() == Joined("bob", "::1", 2)
    assert connection.next_event() == ConnectionClosed(clean=True)
    assert connection.state is CLOSED


@settings(max_examples=200, deadline=None)
@given(
    texts=st.lists(st.text(max_size=40), min_size=1, max_size=30),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=10),
    takes=st.lists(st.integers(min_value=0, max_value=5), min_size=1, max_size=20),
)
def test_buffered_is_what_was_received_less_the_events_returned(
    texts: list[str], cuts: list[int], takes: list[int]
) -> None:
    connection = server_in(ACTIVE)
    stream = b"".join(frame(Say(text)) for text in texts)
    edges = sorted({0, len(stream), *(cut % (len(stream) + 1) for cut in cuts)})
    received = returned = 0
    for (start, end), take in zip(pairwise(edges), cycle(takes), strict=False):
        connection.receive_data(stream[start:end])
        received += end - start
        for _ in range(take):
            if connection.next_event() is NEED_DATA:
                break
            returned += connection.last_size
            assert connection.buffered == received - returned
        assert connection.buffered == received - returned
    while connection.next_event() is not NEED_DATA:
        returned += connection.last_size
    assert returned == received == len(stream)
    assert connection.buffered == 0
