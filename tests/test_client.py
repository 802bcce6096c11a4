"""The terminal client: its sans-I/O session, pipe mode and (in a pseudo-terminal) interactive mode.

The front-end tests run ``python -m chatwire_client`` as a subprocess against both bundled servers;
every wait is a pexpect expect() on output or a ping/pong barrier on a WirePeer, with timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pexpect
import pytest

from chatwire_client.__main__ import EPILOG
from chatwire_client.link import Link, Server
from chatwire_client.session import ChatSession, ExitStatus, Line, Step, Style, visible
from conformance.serverproc import BUNDLED, ServerProcess, free_port
from conformance.wire import WirePeer
from protocol import (
    CLIENT_MESSAGES,
    Codec,
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
    Relayed,
    Roster,
    Say,
    Shutdown,
    Welcome,
    Who,
    encode_frame,
    encode_message,
)
from protocol.messages import from_wire

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 10.0
SERVERS = sorted(BUNDLED)

# --- the session, without sockets ---------------------------------------------------------

CODEC = MsgpackCodec()


def frames(*messages: Message) -> bytes:
    return b"".join(encode_message(CODEC, m) for m in messages)


def sent(data: bytes) -> list[Message]:
    decoder = FrameDecoder(1 << 20)
    decoder.feed(data)
    out = []
    while (payload := decoder.next_frame()) is not None:
        out.append(from_wire(CODEC.decode(payload), CLIENT_MESSAGES))
    return out


def welcome(name: str = "alice", clients: int = 1, max_frame: int = 1 << 20) -> Welcome:
    return Welcome(name, "127.0.0.1", clients, max_frame, server="test/1", proto=1, codec="msgpack")


def texts(lines: list[Line]) -> list[str]:
    return [line.text for line in lines]


def joined_session(**kwargs: Any) -> ChatSession:
    session = ChatSession(CODEC, **kwargs)
    session.hello("alice")
    session.receive(frames(welcome(clients=3)))
    return session


def test_hello_then_welcome_joins() -> None:
    session = ChatSession(CODEC)
    assert sent(session.hello("alice")) == [Hello("alice")]
    assert not session.hello_answered
    lines = session.receive(frames(welcome(clients=3)))
    assert lines == [Line(Style.STATUS, "* connected as alice@127.0.0.1 — 3 here; server test/1")]
    assert session.joined and session.hello_answered and not session.finished


def test_events_become_lines() -> None:
    session = joined_session()
    lines = session.receive(
        frames(
            Joined("bob", "::1", 4),
            Relayed("bob", "::1", "hi there"),
            Left("bob", "::1", 3, "quit"),
            Left("carol", "10.0.0.2", 2, "connection_lost"),
            Left("dave", "10.0.0.3", 1, "slow_consumer"),
            Left("erin", "10.0.0.4", 1, "something new"),
            Error("text_too_long", "too long", False),
        )
    )
    assert lines == [
        Line(Style.NOTICE, "* bob@::1 joined (4 here)"),
        Line(Style.CHAT, "bob@::1: hi there"),
        Line(Style.NOTICE, "* bob@::1 left (3 here)"),
        Line(Style.NOTICE, "* carol@10.0.0.2 lost their connection (2 here)"),
        Line(Style.NOTICE, "* dave@10.0.0.3 was dropped for reading too slowly (1 here)"),
        Line(Style.NOTICE, "* erin@10.0.0.4 left (something new) (1 here)"),
        Line(Style.ERROR, "error from the server: text_too_long: too long"),
    ]
    assert session.joined


def test_a_frame_split_anywhere_gives_the_same_lines() -> None:
    data = frames(Relayed("bob", "::1", "one"), Relayed("bob", "::1", "two"))
    session = joined_session()
    lines = [line for byte in range(len(data)) for line in session.receive(data[byte : byte + 1])]
    assert texts(lines) == ["bob@::1: one", "bob@::1: two"]


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain words", "plain words"),
        ("café 日本 🙂 a\u00a0b", "café 日本 🙂 a\u00a0b"),  # letters, emoji, a no-break space: untouched
        ("\x1b[2J\x1b]0;pwned\x07", "\\x1b[2J\\x1b]0;pwned\\x07"),  # clear screen, set title
        ("a\rb\nc\td", "a\\rb\\nc\\td"),
        ("\x7f\x85\x9b", "\\x7f\\x85\\x9b"),  # DEL and C1 controls (CSI is 0x9b)
        ("abc\u202edcba\u2066x\u2069", "abc\\u202edcba\\u2066x\\u2069"),  # bidi overrides (Cf)
        ("zero\u200bwidth\u2028line", "zero\\u200bwidth\\u2028line"),
        ("\ud800", "\\ud800"),  # a lone surrogate (pickle can carry one) cannot even be printed
    ],
)
def test_visible_escapes_what_could_drive_a_terminal(text: str, shown: str) -> None:
    assert visible(text) == shown


def test_every_field_from_the_network_is_neutralised() -> None:
    session = ChatSession(CODEC)
    session.hello("alice")
    evil = "\x1b[31m"
    lines = session.receive(
        frames(
            Welcome("alice", evil, 1, 1 << 20, server=evil, proto=1, codec="msgpack"),
            Joined(evil, evil, 2),
            Relayed(evil, evil, evil),
            Left(evil, evil, 1, evil),
            Roster((Member(evil, evil),), False),
            Error(evil, evil, False),
            Shutdown(evil),
        )
    )
    assert len(lines) == 7
    for line in lines:
        assert "\x1b" not in line.text and "\\x1b[31m" in line.text


def test_roster_marks_the_user_and_truncation() -> None:
    session = joined_session()
    members = (Member("bob", "::1"), Member("alice", "127.0.0.1"))
    assert sent(session.command("/who").send) == [Who()]
    assert texts(session.receive(frames(Roster(members, False)))) == [
        "* 2 here: bob@::1, alice@127.0.0.1 (you)"
    ]
    assert texts(session.receive(frames(Roster(members[:1], True)))) == [
        "* the first 1 here: bob@::1 (list truncated)"
    ]


def test_ping_shows_the_round_trip_and_ignores_foreign_pongs() -> None:
    now = [100.0]
    session = joined_session(clock=lambda: now[0])
    (ping,) = sent(session.command("/ping").send)
    assert isinstance(ping, Ping)
    now[0] += 0.0125
    assert session.receive(frames(Pong("not-ours"))) == []
    assert texts(session.receive(frames(Pong(ping.token)))) == ["* pong: 12.5 ms round trip"]
    assert session.receive(frames(Pong(ping.token))) == []  # answered already


def test_barrier_passes_on_its_own_pong_only() -> None:
    session = joined_session()
    (ping,) = sent(session.barrier())
    assert isinstance(ping, Ping)
    assert session.receive(frames(Pong("other"))) == []
    assert not session.barrier_passed
    assert session.receive(frames(Pong(ping.token))) == []
    assert session.barrier_passed


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("hello", [Say("hello")]),
        ("  spaced  ", [Say("  spaced  ")]),
        ("//who", [Say("/who")]),
        ("/WHO", [Who()]),
        ("", []),
        (" \t\u3000 ", []),  # blank: nothing that would show as an empty message
        ("/help", []),
        ("/nonsense", []),
    ],
)
def test_commands(typed: str, expected: list[Message]) -> None:
    session = joined_session()
    assert sent(session.command(typed).send) == expected
    assert not session.finished


def test_help_and_unknown_commands_are_shown() -> None:
    session = joined_session()
    assert all(line.style is Style.NOTICE for line in session.command("/help").lines)
    assert "/who" in " ".join(texts(list(session.command("/help").lines)))
    assert texts(list(session.command("/nonsense x").lines)) == [
        "unknown command /nonsense; /help lists them"
    ]


def test_quit_ends_the_session_and_the_servers_eof_is_then_expected() -> None:
    session = joined_session()
    assert session.command("/quit") == Step()
    assert session.status is ExitStatus.OK
    # Messages sent before the server saw our end of stream still show; its EOF does not.
    assert texts(session.receive(frames(Relayed("bob", "::1", "bye")))) == ["bob@::1: bye"]
    assert session.receive(b"") == []
    assert session.status is ExitStatus.OK


def test_the_echo_waits_for_the_pong_that_follows_the_say() -> None:
    session = joined_session(echo=True)
    step = session.command("hi \x1b")
    said, ping = sent(step.send)
    assert said == Say("hi \x1b") and isinstance(ping, Ping)
    assert step.lines == ()  # not shown before the server has taken it
    assert session.receive(frames(Relayed("bob", "::1", "before"))) == [Line(Style.CHAT, "bob@::1: before")]
    assert session.receive(frames(Pong(ping.token))) == [Line(Style.OWN, "alice@127.0.0.1: hi \\x1b")]
    assert session.receive(frames(Pong(ping.token))) == []


def test_a_say_the_server_refuses_is_never_echoed() -> None:
    session = joined_session(echo=True)
    _, first = sent(session.command("z" * 60).send)
    _, second = sent(session.command("fine").send)
    assert isinstance(first, Ping) and isinstance(second, Ping)
    # The server answers in order: the error for the first say comes before its pong.
    lines = session.receive(frames(Error("text_too_long", "no room", False), Pong(first.token)))
    assert lines == [Line(Style.ERROR, "not relayed (text_too_long: no room): " + "z" * 39 + "…")]
    assert texts(session.receive(frames(Pong(second.token)))) == ["alice@127.0.0.1: fine"]
    # With nothing awaiting an echo, the same error is shown as it is.
    assert texts(session.receive(frames(Error("text_too_long", "no room", False)))) == [
        "error from the server: text_too_long: no room"
    ]


def test_without_echo_a_say_is_sent_alone() -> None:
    session = joined_session()
    step = session.say("hi")
    assert sent(step.send) == [Say("hi")] and step.lines == ()


def test_a_message_too_long_for_max_frame_is_refused_locally() -> None:
    session = ChatSession(CODEC)
    session.hello("alice")
    session.receive(frames(welcome(max_frame=1024)))
    step = session.say("x" * 1024)
    assert step.send == b""
    assert texts(list(step.lines)) == ["not sent: too long for this server (at most 1024 bytes per frame)"]


@pytest.mark.parametrize("codec", [MsgpackCodec(), PickleCodec()], ids=["msgpack", "pickle"])
def test_a_say_that_fits_but_could_not_be_relayed_is_refused_locally(codec: Codec) -> None:
    """§8.4: the server refuses a say whose message{name, host, text} would exceed max_frame;
    the client knows its name and host from the welcome, so it refuses exactly those."""
    session = ChatSession(codec, echo=True)
    session.hello("alice")
    session.receive(encode_message(codec, welcome(max_frame=1024)))

    def relayed_size(text: str) -> int:
        return len(encode_message(codec, Relayed("alice", "127.0.0.1", text))) - 4

    longest = max(n for n in range(900, 1024) if relayed_size("x" * n) <= 1024)
    assert len(encode_message(codec, Say("x" * (longest + 1)))) - 4 <= 1024  # the say itself fits
    refused = session.say("x" * (longest + 1))
    assert refused.send == b""
    assert texts(list(refused.lines)) == ["not sent: too long for this server (at most 1024 bytes per frame)"]
    assert session.say("x" * longest).send != b""


def test_nothing_is_said_before_welcome() -> None:
    session = ChatSession(CODEC)
    session.hello("alice")
    step = session.say("early")
    assert step.send == b"" and step.lines[0].style is Style.ERROR


def test_refused_name_can_be_retried() -> None:
    session = ChatSession(CODEC)
    session.hello("alice")
    lines = session.receive(frames(Error("name_taken", "the name 'alice' is in use", False)))
    assert texts(lines) == ["name refused: name_taken: the name 'alice' is in use"]
    assert session.refusal is not None and session.hello_answered and not session.finished
    assert sent(session.hello("alice2")) == [Hello("alice2")]
    assert session.refusal is None and not session.hello_answered
    session.receive(frames(welcome("alice2")))
    assert session.joined


@pytest.mark.parametrize(
    ("data", "status", "text"),
    [
        (
            frames(Shutdown("server shutting down")),
            ExitStatus.SERVER_SHUTDOWN,
            "* server shutdown: server shutting down",
        ),
        (
            frames(Error("hello_timeout", "no hello in time", True)),
            ExitStatus.PROTOCOL_ERROR,
            "disconnected by the server: hello_timeout: no hello in time",
        ),
        # §7.2: the fatal flag decides, even for a code the client does not know.
        (
            frames(Error("new_code", "bye", True)),
            ExitStatus.PROTOCOL_ERROR,
            "disconnected by the server: new_code: bye",
        ),
        (b"", ExitStatus.CONNECTION_LOST, "the server closed the connection"),
        (
            b"\x00\x00",
            ExitStatus.CONNECTION_LOST,
            "the server closed the connection in the middle of a frame",
        ),
    ],
)
def test_the_server_ends_the_session(data: bytes, status: ExitStatus, text: str) -> None:
    session = joined_session()
    lines = session.receive(data) + session.receive(b"")  # what follows the end is not shown
    assert texts(lines) == [text]
    assert session.status is status and session.finished and not session.joined


@pytest.mark.parametrize(
    ("tls", "text"),
    [
        (
            False,
            "the server closed the connection without a word (if its port serves TLS, connect with --tls)",
        ),
        (True, "the server closed the connection"),
    ],
)
def test_a_silent_close_before_any_answer_hints_at_tls(tls: bool, text: str) -> None:
    # A TLS port closes a plaintext client's connection without sending a frame (§17.1).
    session = ChatSession(CODEC, tls=tls)
    session.hello("alice")
    assert texts(session.receive(b"")) == [text]
    assert session.status is ExitStatus.CONNECTION_LOST


def test_the_server_breaking_the_protocol_ends_the_session() -> None:
    session = joined_session()
    bad_joined = {"type": "joined", "name": "bob", "host": "::1", "clients": True}  # a bool is not an int
    lines = session.receive(encode_frame(CODEC.encode(bad_joined)) + frames(Relayed("bob", "::1", "late")))
    (line,) = lines  # and nothing after the violation is shown
    assert line.style is Style.ERROR and line.text.startswith("bad data from the server (bad_message): ")
    assert session.status is ExitStatus.PROTOCOL_ERROR
    assert session.receive(frames(Relayed("bob", "::1", "later"))) == []


def test_unknown_types_and_fields_are_ignored() -> None:
    session = joined_session()
    data = encode_frame(CODEC.encode({"type": "reaction", "emoji": "+1"}))
    data += encode_frame(
        CODEC.encode({"type": "message", "name": "bob", "host": "::1", "text": "hi", "x": 1})
    )
    assert texts(session.receive(data)) == ["bob@::1: hi"]
    assert session.joined


def test_another_protocol_version_is_refused() -> None:
    session = ChatSession(CODEC)
    session.hello("alice")
    lines = session.receive(
        frames(Welcome("alice", "127.0.0.1", 1, 1 << 20, server="future", proto=2, codec="msgpack"))
    )
    assert texts(lines) == ["the server speaks protocol 2, not 1"]
    assert session.status is ExitStatus.PROTOCOL_ERROR and not session.joined


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [(MsgpackCodec(), PickleCodec()), (PickleCodec(), MsgpackCodec())],
    ids=["msgpack", "pickle"],
)
def test_a_codec_mismatch_is_explained_both_ways(ours: Codec, theirs: Codec) -> None:
    session = ChatSession(ours)
    session.hello("alice")
    (line,) = session.receive(encode_message(theirs, Error("bad_payload", "not for me", True)))
    assert line.style is Style.ERROR and "bad_payload" in line.text
    assert f"is the peer using the {theirs.name} codec?" in line.text
    assert session.status is ExitStatus.PROTOCOL_ERROR


def test_lost_transport() -> None:
    session = joined_session()
    assert texts(session.lost("Connection reset by peer")) == ["connection lost: Connection reset by peer"]
    assert session.status is ExitStatus.CONNECTION_LOST
    assert session.lost("again") == []


# --- front ends against the real servers ---------------------------------------------------


def client_command(port: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "chatwire_client", "--port", str(port), *args]


def run_client(port: int, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        client_command(port, *args),
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=TIMEOUT,
        check=False,
    )


@pytest.fixture(params=SERVERS)
def server(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    with ServerProcess(BUNDLED[request.param]) as process:
        yield process


@pytest.fixture
def peer(server: ServerProcess) -> Iterator[WirePeer]:
    with WirePeer(server.address, label="bob", timeout=TIMEOUT) as bob:
        bob.join("bob")
        yield bob


def test_pipe_lines_arrive_in_order_and_the_client_leaves_cleanly(
    server: ServerProcess, peer: WirePeer
) -> None:
    result = run_client(server.port, "--name", "bot", stdin="hi\nbye\n")
    assert result.returncode == 0, result.stderr
    # The client's own status goes to stderr: stdout is left to what happens in the room.
    assert result.stdout == ""
    (status,) = result.stderr.splitlines()
    assert status.startswith("* connected as bot@127.0.0.1 — 2 here; server ")
    assert peer.expect(Joined) == Joined("bot", "127.0.0.1", 2)
    assert peer.next() == Relayed("bot", "127.0.0.1", "hi")
    assert peer.next() == Relayed("bot", "127.0.0.1", "bye")
    # A clean close (half-close, drain) is a quit, not a lost connection.
    assert peer.next() == Left("bot", "127.0.0.1", 1, "quit")


def test_pipe_sends_lines_verbatim_and_blank_lines_not_at_all(server: ServerProcess, peer: WirePeer) -> None:
    text = "  tabs\tand trailing spaces  \r"
    stdin = f"{text}\n\n \t \n/who\nno newline at the end"
    result = run_client(server.port, "--name", "bot", stdin=stdin)
    assert result.returncode == 0, result.stderr
    peer.expect(Joined)
    said = [peer.next() for _ in range(3)]
    assert [m.text for m in said if isinstance(m, Relayed)] == [text, "/who", "no newline at the end"]
    assert peer.next() == Left("bot", "127.0.0.1", 1, "quit")  # and nothing in between


@pytest.mark.parametrize("name", SERVERS)
def test_pipe_with_the_pickle_codec(name: str) -> None:
    with ServerProcess(BUNDLED[name], extra_args=["--codec", "pickle"]) as server:
        bob = WirePeer(server.address, codec=PickleCodec(), timeout=TIMEOUT)
        bob.join("bob")
        result = run_client(server.port, "--name", "bot", "--codec", "pickle", stdin="pickled\n")
        assert result.returncode == 0, result.stderr
        bob.expect(Joined)
        assert bob.next() == Relayed("bot", "127.0.0.1", "pickled")
        bob.close()


def test_pipe_skips_lines_over_max_frame() -> None:
    with ServerProcess(BUNDLED["impl_asyncio"], extra_args=["--max-frame", "1024"]) as server:
        bob = WirePeer(server.address, timeout=TIMEOUT)
        bob.join("bob")
        # Line 1 is dropped while it is read (it spans several reads), line 2 once read whole,
        # line 4 fits max_frame as text but not as a frame.
        stdin = "x" * 200_000 + "\n" + "z" * 1025 + "\nafter\n" + "y" * 1010 + "\nlast"
        result = run_client(server.port, "--name", "bot", stdin=stdin)
        assert result.returncode == 0, result.stderr
        too_long = "not sent: too long for this server (at most 1024 bytes per frame)"
        assert result.stderr.splitlines()[1:] == [f"line {n} {too_long}" for n in (1, 2, 4)]
        bob.expect(Joined)
        assert bob.next() == Relayed("bot", "127.0.0.1", "after")
        assert bob.next() == Relayed("bot", "127.0.0.1", "last")
        bob.close()


def test_pipe_prints_what_arrives(server: ServerProcess, peer: WirePeer) -> None:
    client = subprocess.Popen(
        client_command(server.port, "--name", "reader"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        peer.expect(Joined)
        peer.send(Say("one\x1b[2J"))
        with WirePeer(server.address, label="carol", timeout=TIMEOUT) as carol:
            carol.join("carol")
        peer.expect(Left)
        peer.send(Say("two"))
        # After this barrier the server has queued everything for the client; the client's
        # own barrier, sent at the end of its input, is answered after it.
        peer.barrier()
        out, err = client.communicate(input="", timeout=TIMEOUT)
    finally:
        client.kill()
    assert client.returncode == 0, err
    # stdout: the room, in order; stderr: this client's own status.
    assert out.splitlines() == [
        "bob@127.0.0.1: one\\x1b[2J",
        "* carol@127.0.0.1 joined (3 here)",
        "* carol@127.0.0.1 left (2 here)",
        "bob@127.0.0.1: two",
    ]
    (status,) = err.splitlines()
    assert status.startswith("* connected as reader@127.0.0.1 — 2 here; server ")


def test_pipe_name_taken_exits_3(server: ServerProcess, peer: WirePeer) -> None:
    result = run_client(server.port, "--name", "BOB", stdin="never sent\n")
    assert result.returncode == ExitStatus.NAME_REFUSED
    assert result.stdout == ""
    assert result.stderr.startswith("name refused: name_taken: ")
    assert peer.barrier() == []  # nothing of it reached the room


def test_pipe_name_invalid_exits_3(server: ServerProcess) -> None:
    result = run_client(server.port, "--name", "has space")
    assert result.returncode == ExitStatus.NAME_REFUSED
    assert result.stderr.startswith("name refused: name_invalid: ")


def test_cannot_connect_exits_2() -> None:
    port = free_port()
    result = run_client(port, "--name", "bot")
    assert result.returncode == ExitStatus.CANNOT_CONNECT
    assert result.stderr == f"cannot connect to 127.0.0.1:{port}: Connection refused\n"


@pytest.mark.parametrize(("client", "server_codec"), [("msgpack", "pickle"), ("pickle", "msgpack")])
def test_codec_mismatch_is_a_protocol_error_named_either_way(client: str, server_codec: str) -> None:
    with ServerProcess(BUNDLED["impl_asyncio"], extra_args=["--codec", server_codec]) as server:
        result = run_client(server.port, "--name", "bot", "--codec", client)
    assert result.returncode == ExitStatus.PROTOCOL_ERROR
    (line,) = result.stderr.splitlines()
    assert line.startswith("bad data from the server (bad_payload): ")
    assert line.endswith(
        f"(the payload looks like {server_codec}: is the peer using the {server_codec} codec?)"
    )


def test_server_shutdown_is_reported(server: ServerProcess, peer: WirePeer) -> None:
    stdin, keep_open = os.pipe()  # the client's input never ends: only the shutdown can end it
    client = subprocess.Popen(
        client_command(server.port, "--name", "reader"),
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    os.close(stdin)
    try:
        peer.expect(Joined)
        server.signal(signal.SIGTERM)
        out, err = client.communicate(timeout=TIMEOUT)
    finally:
        client.kill()
        os.close(keep_open)
    assert client.returncode == ExitStatus.SERVER_SHUTDOWN, err
    assert out == ""
    assert err.splitlines()[-1] == "* server shutdown: server shutting down"


class FakeServer:
    """A listener that reads the hello of each connection in turn and answers the n-th with the
    n-th script, for server misbehaviour; :attr:`hellos` are the names asked for."""

    def __init__(self, *scripts: Callable[[socket.socket], None]) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.listener.settimeout(TIMEOUT)
        self.hellos: list[str] = []
        self.thread = threading.Thread(target=self._serve, args=(scripts,), daemon=True)
        self.thread.start()

    def _serve(self, scripts: tuple[Callable[[socket.socket], None], ...]) -> None:
        for script in scripts:
            conn, _ = self.listener.accept()
            with conn:
                conn.settimeout(TIMEOUT)
                decoder = FrameDecoder(1 << 20)
                while (payload := decoder.next_frame()) is None:
                    data = conn.recv(4096)
                    if not data:
                        return
                    decoder.feed(data)
                hello = CODEC.decode(payload)
                assert hello["type"] == "hello"
                self.hellos.append(hello["name"])
                script(conn)

    def close(self) -> None:
        self.thread.join(TIMEOUT)
        self.listener.close()


def test_connection_lost_exits_1() -> None:
    def welcome_then_reset(conn: socket.socket) -> None:
        conn.sendall(frames(welcome("bot"), Relayed("eve", "::1", "last words")))
        conn.sendall(b"\x00\x00\x00\x10partial")  # then vanish in the middle of a frame
        conn.shutdown(socket.SHUT_WR)
        conn.recv(1)

    fake = FakeServer(welcome_then_reset)
    client = subprocess.Popen(
        client_command(fake.port, "--name", "bot"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        out, err = client.communicate(timeout=TIMEOUT)
    finally:
        client.kill()
        fake.close()
    assert client.returncode == ExitStatus.CONNECTION_LOST
    assert out.splitlines() == ["eve@::1: last words"]
    assert err.splitlines()[1:] == ["the server closed the connection in the middle of a frame"]


def test_a_server_breaking_the_protocol_is_left_at_once() -> None:
    def break_it(conn: socket.socket) -> None:
        conn.sendall(frames(welcome("bot")) + encode_frame(CODEC.encode({"type": "joined", "name": 7})))
        while conn.recv(4096):  # the client half-closes without being asked to
            pass

    fake = FakeServer(break_it)
    stdin, keep_open = os.pipe()  # the input never ends: only the violation can end the client
    client = subprocess.Popen(
        client_command(fake.port, "--name", "bot"),
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    os.close(stdin)
    try:
        _out, err = client.communicate(timeout=TIMEOUT)
    finally:
        client.kill()
        os.close(keep_open)
        fake.close()
    assert client.returncode == ExitStatus.PROTOCOL_ERROR
    connected, violation = err.splitlines()
    assert connected.startswith("* connected as bot@")
    assert violation.startswith("bad data from the server (bad_message): ")


def test_fatal_error_from_the_server_exits_5() -> None:
    def refuse(conn: socket.socket) -> None:
        conn.sendall(frames(Error("hello_timeout", "no hello in time\x1b[1A", True)))
        conn.shutdown(socket.SHUT_WR)
        conn.recv(1)

    fake = FakeServer(refuse)
    try:
        result = run_client(fake.port, "--name", "bot")
    finally:
        fake.close()
    assert result.returncode == ExitStatus.PROTOCOL_ERROR
    assert result.stderr == "disconnected by the server: hello_timeout: no hello in time\\x1b[1A\n"


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A port where connections are accepted (by the kernel's backlog) and never answered."""
    with socket.create_server(("127.0.0.1", 0), backlog=8) as listener:
        yield listener.getsockname()[1]


