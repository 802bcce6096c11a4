"""The whole server without sockets (spec §7-§12): ServerCore run in memory (MemoryServer),
from the seed's story (join, talk, list, leave) to every departure and error."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import (
    SERVER_MESSAGES,
    Connection,
    Error,
    FrameDecoder,
    Hello,
    Joined,
    Left,
    Member,
    Message,
    Ping,
    Pong,
    ProtocolError,
    Relayed,
    RemoteProtocolError,
    Role,
    Roster,
    Say,
    Shutdown,
    Welcome,
    Who,
    decode_message,
    encode_frame,
    encode_message,
    get_codec,
)
from protocol.constants import (
    DEFAULT_HELLO_TIMEOUT,
    DEFAULT_MAX_FRAME,
    DEFAULT_MAX_OUTPUT_BUFFER,
    HEADER_SIZE,
    MIN_MAX_FRAME,
    SHUTDOWN_REASON,
    CodecName,
    ErrorCode,
)
from protocol.server import ClientId, Disposal, ServerCore, ServerRules
from protocol.server.memory import MemoryServer


class Harness:
    """A ServerCore run in memory, and clients that read what was queued for them."""

    def __init__(
        self,
        codec: CodecName = CodecName.MSGPACK,
        max_frame: int = DEFAULT_MAX_FRAME,
        max_output_buffer: int = DEFAULT_MAX_OUTPUT_BUFFER,
    ) -> None:
        self.codec = get_codec(codec)
        self.core = ServerCore(
            self.codec, server_name="test/1", max_frame=max_frame, max_output_buffer=max_output_buffer
        )
        self.memory = MemoryServer(self.core)
        self.clients: list[ClientId] = []

    @property
    def closed(self) -> dict[ClientId, bool]:
        return self.memory.closed

    def connect(self, host: str = "127.0.0.1") -> ClientId:
        client = self.memory.connect(host)
        self.clients.append(client)
        return client

    def receive(self, client: ClientId, data: bytes) -> None:
        self.memory.receive(client, data)

    def send(self, client: ClientId, *messages: Message) -> None:
        self.receive(client, b"".join(encode_message(self.codec, message) for message in messages))

    def cut(self, client: ClientId) -> None:
        """What the core does when ``client``'s output would pass the cap (§10)."""
        self.core._carry_out(self.core.rules.slow_consumer(client))
        self.memory.receive(0, b"")  # settles the memory server; client 0 is never a connection

    def read(self, client: ClientId) -> list[Message]:
        """Everything queued for ``client``, decoded; every frame within max_frame."""
        decoder = FrameDecoder(self.core.max_frame)
        decoder.feed(self.memory.read(client))
        messages = []
        while (payload := decoder.next_frame()) is not None:
            messages.append(decode_message(self.codec, payload, SERVER_MESSAGES))
        assert decoder.buffered == 0
        return messages

    def join(self, name: str, host: str = "127.0.0.1") -> ClientId:
        client = self.connect(host)
        self.send(client, Hello(name))
        [welcome] = self.read(client)
        assert isinstance(welcome, Welcome)
        assert welcome.name == name
        return client

    def check(self) -> None:
        """What holds after every story: the cap never passed, no internal error."""
        assert self.memory.peak <= self.core.max_output_buffer
        for client in self.clients:
            for message in self.read(client):
                assert not (isinstance(message, Error) and message.code == ErrorCode.INTERNAL_ERROR)


@pytest.fixture(params=list(CodecName), ids=str)
def codec_name(request: pytest.FixtureRequest) -> CodecName:
    name: CodecName = request.param
    return name


@pytest.fixture
def server(codec_name: CodecName) -> Iterator[Harness]:
    harness = Harness(codec_name)
    yield harness
    harness.check()


# --- joining (§8.2) ----------------------------------------------------------------------------


def test_welcome_tells_the_member_its_name_host_count_and_the_server_limits(
    server: Harness, codec_name: CodecName
) -> None:
    alice = server.connect("192.0.2.7")
    server.send(alice, Hello("Alice"))
    assert server.read(alice) == [
        Welcome(
            name="Alice",
            host="192.0.2.7",
            clients=1,
            max_frame=DEFAULT_MAX_FRAME,
            server="test/1",
            proto=1,
            codec=codec_name.value,
        )
    ]
    bob = server.connect("::1")
    server.send(bob, Hello("bob"))
    [welcome] = server.read(bob)
    assert isinstance(welcome, Welcome)
    assert (welcome.host, welcome.clients) == ("::1", 2)


