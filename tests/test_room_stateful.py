"""The room core against a model, in random stories (spec §6-§12): joins, says, whos, pings,
garbage, stalled readers and every kind of departure, in both codecs.

Hypothesis drives a ServerCore run in memory (MemoryServer), and a model written
from the spec predicts, after every step, exactly which frames each connection is sent, in
which order, and which connections are closed and how. Clients read what is queued for
them after each step, except those a rule has stalled: they fall behind until they are
drained or cut off as slow consumers (§10), under an output cap small enough for that to
happen within a few steps. Each story ends with a shutdown (§12).

The model follows the one liberty the server takes: the frames one read causes are queued
together, and only then are the connections they pushed over the cap cut off, so a
``left{slow_consumer}`` comes after every frame caused by the same read.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from protocol import (
    SERVER_MESSAGES,
    Codec,
    Error,
    FrameDecoder,
    Hello,
    Joined,
    Left,
    Member,
    Message,
    Ping,
    Pong,
    Relayed,
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
    FATAL,
    HEADER_SIZE,
    MIN_MAX_FRAME,
    PROTOCOL_VERSION,
    SHUTDOWN_REASON,
    CodecName,
    ErrorCode,
)
from protocol.names import name_skeleton
from protocol.server import ClientId, ServerCore
from protocol.server.memory import MemoryServer

MAX_FRAME = MIN_MAX_FRAME
#: Room for two frames of max_frame: a stalled client passes it after a few long messages (§10).
OUTPUT_CAP = 2 * (HEADER_SIZE + MAX_FRAME)
SERVER_NAME = "model/1"
HOSTS = ["127.0.0.1", "::1", "192.0.2.7"]

#: Valid names (§6.1), several of which collide once folded (§6.2).
VALID_NAMES = [
    "alice",
    "Alice",
    "\uff21\uff2c\uff29\uff23\uff25",  # fullwidth ALICE
    "\u0430lice",  # Cyrillic a: taken while alice is present, by its skeleton
    "bob",
    "b0b",  # taken while bob is present, by its skeleton
    "stra\u00dfe",
    "STRASSE",
    "FILE",
    "x2",
    "\u00fc",
    "u\u0308",
    "carol",
    # 122 octets of UTF-8 each: a few of them fill a roster, which is then truncated (§8.5).
    *[f"{chr(0x20000) * 30}{n:02d}" for n in range(12)],
]
LONG_NAMES = VALID_NAMES[-12:]
INVALID_NAMES = [
    "",
    "a" * 33,
    "al ice",
    "al@ice",
    "al\u200dice",
    "al\tice",
    "\ue000",
    "al\u2028ice",
    "alice\ufe0f",
    "\u3164",
    "\ufb01le",
    "\uff20home",
]


def name_key(name: str) -> str:
    """§6.2, written out: NFKC(casefold(NFKC(name)))."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())


def same_name(first: str, second: str) -> bool:
    """§6.2: equal keys or equal skeleton keys (the skeleton is the confusables table's)."""
    return name_key(first) == name_key(second) or name_skeleton(first) == name_skeleton(second)


#: Short texts, texts that fill a stalled reader's queue, texts whose say fits max_frame but whose
#: relay may not (§8.4), and texts too long to send at all (§3.2).
texts = (
    st.text(max_size=30)
    | st.text(min_size=240, max_size=300)
    | st.integers(950, 1010).map(lambda n: "x" * n)
    | st.text(min_size=900, max_size=1100)
)


@dataclass(eq=False)
class Conn:
    """The model of one connection."""

    client: ClientId
    host: str
    name: str | None = None  # set once welcomed
    expected: list[Message] = field(default_factory=list)  # queued for it, not yet read
    unread: int = 0  # octets queued and not read, against the cap (§10)
    stalled: bool = False
    connected_at: float = 0.0
    #: None while open; then how it ended: "flush" (§9.4), "drop" (§10) or "lost" (a socket error).
    end: str | None = None


#: A frame the client sends, as the offset in the stream at which the server acts on it and
#: what the model expects it to cause.
Step = tuple[int, Callable[[], None]]


class RoomMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.codec: Codec = get_codec(CodecName.MSGPACK)
        self.core = self.new_core()
        self.memory = MemoryServer(self.core)
        self.conns: list[Conn] = []
        self.members: list[Conn] = []  # in join order
        self.over: list[Conn] = []  # pushed over the cap during the current read

    @initialize(codec=st.sampled_from(list(CodecName)))
    def choose_codec(self, codec: CodecName) -> None:
        self.codec = get_codec(codec)
        self.core = self.new_core()
        self.memory = MemoryServer(self.core)

    def new_core(self) -> ServerCore:
        return ServerCore(
            self.codec, server_name=SERVER_NAME, max_frame=MAX_FRAME, max_output_buffer=OUTPUT_CAP
        )

    # --- the model ------------------------------------------------------------------------

    def size(self, message: Message) -> int:
        return len(encode_message(self.codec, message)) - HEADER_SIZE

    def deliver(self, message: Message, to: list[Conn]) -> None:
        """Queue ``message`` for each of ``to``, unless that would pass the cap (§10)."""
        frame = HEADER_SIZE + self.size(message)
        for conn in to:
            if conn.unread > OUTPUT_CAP - frame:
                self.over.append(conn)
            else:
                conn.expected.append(message)
                conn.unread += frame

    def fan_out(self, message: Message, sender: Conn) -> None:
        self.deliver(message, [member for member in self.members if member is not sender])

    def cut_off(self) -> None:
        """After a read: cut off whoever went over the cap; each left can push others over (§10)."""
        while self.over:
            over, self.over = self.over, []
            for conn in over:
                if conn.end is not None:
                    continue
                conn.end, conn.expected, conn.unread = "drop", [], 0
                if conn in self.members:
                    self.members.remove(conn)
                    left = Left(str(conn.name), conn.host, len(self.members), "slow_consumer")
                    self.deliver(left, list(self.members))

    def refuse(self, conn: Conn, code: str) -> None:
        fatal = FATAL[ErrorCode(code)]
        self.deliver(Error(code, "", fatal), [conn])
        if fatal:
            self.depart(conn, "error", "flush")

    def depart(self, conn: Conn, reason: str, end: str) -> None:
        conn.end = end
        if conn in self.members:
            self.members.remove(conn)
            self.fan_out(Left(str(conn.name), conn.host, len(self.members), reason), conn)

    def roster(self) -> Roster:
        """§8.5: every member in join order, or the longest prefix that fits."""
        everyone = tuple(Member(str(m.name), m.host) for m in self.members)
        if self.size(Roster(everyone, False)) <= MAX_FRAME:
            return Roster(everyone, False)
        count = len(everyone)
        while self.size(Roster(everyone[:count], True)) > MAX_FRAME:
            count -= 1
        return Roster(everyone[:count], True)

    # --- driving the core -----------------------------------------------------------------


    def send(self, conn: Conn, data: bytes, steps: list[Step], pieces: int = 1) -> None:
        """``data`` from ``conn``'s client in ``pieces`` reads; each step's effect is expected
        in the read that completes its frame."""
        size = max(1, -(-len(data) // pieces))
        start = 0
        for end in [*range(size, len(data), size), len(data)]:
            while steps and steps[0][0] <= end:
                if conn.end is None:  # after a fatal error, later frames are not processed
                    steps[0][1]()
                steps = steps[1:]
            self.memory.receive(conn.client, data[start:end])
            self.cut_off()
            start = end

    def send_frames(
        self, conn: Conn, frames: list[tuple[bytes, Callable[[], None]]], pieces: int = 1
    ) -> None:
        steps: list[Step] = []
        offset = 0
        for frame, effect in frames:
            if len(frame) - HEADER_SIZE > MAX_FRAME:
                # Refused from its header alone (§3.2): fatal, so nothing after it counts.
                steps.append((offset + HEADER_SIZE, lambda: self.refuse(conn, "frame_too_large")))
                break
            offset += len(frame)
            steps.append((offset, effect))
        self.send(conn, b"".join(frame for frame, _ in frames), steps, pieces)

    def open_conns(self) -> list[Conn]:
        return [conn for conn in self.conns if conn.end is None]

    def readers(self) -> list[Conn]:
        """Open connections that read: the ones rules act through.

        A stalled client only receives. The model could not account for what an error sent
        to it would add to its queue: the text of an error's message is the server's own.
        """
        return [conn for conn in self.conns if conn.end is None and not conn.stalled]

    def speakers(self) -> list[Conn]:
        return [conn for conn in self.members if not conn.stalled]

    # --- rules ------------------------------------------------------------------------------

    @rule(hosts=st.lists(st.sampled_from(HOSTS), min_size=1, max_size=3), data=st.data())
    def join(self, hosts: list[str], data: st.DataObject) -> None:
        """New connections, most of which join at once; the others (None) have not yet."""
        for host in hosts:
            self.conns.append(Conn(self.memory.connect(host), host, connected_at=self.memory.now))
            name = data.draw(
                st.none()
                | st.sampled_from(VALID_NAMES)
                | st.sampled_from(LONG_NAMES)
                | st.sampled_from(LONG_NAMES)
            )
            if name is not None:
                self.send_hello(self.conns[-1], name, 1)

    @precondition(lambda self: self.readers())
    @rule(data=st.data(), name=st.sampled_from(VALID_NAMES + INVALID_NAMES), pieces=st.integers(1, 3))
    def hello(self, data: st.DataObject, name: str, pieces: int) -> None:
        self.send_hello(data.draw(st.sampled_from(self.readers())), name, pieces)

    def send_hello(self, conn: Conn, name: str, pieces: int) -> None:
        def effect() -> None:
            if conn.name is not None:
                self.refuse(conn, "already_joined")
            elif name in INVALID_NAMES:
                self.refuse(conn, "name_invalid")
            elif any(same_name(str(m.name), name) for m in self.members):
                self.refuse(conn, "name_taken")
            else:
                conn.name = name
                self.members.append(conn)
                count = len(self.members)
                codec = self.codec.name.value
                self.deliver(
                    Welcome(name, conn.host, count, MAX_FRAME, SERVER_NAME, PROTOCOL_VERSION, codec), [conn]
                )
                self.fan_out(Joined(name, conn.host, count), conn)

        self.send_frames(conn, [(encode_message(self.codec, Hello(name)), effect)], pieces)

    @precondition(lambda self: self.speakers())
    @rule(data=st.data(), says=st.lists(texts, min_size=1, max_size=4), pieces=st.integers(1, 3))
    def say(self, data: st.DataObject, says: list[str], pieces: int) -> None:
        """Several says in one write are handled in order (§11)."""
        conn = data.draw(st.sampled_from(self.speakers()))

        def effect(text: str) -> Callable[[], None]:
            def expect() -> None:
                assert conn.name is not None
                if self.size(Relayed(conn.name, conn.host, text)) > MAX_FRAME:
                    self.refuse(conn, "text_too_long")
                else:
                    self.fan_out(Relayed(conn.name, conn.host, text), conn)

            return expect

        frames = [(encode_message(self.codec, Say(text)), effect(text)) for text in says]
        self.send_frames(conn, frames, pieces)

    @precondition(lambda self: self.speakers())
    @rule(data=st.data())
    def who(self, data: st.DataObject) -> None:
        conn = data.draw(st.sampled_from(self.speakers()))
        self.send_frames(
            conn, [(encode_message(self.codec, Who()), lambda: self.deliver(self.roster(), [conn]))]
        )

    @precondition(lambda self: self.speakers())
    @rule(data=st.data(), token=texts)
    def ping(self, data: st.DataObject, token: str) -> None:
        conn = data.draw(st.sampled_from(self.speakers()))

        def effect() -> None:
            if self.size(Pong(token)) > MAX_FRAME:
                self.refuse(conn, "text_too_long")
            else:
                self.deliver(Pong(token), [conn])

        self.send_frames(conn, [(encode_message(self.codec, Ping(token)), effect)])

    @precondition(lambda self: self.readers())
    @rule(
        data=st.data(),
        kind=st.sampled_from(["list", "no-type", "nonsense", "say-int", "hello-int", "say", "who", "ping"]),
    )
    def garbage(self, data: st.DataObject, kind: str) -> None:
        """A frame that decodes but is not a valid message for the state (§7.1, §7.3)."""
        conn = data.draw(st.sampled_from(self.readers()))
        member = conn.name is not None
        value: Any
        if kind in ("say", "who", "ping") and not member:
            value, code = {"type": kind, "text": "t", "token": "t"}, "hello_required"
        elif kind in ("say", "who", "ping"):
            value, code = {"type": kind}, "bad_message" if kind != "who" else "unknown_type"
            if kind == "who":
                value = {"type": "WHO"}
        elif kind == "list":
            value, code = [1, 2], "bad_message"
        elif kind == "no-type":
            value, code = {"name": "x"}, "bad_message"
        elif kind == "nonsense":
            value, code = {"type": "nonsense"}, "unknown_type" if member else "hello_required"
        elif kind == "say-int":
            value, code = {"type": "say", "text": 5}, "bad_message" if member else "hello_required"
        else:
            value, code = {"type": "hello", "name": 5}, "already_joined" if member else "bad_message"
        self.send_frames(conn, [(encode_frame(self.codec.encode(value)), lambda: self.refuse(conn, code))])

    @precondition(lambda self: self.readers())
    @rule(
        data=st.data(),
        how=st.sampled_from(
            ["undecodable", "empty", "oversize", "eof", "eof-mid-frame", "reset", "hello-timeout"]
        ),
    )
    def leave(self, data: st.DataObject, how: str) -> None:
        """Every way a connection ends (§3.4, §7.4, §8.7, §9.3)."""
        conn = data.draw(st.sampled_from(self.readers()))
        if how == "oversize":
            header = (MAX_FRAME + 1).to_bytes(4, "big")
            self.send(conn, header, [(HEADER_SIZE, lambda: self.refuse(conn, "frame_too_large"))])
        elif how in ("undecodable", "empty"):
            undecodable = b"\xc1" if self.codec.name == CodecName.MSGPACK else b"\x80\x02cos\nsystem\n."
            frame = encode_frame(b"" if how == "empty" else undecodable)
            self.send_frames(conn, [(frame, lambda: self.refuse(conn, "bad_payload"))])
        elif how in ("eof", "eof-mid-frame"):
            if how == "eof-mid-frame":
                self.send(conn, encode_message(self.codec, Say("cut short"))[:5], [])
            self.depart(conn, "connection_lost" if how == "eof-mid-frame" else "quit", "flush")
            self.memory.receive(conn.client, b"")
            self.cut_off()
        elif how == "reset":
            # A socket error: the server has closed the socket and tells the core.
            self.depart(conn, "connection_lost", "lost")
            conn.expected, conn.unread = [], 0
            self.memory.lost(conn.client)
            self.cut_off()
        else:
            # The clock reaches the hello timeout of every connection made until now: fatal
            # before welcome, in the order they were accepted, and nothing after (§7.4).
            self.memory.advance(DEFAULT_HELLO_TIMEOUT)
            for other in self.conns:
                due = other.connected_at + DEFAULT_HELLO_TIMEOUT <= self.memory.now
                if due and other.end is None and other.name is None:
                    self.refuse(other, "hello_timeout")
            self.cut_off()

    @precondition(lambda self: self.readers())
    @rule(data=st.data())
    def stall(self, data: st.DataObject) -> None:
        """The client stops reading: what is sent to it queues up (§10)."""
        conn = data.draw(st.sampled_from(self.readers()))
        conn.stalled = True

    @precondition(lambda self: any(conn.stalled for conn in self.open_conns()))
    @rule(data=st.data())
    def drain(self, data: st.DataObject) -> None:
        conn = data.draw(st.sampled_from([c for c in self.open_conns() if c.stalled]))
        conn.stalled = False
        self.read(conn)

    # --- checks -------------------------------------------------------------------------------

    def read(self, conn: Conn) -> None:
        """What the client can read now is exactly what the model expects, in order."""
        decoder = FrameDecoder(MAX_FRAME)
        decoder.feed(self.memory.read(conn.client))
        received = []
        while (payload := decoder.next_frame()) is not None:
            received.append(decode_message(self.codec, payload, SERVER_MESSAGES))
        assert decoder.buffered == 0
        # An error's message is for humans (§9.1): code and fatal are compared.
        got = [Error(m.code, "", m.fatal) if isinstance(m, Error) else m for m in received]
        assert got == conn.expected, f"client {conn.client} ({conn.name}):\n got {got}\nwant {conn.expected}"
        conn.expected, conn.unread = [], 0

    @invariant()
    def everyone_reads_what_the_model_says(self) -> None:
        for conn in self.conns:
            if (conn.end is None and not conn.stalled) or conn.end == "flush":
                self.read(conn)

    @invariant()
    def the_room_is_the_model_room(self) -> None:
        assert list(self.core.room.members) == [m.client for m in self.members]
        assert [seat.name for seat in self.core.room.seats()] == [m.name for m in self.members]
        open_clients = [conn.client for conn in self.open_conns()]
        assert all(client in self.core.rules for client in open_clients)
        assert self.core.rules.connections == len(open_clients)
        closed = {conn.client: conn.end == "flush" for conn in self.conns if conn.end in ("flush", "drop")}
        assert self.memory.closed == closed
        assert self.memory.peak <= OUTPUT_CAP

    def teardown(self) -> None:
        """Shutdown (§12): every connection still open is told and closed with a flush, or cut
        off if the notice would pass its cap (§10); no left."""
        still_open = self.open_conns()
        self.deliver(Shutdown(SHUTDOWN_REASON), still_open)
        # A queue too full for the notice is cut off, like any other frame that would pass
        # the cap (§10), without left: the rules have already forgotten every connection.
        too_full, self.over = set(self.over), []
        self.memory.shutdown()
        for conn in still_open:
            if conn in too_full:
                assert self.memory.closed.get(conn.client) is False
            else:
                assert self.memory.closed.get(conn.client) is True
                self.read(conn)
        assert self.core.rules.connections == 0
        assert len(self.core.room) == 0


RoomMachine.TestCase.settings = settings(
    max_examples=120,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestRoomStories = RoomMachine.TestCase