def test_a_server_that_never_welcomes_times_out_with_exit_6(silent_listener: int) -> None:
    result = run_client(silent_listener, "--name", "bot", "--timeout", "0.5", stdin="x\n")
    assert result.returncode == ExitStatus.TIMED_OUT
    assert result.stdout == ""
    assert result.stderr == (
        f"no welcome from 127.0.0.1:{silent_listener} within 0.5 s: is it a chat wire protocol server?"
        " (--timeout sets the wait)\n"
    )


def test_a_server_that_never_answers_the_final_ping_times_out_with_exit_6() -> None:
    def welcome_then_silence(conn: socket.socket) -> None:
        conn.sendall(frames(welcome("bot")))
        while conn.recv(4096):  # the say and the ping, then the client's close
            pass

    fake = FakeServer(welcome_then_silence)
    try:
        result = run_client(fake.port, "--name", "bot", "--timeout", "0.5", stdin="x\n")
    finally:
        fake.close()
    assert result.returncode == ExitStatus.TIMED_OUT
    assert result.stderr.splitlines()[1:] == [
        f"no answer to the final ping from 127.0.0.1:{fake.port} within 0.5 s:"
        " is it a chat wire protocol server? (--timeout sets the wait)"
    ]


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--port", "65536"], "argument --port: must be within 1..65535, not 65536"),
        (["--port", "0"], "argument --port: must be within 1..65535, not 0"),
        (["--port", "-1"], "argument --port: must be within 1..65535, not -1"),
        (
            ["--port", "7000", "--timeout", "0"],
            "argument --timeout: must be greater than 0 and at most 86400, not 0",
        ),
        (
            ["--port", "7000", "--timeout", "nan"],
            "argument --timeout: must be greater than 0 and at most 86400, not nan",
        ),
        (
            ["--port", "7000", "--timeout", "inf"],
            "argument --timeout: must be greater than 0 and at most 86400, not inf",
        ),
    ],
)
def test_bad_numbers_on_the_command_line_are_one_line_errors(args: list[str], error: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "chatwire_client", "--name", "bot", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == f"python -m chatwire_client: error: {error}"


# --- interactive mode in a pseudo-terminal ---------------------------------------------------

# Any run of terminal control sequences prompt_toolkit may put between two visible characters.
CONTROLS = r"(?:\x1b\[[0-9;?]*[A-Za-z]|\r|\n)*"


def spawn(port: int, *args: str) -> pexpect.spawn:
    env = {**os.environ, "PROMPT_TOOLKIT_NO_CPR": "1", "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    return pexpect.spawn(
        sys.executable,
        ["-m", "chatwire_client", "--port", str(port), *args],
        cwd=str(ROOT),
        env=env,
        dimensions=(24, 120),
        timeout=TIMEOUT,
        encoding="utf-8",
    )


@pytest.fixture
def terminal(server: ServerProcess, peer: WirePeer) -> Iterator[pexpect.spawn]:
    child = spawn(server.port, "--name", "alice")
    try:
        child.expect_exact("* connected as alice@127.0.0.1 — 2 here; server ")
        child.expect_exact("alice> ")
        peer.expect(Joined)
        yield child
    finally:
        child.close(force=True)


def exit_status(child: pexpect.spawn) -> int | None:
    child.expect(pexpect.EOF)
    child.close()
    status: int | None = child.exitstatus
    return status


def test_interactive_incoming_message_keeps_the_half_typed_line(
    terminal: pexpect.spawn, peer: WirePeer
) -> None:
    terminal.send("half a li")
    terminal.expect_exact("half a li")
    peer.send(Say("interrupting \x1b[2J"))
    terminal.expect_exact("bob@127.0.0.1: interrupting \\x1b[2J")
    # The prompt is redrawn below the message with the typed text still in it.
    terminal.expect("alice> " + CONTROLS + "half a li")
    terminal.send("ne\r")
    assert peer.expect(Relayed) == Relayed("alice", "127.0.0.1", "half a line")
    terminal.expect_exact("alice@127.0.0.1: half a line")  # the echo replaces the typed line


def test_interactive_who_ping_and_ctrl_d(terminal: pexpect.spawn, peer: WirePeer) -> None:
    terminal.send("/who\r")
    terminal.expect_exact("* 2 here: bob@127.0.0.1, alice@127.0.0.1 (you)")
    terminal.send("/ping\r")
    terminal.expect(r"\* pong: \d+\.\d ms round trip")
    terminal.send("/help\r")
    terminal.expect_exact("commands: /who")
    terminal.expect_exact("alice> ")
    terminal.sendcontrol("d")
    assert exit_status(terminal) == 0
    assert peer.expect(Left) == Left("alice", "127.0.0.1", 1, "quit")


def test_interactive_ctrl_c_and_quit_leave_cleanly(
    server: ServerProcess, terminal: pexpect.spawn, peer: WirePeer
) -> None:
    terminal.sendcontrol("c")
    assert exit_status(terminal) == 0
    assert peer.expect(Left).reason == "quit"
    child = spawn(server.port, "--name", "alice")
    try:
        child.expect_exact("alice> ")
        child.send("/quit\r")
        assert exit_status(child) == 0
    finally:
        child.close(force=True)
    peer.expect(Joined)
    assert peer.expect(Left).reason == "quit"


def test_interactive_shows_departures_and_shutdown(server: ServerProcess, terminal: pexpect.spawn) -> None:
    with WirePeer(server.address, label="carol") as carol:
        carol.join("carol")
        terminal.expect_exact("* carol@127.0.0.1 joined (3 here)")
    terminal.expect_exact("* carol@127.0.0.1 left (2 here)")
    server.signal(signal.SIGTERM)
    terminal.expect_exact("* server shutdown: server shutting down")
    assert exit_status(terminal) == ExitStatus.SERVER_SHUTDOWN


def test_interactive_name_taken_asks_for_another(server: ServerProcess, peer: WirePeer) -> None:
    child = spawn(server.port, "--name", "Bob")
    try:
        child.expect_exact("name refused: name_taken: ")
        child.expect_exact("try another name: ")
        child.send("bobby\r")
        child.expect_exact("* connected as bobby@127.0.0.1 — 2 here")
        assert peer.expect(Joined).name == "bobby"
        child.expect_exact("bobby> ")
        child.sendcontrol("d")
        assert exit_status(child) == 0
    finally:
        child.close(force=True)


def test_interactive_asks_for_a_name_when_none_is_given(server: ServerProcess) -> None:
    child = spawn(server.port)
    try:
        child.expect_exact("your name: ")
        child.send("zoë\r")
        child.expect_exact("* connected as zoë@127.0.0.1 — 1 here")
        child.expect_exact("zoë> ")
        child.sendcontrol("d")
        assert exit_status(child) == 0
    finally:
        child.close(force=True)


def _drain(conn: socket.socket) -> None:
    while conn.recv(4096):  # until the client's end of stream
        pass


def test_interactive_asks_for_another_name_with_no_connection_open() -> None:
    """The refused connection is closed before the question is asked, so the server's hello
    timeout cannot expire (and look fatal) while the user types; the new name goes on a new
    connection."""
    closed_before_asking = threading.Event()

    def refuse(conn: socket.socket) -> None:
        conn.sendall(frames(Error("name_taken", "the name 'bob' is in use", False)))
        _drain(conn)
        closed_before_asking.set()

    def accept(conn: socket.socket) -> None:
        conn.sendall(frames(welcome("bobby", clients=2)))
        _drain(conn)

    fake = FakeServer(refuse, accept)
    child = spawn(fake.port, "--name", "bob")
    try:
        child.expect_exact("name refused: name_taken: the name 'bob' is in use")
        child.expect_exact("try another name: ")
        # Set before the fake closes its end, which the client waits for before asking.
        assert closed_before_asking.is_set()
        child.send("bobby\r")
        child.expect_exact("* connected as bobby@127.0.0.1 — 2 here")
        child.expect_exact("bobby> ")
        child.sendcontrol("d")
        assert exit_status(child) == 0
    finally:
        child.close(force=True)
        fake.close()
    assert fake.hellos == ["bob", "bobby"]


def test_interactive_times_out_with_exit_6_when_the_server_never_welcomes(silent_listener: int) -> None:
    child = spawn(silent_listener, "--name", "bob", "--timeout", "0.5")
    try:
        child.expect_exact(f"no welcome from 127.0.0.1:{silent_listener} within 0.5 s")
        assert exit_status(child) == ExitStatus.TIMED_OUT
    finally:
        child.close(force=True)


def test_the_help_lists_every_exit_status() -> None:
    listed = {
        int(line.split()[0])
        for line in EPILOG.split("exit status:\n", 1)[1].splitlines()
        if line.strip() and line.split()[0].isdigit()
    }
    assert listed >= {int(status) for status in ExitStatus}


@pytest.mark.parametrize("keepalive", [0.3, 100.0])
def test_the_keepalive_ping_keeps_a_quiet_member_past_the_idle_timeout(keepalive: float) -> None:
    idle = 1.0

    async def quiet_member(address: tuple[str, int]) -> ExitStatus | None:
        session = ChatSession(MsgpackCodec())
        link = await Link.open(Server(*address), session, lambda line: None, timeout=TIMEOUT)
        link.keepalive = keepalive
        receiving = asyncio.create_task(link.run())
        await link.send(session.hello("quiet"))
        await link.expect(lambda: session.hello_answered, TIMEOUT, "welcome")
        # Three idle timeouts of silence from the user: only the keepalive speaks.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(link.until(lambda: session.finished), 3 * idle)
        status = session.status
        session.quit()
        await link.close()
        await receiving
        return status

    with ServerProcess(BUNDLED["impl_select"], extra_args=["--idle-timeout", str(idle)]) as process:
        status = asyncio.run(quiet_member(process.address))
    if keepalive < idle:
        assert status is None, f"a member with a keepalive was closed: {status}"
    else:
        assert status is ExitStatus.PROTOCOL_ERROR, "without a keepalive the idle timeout closes"