def test_joined_goes_to_every_other_member_with_the_new_count(server: Harness) -> None:
    alice = server.join("alice", "10.0.0.1")
    bob = server.join("bob", "10.0.0.2")
    carol = server.join("carol", "10.0.0.3")
    assert server.read(alice) == [Joined("bob", "10.0.0.2", 2), Joined("carol", "10.0.0.3", 3)]
    assert server.read(bob) == [Joined("carol", "10.0.0.3", 3)]
    assert server.read(carol) == []


def test_a_connection_that_has_not_joined_hears_nothing(server: Harness) -> None:
    lurker = server.connect()
    alice = server.join("alice")
    server.send(alice, Say("anyone?"))
    assert server.read(lurker) == []


def test_name_taken_is_non_fatal_and_the_hello_can_be_retried(server: Harness) -> None:
    alice = server.join("Alice")
    other = server.connect()
    server.send(other, Hello("\uff41\uff4c\uff49\uff43\uff45"))
    [error] = server.read(other)
    assert isinstance(error, Error)
    assert (error.code, error.fatal) == ("name_taken", False)
    assert server.read(alice) == []
    server.send(other, Hello("bob"))
    assert isinstance(server.read(other)[0], Welcome)
    assert server.read(alice) == [Joined("bob", "127.0.0.1", 2)]


def test_name_invalid_is_non_fatal_and_the_hello_can_be_retried(server: Harness) -> None:
    client = server.connect()
    server.send(client, Hello("al ice"))
    [error] = server.read(client)
    assert isinstance(error, Error)
    assert (error.code, error.fatal) == ("name_invalid", False)
    server.send(client, Hello("alice"))
    assert isinstance(server.read(client)[0], Welcome)


def test_hello_and_say_pipelined_in_one_read_are_handled_in_order(server: Harness) -> None:
    alice = server.join("alice")
    bob = server.connect()
    server.send(bob, Hello("bob"), Say("hi all"))
    assert isinstance(server.read(bob)[0], Welcome)
    assert server.read(alice) == [Joined("bob", "127.0.0.1", 2), Relayed("bob", "127.0.0.1", "hi all")]


# --- talking (§8.4-§8.6, §11) --------------------------------------------------------------------


def test_say_is_relayed_to_every_other_member_and_never_echoed(server: Harness) -> None:
    alice = server.join("alice", "10.0.0.1")
    bob = server.join("bob", "10.0.0.2")
    carol = server.join("carol", "10.0.0.3")
    for client in (alice, bob, carol):
        server.read(client)
    server.send(bob, Say("caf\u00e9 \U0001f600"))
    relayed = Relayed("bob", "10.0.0.2", "caf\u00e9 \U0001f600")
    assert server.read(alice) == [relayed]
    assert server.read(carol) == [relayed]
    assert server.read(bob) == []


def test_says_from_one_sender_arrive_in_the_order_sent(server: Harness) -> None:
    alice = server.join("alice")
    bob = server.join("bob")
    server.read(alice)
    server.send(bob, *(Say(str(n)) for n in range(50)))
    assert [message.text for message in server.read(alice) if isinstance(message, Relayed)] == [
        str(n) for n in range(50)
    ]


def test_empty_text_is_relayed(server: Harness) -> None:
    alice = server.join("alice")
    bob = server.join("bob")
    server.read(alice)
    server.send(bob, Say(""))
    assert server.read(alice) == [Relayed("bob", "127.0.0.1", "")]


def test_who_answers_the_asker_only_with_every_member_in_join_order(server: Harness) -> None:
    carol = server.join("carol", "10.0.0.3")
    alice = server.join("alice", "::1")
    bob = server.join("bob", "10.0.0.2")
    for client in (carol, alice, bob):
        server.read(client)
    server.send(alice, Who())
    expected = Roster(
        (Member("carol", "10.0.0.3"), Member("alice", "::1"), Member("bob", "10.0.0.2")), truncated=False
    )
    assert server.read(alice) == [expected]
    assert server.read(carol) == server.read(bob) == []


