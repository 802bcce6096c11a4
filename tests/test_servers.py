"""Both reference servers, run as processes and driven over TCP with recording test peers.

Every test starts its own server on a free port and stops it, checking that it exits with
status 0 and logged no traceback. Ordering is established with ping/pong barriers
(``WirePeer.barrier``), never with sleeps: a server answers one connection's frames in
order, so once a ping's pong is back, everything the frames before it caused has been
queued.
"""

from __future__ import annotations

import contextlib
import resource
import selectors
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgpack
import pytest

from conformance.serverproc import BUNDLED, ServerProcess
from conformance.wire import Transcript, WirePeer
from protocol import (
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
from protocol.constants import DEFAULT_MAX_FRAME, PROTOCOL_VERSION, SHUTDOWN_FLUSH_TIMEOUT
from protocol.messages import SERVER_MESSAGES, from_wire
from protocol.server import Deadlines
from protocol.serving import peer_host

LOCALHOST = "127.0.0.1"


@pytest.fixture(params=sorted(BUNDLED))
def impl(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


class Harness:
    """A running server and the peers a test opened to it, sharing one transcript."""

    def __init__(self, server: ServerProcess, codec: Codec | None) -> None:
        self.server = server
        self.codec = codec
        self.transcript = Transcript()
        self.peers: list[WirePeer] = []

    def peer(self, label: str) -> WirePeer:
        peer = WirePeer(self.server.address, codec=self.codec, label=label, transcript=self.transcript)
        self.peers.append(peer)
        return peer

    def member(self, name: str) -> WirePeer:
        peer = self.peer(name)
        peer.join(name)
        return peer

    def close(self) -> None:
        for peer in self.peers:
            peer.close()


@contextmanager
def serve(
    impl: str, *extra: str, host: str = LOCALHOST, port: int = 0, codec: Codec | None = None
) -> Iterator[Harness]:
    """Run ``impl`` for the duration of a test; on a clean exit of the test, check how it stopped."""
    server = ServerProcess(BUNDLED[impl], host=host, port=port, extra_args=extra).start()
    harness = Harness(server, codec)
    try:
        yield harness
    finally:
        harness.close()
        status = server.stop()
    log = server.stderr_tail(100_000)
    assert status == 0, log
    assert "Traceback" not in log, log


def assert_fin(peer: WirePeer) -> None:
    """The server ended the stream with FIN, not RST (which can destroy data in flight, §9.4)."""
    assert not peer.closed, "end of stream already consumed"
    peer.sock.settimeout(peer.timeout)
    try:
        rest = peer.sock.recv(1 << 16)
    except ConnectionResetError:
        pytest.fail(f"{peer.label}: reset instead of FIN\n{peer.transcript.render()}")
    assert rest == b"", f"{peer.label}: unexpected bytes {rest!r}"
    peer.closed = True


# --- the seed's story ----------------------------------------------------------------------


def test_story_of_three_clients(impl: str) -> None:
    with serve(impl) as h:
        alice = h.peer("alice")
        welcome = alice.join("alice")
        assert welcome == Welcome(
            name="alice",
            host=LOCALHOST,
            clients=1,
            max_frame=DEFAULT_MAX_FRAME,
            server=welcome.server,
            codec="msgpack",
            proto=PROTOCOL_VERSION,
        )
        assert welcome.server.startswith(impl)
        assert h.server._stdout_lines == [f"listening on {LOCALHOST}:{h.server.port}\n"]

        bob = h.peer("bob")
        assert bob.join("bob").clients == 2
        assert alice.next() == Joined("bob", LOCALHOST, 2)

        carol = h.peer("carol")
        assert carol.join("carol").clients == 3
        assert alice.next() == Joined("carol", LOCALHOST, 3)
        assert bob.next() == Joined("carol", LOCALHOST, 3)
        # Nobody is told of their own join, nor anything else.
        for peer in (alice, bob, carol):
            assert peer.barrier() == []

        alice.send(Say("hello, room"))
        # The pong follows anything the say queued for alice: nothing is echoed.
        assert alice.barrier() == []
        for peer in (bob, carol):
            assert peer.next() == Relayed("alice", LOCALHOST, "hello, room")

        bob.send(Who())
        assert bob.next() == Roster(
            (Member("alice", LOCALHOST), Member("bob", LOCALHOST), Member("carol", LOCALHOST)),
            truncated=False,
        )

        carol.send(Ping("tøken ☃"))
        assert carol.next() == Pong("tøken ☃")

        carol.half_close()
        assert carol.wait_closed() == []
        for peer in (alice, bob):
            assert peer.next() == Left("carol", LOCALHOST, 2, "quit")
            assert peer.barrier() == []


def test_listening_line_and_ipv6_host(impl: str) -> None:
    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError:
        pytest.skip("no IPv6 loopback")
    with serve(impl, host="::1") as h:
        assert h.server._stdout_lines[0] == f"listening on [::1]:{h.server.port}\n"
        alice = h.peer("alice")
        assert alice.join("alice").host == "::1"


# --- failure paths ---------------------------------------------------------------------------


def test_oversize_frame_header_is_refused_then_closed(impl: str) -> None:
    with serve(impl) as h:
        alice = h.member("alice")
        bob = h.member("bob")
        assert alice.next() == Joined("bob", LOCALHOST, 2)
        # Input the server never reads as a frame follows the header: the error must still
        # arrive, so the server drains it instead of closing with unread data (RST).
        bob.send_raw(struct.pack(">I", DEFAULT_MAX_FRAME + 1) + bytes(65536))
        error = bob.next()
        assert isinstance(error, Error)
        assert (error.code, error.fatal) == ("frame_too_large", True)
        assert_fin(bob)
        assert alice.next() == Left("bob", LOCALHOST, 1, "error")
        assert alice.barrier() == []


def test_bad_payload_is_fatal(impl: str) -> None:
    with serve(impl) as h:
        alice = h.member("alice")
        bob = h.member("bob")
        assert alice.next() == Joined("bob", LOCALHOST, 2)
        bob.send_raw(encode_frame(b"\xc1"), "never-used msgpack byte")
        error = bob.next()
        assert isinstance(error, Error)
        assert (error.code, error.fatal) == ("bad_payload", True)
        assert_fin(bob)
        assert alice.next() == Left("bob", LOCALHOST, 1, "error")

        # A connection that never joined leaves silently.
        stranger = h.peer("stranger")
        stranger.send_raw(encode_frame(b""), "empty payload")
        error = stranger.next()
        assert isinstance(error, Error)
        assert (error.code, error.fatal) == ("bad_payload", True)
        assert_fin(stranger)
        assert alice.barrier() == []


def test_bad_message_is_not_fatal(impl: str) -> None:
    with serve(impl) as h:
        alice = h.member("alice")
        bob = h.member("bob")
        assert alice.next() == Joined("bob", LOCALHOST, 2)
        bob.send_value({"type": "say"})
        bob.send_raw(encode_frame(msgpack.packb([1, 2, 3])), "a list, not a map")
        for _ in range(2):
            error = bob.next()
            assert isinstance(error, Error)
            assert (error.code, error.fatal) == ("bad_message", False)
        bob.send(Say("still here"))
        assert bob.barrier() == []
        assert alice.next() == Relayed("bob", LOCALHOST, "still here")
        assert alice.barrier() == []


def test_say_before_hello_is_fatal(impl: str) -> None:
    with serve(impl) as h:
        alice = h.member("alice")
        eager = h.peer("eager")
        eager.send(Say("hi"))
        error = eager.next()
        assert isinstance(error, Error)
        assert (error.code, error.fatal) == ("hello_required", True)
        assert_fin(eager)
        assert alice.barrier() == []


def test_invalid_and_taken_names_can_be_retried(impl: str) -> None:
    with serve(impl) as h:
        alice = h.member("alice")
        bob = h.peer("bob")
        for name, code in (("two words", "name_invalid"), ("ALICE", "name_taken")):
            bob.send(Hello(name))
            error = bob.next()
            assert isinstance(error, Error)
            assert (error.code, error.fatal) == (code, False)
        assert bob.join("bob").clients == 2
        assert alice.next() == Joined("bob", LOCALHOST, 2)
        assert alice.barrier() == []


def test_hello_timeout(impl: str) -> None:
    with serve(impl, "--hello-timeout", "0.5") as h:
        alice = h.member("alice")
        lurker = h.peer("lurker")
        error = lurker.expect(Error, timeout=10)
        assert (error.code, error.fatal) == ("hello_timeout", True)
        assert_fin(lurker)
        # alice's timer ran out before lurker's; having joined, she is still served.
        assert alice.barrier() == []


def test_reset_and_eof_mid_frame_are_connection_lost(impl: str) -> None:
    with serve(impl) as h:
        alice = h.member("alice")
        assert alice.barrier() == []  # also lets the server settle earlier connections
        baseline = h.server.open_fds()
        frame = encode_message(MsgpackCodec(), Say("cut short"))

        bob = h.member("bob")
        assert alice.next() == Joined("bob", LOCALHOST, 2)
        bob.send_raw(frame[:6], "half a frame")
        bob.reset()
        assert alice.next() == Left("bob", LOCALHOST, 1, "connection_lost")

        carol = h.member("carol")
        assert alice.next() == Joined("carol", LOCALHOST, 2)
        carol.send_raw(frame[:6], "half a frame")
        carol.half_close()
        assert alice.next() == Left("carol", LOCALHOST, 1, "connection_lost")
        assert carol.wait_closed() == []

        # Both departures were handled before alice's ping: their sockets are gone.
        assert alice.barrier() == []
        assert h.server.open_fds() == baseline


def _raw_member(address: tuple[str, int], name: str, rcvbuf: int) -> socket.socket:
    """A joined client with a small receive buffer, which then never reads again."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: sets the window
    sock.settimeout(5)
    sock.connect(address)
    sock.sendall(encode_message(MsgpackCodec(), Hello(name)))
    decoder = FrameDecoder()
    while (payload := decoder.next_frame()) is None:
        data = sock.recv(1 << 16)
        assert data, "closed before welcome"
        decoder.feed(data)
    assert isinstance(from_wire(MsgpackCodec().decode(payload), SERVER_MESSAGES), Welcome)
    return sock


def test_slow_consumer_is_cut_off_and_the_room_goes_on(impl: str) -> None:
    with serve(impl, "--max-output-buffer", "65536") as h:
        alice = h.member("alice")
        carol = h.member("carol")
        sleepy = _raw_member(h.server.address, "sleepy", rcvbuf=4096)
        try:
            assert alice.barrier() == [Joined("carol", LOCALHOST, 2), Joined("sleepy", LOCALHOST, 3)]
            assert carol.barrier() == [Joined("sleepy", LOCALHOST, 3)]
            text = "x" * 8192
            sent = received = 0
            to_alice: list[Message | dict[str, Any]] = []
            to_carol: list[Message | dict[str, Any]] = []
            # Each round queues 32 KiB for carol, who reads it all before the next one, so she
            # stays under the cap while sleepy's queue grows past it. 40 MiB bounds the search.
            for _ in range(1280):
                for _ in range(4):
                    alice.send(Say(f"{sent:06d} {text}"))
                    sent += 1
                to_alice += alice.barrier()
                # Everything the batch caused was queued for carol before her ping.
                for message in carol.barrier():
                    if isinstance(message, Relayed):
                        assert message == Relayed("alice", LOCALHOST, f"{received:06d} {text}")
                        received += 1
                    else:
                        to_carol.append(message)
                if to_carol:
                    break
            assert received == sent
            left = Left("sleepy", LOCALHOST, 2, "slow_consumer")
            assert to_carol == [left]
            assert to_alice == [left]

            alice.send(Say("after"))
            assert alice.barrier() == []
            assert carol.next() == Relayed("alice", LOCALHOST, "after")
            # sleepy was closed: reading what reached it ends in end of stream.
            sleepy.settimeout(10)
            with contextlib.suppress(ConnectionResetError):
                while sleepy.recv(1 << 20):
                    pass
        finally:
            sleepy.close()


# --- shutdown ------------------------------------------------------------------------------


def test_sigterm_tells_everyone_and_the_port_is_free_at_once(impl: str) -> None:
    server = ServerProcess(BUNDLED[impl]).start()
    harness = Harness(server, None)
    try:
        alice = harness.member("alice")
        bob = harness.member("bob")
        lurker = harness.peer("lurker")
        lurker.send(Hello("not valid"))  # its refusal proves the connection was accepted
        assert lurker.expect(Error).code == "name_invalid"
        assert alice.barrier() == [Joined("bob", LOCALHOST, 2)]

        server.signal(signal.SIGTERM)
        # No left during shutdown (§12): shutdown, then FIN, and nothing else.
        for peer in (alice, bob, lurker):
            assert peer.wait_closed() == [Shutdown("server shutting down")]
        harness.close()
        assert server.wait(10) == 0
    finally:
        harness.close()
        server.stop()
    assert "Traceback" not in server.stderr_tail(100_000)

    # SO_REUSEADDR: the port is free although the old connections are in TIME_WAIT.
    with serve(impl, port=server.port) as again:
        assert again.server.port == server.port
        assert again.member("alice").barrier() == []


def test_second_signal_ends_the_shutdown_flush(impl: str) -> None:
    server = ServerProcess(BUNDLED[impl]).start()
    try:
        with WirePeer(server.address, label="alice") as alice:
            alice.join("alice")
            started = time.monotonic()
            server.signal(signal.SIGTERM)
            assert alice.next() == Shutdown("server shutting down")
            # alice keeps her end open, so the server is waiting for her EOF (§9.4 step 4),
            # which would last until SHUTDOWN_FLUSH_TIMEOUT.
            server.signal(signal.SIGTERM)
            assert server.wait(10) == 0
            assert time.monotonic() - started < SHUTDOWN_FLUSH_TIMEOUT
    finally:
        server.stop()
    log = server.stderr_tail(100_000)
    assert "again" in log
    assert "Traceback" not in log


# --- codec ---------------------------------------------------------------------------------


def test_pickle_codec_end_to_end(impl: str) -> None:
    with serve(impl, "--codec", "pickle", codec=PickleCodec()) as h:
        alice = h.peer("alice")
        assert alice.join("alice").codec == "pickle"
        bob = h.member("bob")
        assert alice.next() == Joined("bob", LOCALHOST, 2)
        bob.send(Say("pickled"))
        assert bob.barrier() == []
        assert alice.next() == Relayed("bob", LOCALHOST, "pickled")
        alice.send(Who())
        assert alice.next() == Roster((Member("alice", LOCALHOST), Member("bob", LOCALHOST)), truncated=False)
        # The operator is warned (§4.3): a WARNING record of its own, not just the codec named.
        warnings = [line for line in h.server.stderr_tail(10_000).splitlines() if " WARNING " in line]
        assert any("only serve peers you trust" in line for line in warnings), warnings


# --- many clients --------------------------------------------------------------------------

STORM = 1500


class _StormClient:
    __slots__ = ("decoder", "name", "sock", "welcome")

    def __init__(self, sock: socket.socket, name: str) -> None:
        self.sock = sock
        self.name = name
        self.decoder = FrameDecoder()
        self.welcome: Welcome | None = None


def _storm(address: tuple[str, int], count: int, timeout: float) -> list[_StormClient]:
    """Connect ``count`` clients at once, each sending hello; return when all are welcomed.

    One thread, non-blocking sockets. Everything after the welcome (joined notices for
    later arrivals) is read and discarded, so no kernel buffer fills up.
    """
    codec = MsgpackCodec()
    selector = selectors.DefaultSelector()
    clients: list[_StormClient] = []
    try:
        for index in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            clients.append(_StormClient(sock, f"storm{index:04d}"))
            sock.connect_ex(address)
            selector.register(sock, selectors.EVENT_WRITE, clients[-1])
        waiting = count
        deadline = time.monotonic() + timeout
        while waiting:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"{waiting} of {count} clients not welcomed in {timeout} s"
            for key, events in selector.select(remaining):
                client: _StormClient = key.data
                if events & selectors.EVENT_WRITE:
                    error = client.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    assert error == 0, f"{client.name}: connect failed: {error}"
                    hello = encode_message(codec, Hello(client.name))
                    assert client.sock.send(hello) == len(hello)
                    selector.modify(client.sock, selectors.EVENT_READ, client)
                    continue
                data = client.sock.recv(1 << 16)
                assert data, f"{client.name}: closed by the server"
                if client.welcome is None:
                    client.decoder.feed(data)
                    payload = client.decoder.next_frame()
                    if payload is not None:
                        welcome = from_wire(codec.decode(payload), SERVER_MESSAGES)
                        assert isinstance(welcome, Welcome), welcome
                        client.welcome = welcome
                        waiting -= 1
        return clients
    except BaseException:
        for client in clients:
            client.sock.close()
        raise
    finally:
        selector.close()


def test_many_clients_at_once(impl: str) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < STORM + 100:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is too low")
    with serve(impl, "--log-level", "WARNING") as h:
        # A member's descriptor, counted once every earlier connection is settled; she then
        # quits so that the storm starts in an empty room. The watcher takes her place.
        alice = h.member("alice")
        assert alice.barrier() == []
        baseline = h.server.open_fds()
        assert baseline is not None
        alice.half_close()
        assert alice.wait_closed() == []
        clients = _storm(h.server.address, STORM, timeout=60)
        try:
            counts = sorted(c.welcome.clients for c in clients if c.welcome is not None)
            assert counts == list(range(1, STORM + 1))
            watcher = h.peer("watcher")
            assert watcher.join("watcher").clients == STORM + 1
        finally:
            for client in clients:
                client.sock.close()
        for remaining in range(STORM, 0, -1):
            left = watcher.expect(Left, timeout=30)
            assert (left.clients, left.reason) in ((remaining, "quit"), (remaining, "connection_lost"))
        assert watcher.barrier() == []
        assert h.server.open_fds() == baseline


# --- command line ----------------------------------------------------------------------------


def test_help_lists_the_shared_options(impl: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", impl, "--help"], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    for option in (
        "--host",
        "--port",
        "--codec",
        "--max-frame",
        "--hello-timeout",
        "--max-output-buffer",
        "--log-level",
    ):
        assert option in result.stdout


def test_port_in_use_is_an_error_not_a_traceback(impl: str) -> None:
    with socket.create_server((LOCALHOST, 0)) as taken:
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", impl, "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert result.returncode == 1
    assert result.stdout == ""
    assert "cannot listen" in result.stderr
    assert "Traceback" not in result.stderr


# --- protocol.serving, the servers' shared I/O-free helpers ------------------------------------


def test_peer_host_forms() -> None:
    assert peer_host("127.0.0.1") == "127.0.0.1"
    assert peer_host("::1") == "::1"
    assert peer_host("::ffff:192.0.2.7") == "192.0.2.7"
    assert peer_host("2001:DB8:0:0:0:0:0:1") == "2001:db8::1"  # RFC 5952 form


def test_deadlines_expire_in_order_and_cancel_cleanly() -> None:
    timers: Deadlines[int] = Deadlines(10.0)
    assert timers.next_deadline() is None
    for key, now in ((1, 0.0), (2, 1.0), (3, 2.0)):
        timers.arm(key, now)
    timers.cancel(2)
    timers.arm(1, 5.0)  # re-arming moves a timer to the back
    assert timers.next_deadline() == 12.0
    assert timers.expire(11.9) == []
    assert timers.expire(15.0) == [3, 1]
    assert len(timers) == 0