@pytest.mark.parametrize("token", ["", "t-1", "\U0001f600 \u00fc\u0308", "x" * 5000])
def test_ping_is_answered_to_the_sender_only_with_the_token_unchanged(server: Harness, token: str) -> None:
    alice = server.join("alice")
    bob = server.join("bob")
    server.read(alice)
    server.send(bob, Ping(token))
    assert server.read(bob) == [Pong(token)]
    assert server.read(alice) == []


def test_a_pong_that_would_not_fit_is_text_too_long() -> None:
    # Protocol 0 stores U+00E9 in one octet, our protocol 2 pong in two: the pong outgrows the ping.
    server = Harness(CodecName.PICKLE, max_frame=MIN_MAX_FRAME)
    alice = server.join("alice")
    token = "\u00e9" * 900
    ping = pickle.dumps({"type": "ping", "token": token}, protocol=0)
    assert len(ping) <= MIN_MAX_FRAME < len(encode_message(server.codec, Pong(token))) - HEADER_SIZE
    server.receive(alice, encode_frame(ping))
    server.send(alice, Ping("small"))
    [error, pong] = server.read(alice)
    assert isinstance(error, Error)
    assert (error.code, error.fatal) == ("text_too_long", False)
    assert pong == Pong("small")
    server.check()


def longest_text(harness: Harness, name: str, host: str) -> str:
    """The longest say text whose relayed message fits max_frame."""
    low, high = 0, harness.core.max_frame
    while low < high:
        middle = (low + high + 1) // 2
        payload = len(encode_message(harness.codec, Relayed(name, host, "x" * middle))) - HEADER_SIZE
        if payload <= harness.core.max_frame:
            low = middle
        else:
            high = middle - 1
    return "x" * low


def test_say_whose_relay_would_not_fit_is_text_too_long_and_relays_nothing(codec_name: CodecName) -> None:
    server = Harness(codec_name, max_frame=MIN_MAX_FRAME)
    alice = server.join("alice")
    bob = server.join("bob")
    server.read(alice)
    text = longest_text(server, "bob", "127.0.0.1")
    server.send(bob, Say(text))
    assert server.read(alice) == [Relayed("bob", "127.0.0.1", text)]
    # One more character: the say itself fits, the message relaying it does not.
    assert len(encode_message(server.codec, Say(text + "x"))) - HEADER_SIZE <= MIN_MAX_FRAME
    server.send(bob, Say(text + "x"), Ping("still here"))
    [error, pong] = server.read(bob)
    assert isinstance(error, Error)
    assert (error.code, error.fatal) == ("text_too_long", False)
    assert pong == Pong("still here")
    assert server.read(alice) == []
    server.check()


def roster_payload(harness: Harness, members: tuple[Member, ...], truncated: bool) -> int:
    return len(encode_message(harness.codec, Roster(members, truncated))) - HEADER_SIZE


def test_roster_that_would_not_fit_is_the_longest_prefix_that_does(codec_name: CodecName) -> None:
    server = Harness(codec_name, max_frame=MIN_MAX_FRAME)
    everyone = []
    for index in range(30):
        name = f"{index:02d}" + "n" * 30
        host = f"2001:db8::{index:x}"
        server.join(name, host)
        everyone.append(Member(name, host))
    asker = server.core.room.members[-1]
    server.read(asker)
    server.send(asker, Who())
    [roster] = server.read(asker)
    assert isinstance(roster, Roster)
    assert roster.truncated
    count = len(roster.members)
    assert roster.members == tuple(everyone[:count])
    assert roster_payload(server, roster.members, True) <= MIN_MAX_FRAME
    assert roster_payload(server, tuple(everyone[: count + 1]), True) > MIN_MAX_FRAME
    assert count >= 5  # §13: MIN_MAX_FRAME holds at least 5 of the longest members


def test_roster_that_fits_exactly_is_not_truncated(codec_name: CodecName) -> None:
    server = Harness(codec_name, max_frame=MIN_MAX_FRAME)
    members: list[Member] = []
    while True:
        candidate = Member(f"m{len(members):03d}", "127.0.0.1")
        if roster_payload(server, (*members, candidate), False) > MIN_MAX_FRAME:
            break
        members.append(candidate)
        server.join(candidate.name, candidate.host)
    asker = server.core.room.members[0]
    server.read(asker)
    server.send(asker, Who())
    assert server.read(asker) == [Roster(tuple(members), truncated=False)]


# --- refusals (§7.3, §9) -----------------------------------------------------------------------------


def error_of(messages: list[Message]) -> tuple[str, bool]:
    [error] = messages
    assert isinstance(error, Error)
    return (error.code, error.fatal)


def test_non_fatal_refusals_keep_the_member_served(server: Harness) -> None:
    alice = server.join("alice")
    server.send(alice, Hello("alice"))
    assert error_of(server.read(alice)) == ("already_joined", False)
    server.receive(alice, encode_frame(server.codec.encode({"type": "nonsense"})))
    assert error_of(server.read(alice)) == ("unknown_type", False)
    server.receive(alice, encode_frame(server.codec.encode({"type": "say", "text": 5})))
    assert error_of(server.read(alice)) == ("bad_message", False)
    server.send(alice, Ping("ok"))
    assert server.read(alice) == [Pong("ok")]


def test_a_server_type_before_hello_is_hello_required_and_fatal(server: Harness) -> None:
    client = server.connect()
    server.send(client, Pong("x"))
    assert error_of(server.read(client)) == ("hello_required", True)
    assert server.closed == {client: True}
    assert client not in server.core.rules  # closing: the protocol is done with it
    assert server.memory.directives == [(Disposal.HALF_CLOSE, client)]


def test_frames_after_a_fatal_error_are_not_processed(server: Harness) -> None:
    alice = server.join("alice")
    bob = server.join("bob")
    server.read(alice)
    server.receive(bob, encode_frame(b"") + encode_message(server.codec, Say("ghost")))
    assert error_of(server.read(bob)) == ("bad_payload", True)
    assert server.read(alice) == [Left("bob", "127.0.0.1", 1, "error")]


def test_oversized_header_from_a_member_is_refused_at_once(server: Harness) -> None:
    alice = server.join("alice")
    bob = server.join("bob")
    server.read(alice)
    server.receive(bob, (DEFAULT_MAX_FRAME + 1).to_bytes(4, "big"))
    assert error_of(server.read(bob)) == ("frame_too_large", True)
    assert server.closed == {bob: True}
    assert server.read(alice) == [Left("bob", "127.0.0.1", 1, "error")]


def test_internal_error_costs_one_connection_and_the_core_keeps_serving(
    server: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = server.join("alice")
    bob = server.join("bob")
    carol = server.join("carol")
    original = ServerRules._handle

    def handle(rules: ServerRules, client: ClientId, state: Any, message: object, actions: Any) -> None:
        if client == bob and isinstance(message, Say):
            raise RuntimeError("a bug")
        original(rules, client, state, message, actions)

    monkeypatch.setattr(ServerRules, "_handle", handle)
    for client in (alice, bob, carol):
        server.read(client)
    server.send(bob, Say("boom"))
    assert error_of(server.read(bob)) == ("internal_error", True)
    assert server.closed == {bob: True}
    assert server.read(alice) == server.read(carol) == [Left("bob", "127.0.0.1", 2, "error")]
    server.send(alice, Say("still up"))
    assert server.read(carol) == [Relayed("alice", "127.0.0.1", "still up")]
    server.send(carol, Who())
    assert server.read(carol) == [
        Roster((Member("alice", "127.0.0.1"), Member("carol", "127.0.0.1")), truncated=False)
    ]


def test_events_for_a_client_the_core_does_not_know_do_nothing(server: Harness) -> None:
    rules = server.core.rules
    assert rules.receive(12345, encode_message(server.codec, Say("hi"))) == []
    assert rules.connection_lost(12345) == []
    assert rules.slow_consumer(12345) == []
    assert rules.hello_timeout(12345) == []
    server.core.receive(12345, b"x", 0.0)
    server.core.sent(12345, 1)
    server.core.connection_lost(12345)
    assert not server.core.has_output


def test_max_frame_below_the_minimum_is_refused() -> None:
    with pytest.raises(ValueError):
        ServerCore(get_codec("msgpack"), server_name="t", max_frame=MIN_MAX_FRAME - 1)


# --- departures (§8.7) ------------------------------------------------------------------------------


@pytest.fixture
def trio(server: Harness) -> tuple[Harness, ClientId, ClientId, ClientId]:
    alice = server.join("alice", "10.0.0.1")
    bob = server.join("bob", "10.0.0.2")
    carol = server.join("carol", "10.0.0.3")
    for client in (alice, bob, carol):
        server.read(client)
    return server, alice, bob, carol


def test_eof_at_a_frame_boundary_is_quit(trio: tuple[Harness, ClientId, ClientId, ClientId]) -> None:
    server, alice, bob, carol = trio
    server.send(bob, Say("bye"))
    server.receive(bob, b"")
    assert server.read(alice) == [Relayed("bob", "10.0.0.2", "bye"), Left("bob", "10.0.0.2", 2, "quit")]
    assert server.closed == {bob: True}
    # The name is free from the departure on.
    server.join("BOB")
    assert server.read(carol)[-1] == Joined("BOB", "127.0.0.1", 3)


def test_eof_mid_frame_is_connection_lost(trio: tuple[Harness, ClientId, ClientId, ClientId]) -> None:
    server, alice, bob, carol = trio
    server.receive(bob, encode_message(server.codec, Say("cut"))[:-1])
    server.receive(bob, b"")
    assert server.read(alice) == server.read(carol) == [Left("bob", "10.0.0.2", 2, "connection_lost")]


def test_connection_lost_is_announced_and_the_count_drops(
    trio: tuple[Harness, ClientId, ClientId, ClientId],
) -> None:
    server, alice, bob, carol = trio
    server.memory.lost(carol)
    assert server.read(alice) == server.read(bob) == [Left("carol", "10.0.0.3", 2, "connection_lost")]
    server.memory.lost(alice)
    assert server.read(bob) == [Left("alice", "10.0.0.1", 1, "connection_lost")]
    assert len(server.core.room) == 1


def test_a_fatal_error_is_sent_flushed_and_announced_as_error(
    trio: tuple[Harness, ClientId, ClientId, ClientId],
) -> None:
    server, alice, bob, carol = trio
    server.receive(bob, encode_frame(b"\xc1"))
    assert server.closed == {bob: True}
    # §9.4: the error is flushed before the half-close, and nothing is queued after it.
    assert server.memory.directives == []
    assert error_of(server.read(bob)) == ("bad_payload", True)
    assert server.memory.directives == [(Disposal.HALF_CLOSE, bob)]
    assert server.read(alice) == server.read(carol) == [Left("bob", "10.0.0.2", 2, "error")]


def test_a_slow_consumer_is_cut_off_unflushed_and_announced(
    trio: tuple[Harness, ClientId, ClientId, ClientId],
) -> None:
    server, alice, bob, carol = trio
    server.cut(bob)
    assert server.closed == {bob: False}
    assert server.memory.directives == [(Disposal.ABORT, bob)]
    assert server.read(alice) == server.read(carol) == [Left("bob", "10.0.0.2", 2, "slow_consumer")]


def test_connections_that_never_joined_leave_silently(server: Harness) -> None:
    alice = server.join("alice")
    quitter, loser, slow, broken = (server.connect() for _ in range(4))
    server.receive(quitter, b"")
    server.memory.lost(loser)
    server.cut(slow)
    server.receive(broken, encode_frame(b""))
    assert server.read(alice) == []
    assert error_of(server.read(broken)) == ("bad_payload", True)
    assert server.closed == {quitter: True, slow: False, broken: True}
    assert server.core.rules.connections == 1
    assert server.core.connections == 2  # broken is draining (§9.4)


def test_hello_timeout_closes_only_connections_that_have_not_joined(server: Harness) -> None:
    alice = server.join("alice")
    idle = server.connect()
    retrying = server.connect()
    server.send(retrying, Hello("bad name"))
    server.read(retrying)
    server.memory.advance(DEFAULT_HELLO_TIMEOUT)
    for client in (idle, retrying):
        assert error_of(server.read(client)) == ("hello_timeout", True)
    assert server.closed == {idle: True, retrying: True}
    assert server.read(alice) == []
    assert server.core.rules.hello_timeout(idle) == []


def test_shutdown_tells_every_connection_and_closes_them_all_without_left(server: Harness) -> None:
    alice = server.join("alice")
    bob = server.join("bob")
    lurker = server.connect()
    server.read(alice)
    server.memory.shutdown()
    for client in (alice, bob, lurker):
        assert server.read(client) == [Shutdown(SHUTDOWN_REASON)]
    assert server.closed == {alice: True, bob: True, lurker: True}
    assert len(server.core.room) == 0
    # Draining now (§9.4 step 4): what they send is discarded, their EOF ends them.
    server.send(alice, Say("late"))
    assert server.read(bob) == []
    for client in (alice, bob, lurker):
        server.receive(client, b"")
    assert server.core.finished


# --- the output cap (§10) ---------------------------------------------------------------------------


def test_a_member_over_the_output_cap_is_cut_off_and_the_others_are_told() -> None:
    server = Harness(max_output_buffer=4096)
    alice = server.join("alice")
    bob = server.join("bob")  # never reads from here on
    carol = server.join("carol")
    server.read(alice)
    for n in range(200):
        server.send(alice, Say(f"message {n:03d} " + "." * 40))
        server.read(carol)
        if bob in server.closed:
            break
    assert server.closed == {bob: False}
    assert bob not in server.core
    assert server.memory.peak <= 4096  # checked before queuing: the cap is never passed
    assert Left("bob", "127.0.0.1", 2, "slow_consumer") in server.read(alice)
    server.send(alice, Say("after"))
    assert server.read(carol)[-1] == Relayed("alice", "127.0.0.1", "after")
    server.check()


def test_slow_consumer_cascade_stops_when_nobody_is_left() -> None:
    # Nobody reads and the cap is just above what each has queued: the first relay pushes
    # the others over, their departures push the rest over, and the core must still settle.
    server = Harness()
    clients = [server.join(name) for name in ("alice", "bob", "carol", "dave")]
    server.core.max_output_buffer = max(server.memory.buffered(client) for client in clients) + 8
    server.send(clients[0], Say("x" * 64))
    assert server.closed == dict.fromkeys(clients, False)
    assert server.core.connections == 0
    assert len(server.core.room) == 0


# --- no input breaks the server (§14.2) ----------------------------------------------------------------

FIELDS = ["type", "name", "text", "token", "members", "truncated", "clients", "host", "code", "fatal"]
TYPES = [*SERVER_MESSAGES, "hello", "say", "who", "ping", "nonsense", ""]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(1 << 63), (1 << 64) - 1)
    | st.floats()
    | st.text(max_size=40)
    | st.text(min_size=200, max_size=900)
    | st.text(st.characters(max_codepoint=0x1F), min_size=50, max_size=300)  # repr makes these 4x longer
    | st.binary(max_size=10)
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=6) | st.binary(max_size=3), children, max_size=4)
    ),
    max_leaves=12,
)
message_like = st.fixed_dictionaries(
    {"type": st.sampled_from(TYPES) | values},
    optional={field: st.text(max_size=40) | values for field in FIELDS[1:]},
)
payloads = (
    st.binary(max_size=64)
    | (values | message_like).map(lambda value: msgpack.packb(value, use_bin_type=True))
    | st.tuples(values | message_like, st.integers(0, pickle.HIGHEST_PROTOCOL)).map(
        lambda v: pickle.dumps(*v)
    )
    | st.tuples(st.integers(0, 5), st.binary(max_size=40)).map(
        lambda v: b"\x80" + bytes([v[0]]) + v[1] + b"."
    )
)
chunks = st.lists(st.binary(max_size=64) | payloads.map(encode_frame), min_size=1, max_size=5)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    codec_name=st.sampled_from(list(CodecName)),
    joined=st.booleans(),
    data=chunks,
    eof=st.booleans(),
)
def test_no_input_makes_a_server_raise_or_break_a_rule(
    codec_name: CodecName, joined: bool, data: list[bytes], eof: bool
) -> None:
    codec = get_codec(codec_name)
    connection = Connection(Role.SERVER, codec=codec, max_frame=MIN_MAX_FRAME)
    if joined:
        connection.receive_data(encode_message(codec, Hello("mallory")))
        connection.next_event()
        connection.send(Welcome("mallory", "::1", 1, MIN_MAX_FRAME, "t", 1, codec_name.value))
    for chunk in [*data, *([b""] if eof else [])]:
        connection.receive_data(chunk)
        for _ in range(100):
            try:
                event = connection.next_event()
            except ProtocolError as exc:
                assert isinstance(exc, RemoteProtocolError)
                if exc.fatal:
                    break
                continue
            if not isinstance(event, Message):
                break

    server = Harness(codec_name, max_frame=MIN_MAX_FRAME)
    bystander = server.join("alice")
    mallory = server.connect("::1")
    if joined:
        server.send(mallory, Hello("mallory"))
    for chunk in [*data, *([b""] if eof else [])]:
        server.receive(mallory, chunk)
    server.read(bystander)
    server.check()
