"""Many clients on one thread, for the load and fault tests: non-blocking sockets, one selector,
and per-sender accounting of every relayed message.

Each ``say`` a crowd sends carries ``<sender>#<sequence>#<padding>``. Every receiver keeps,
for each sender, the next sequence number it expects, so a lost, duplicated or reordered
message is caught when it happens, not estimated by counting at the end. ``joined`` and
``left`` are checked against the same numbers: a sender's messages come after its joined
and before its left (§11).

Every wait is a bounded loop over the selector (``pump``), and ordering between clients is
established with ping/pong barriers, never with sleeps.
"""

from __future__ import annotations

import errno
import itertools
import resource
import selectors
import socket
import struct
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from conformance.serverproc import BUNDLED, ServerProcess
from protocol import (
    SERVER_MESSAGES,
    Codec,
    Error,
    FrameDecoder,
    Hello,
    Joined,
    Left,
    Message,
    MsgpackCodec,
    Ping,
    Pong,
    ProtocolError,
    Say,
    Welcome,
    encode_message,
)
from protocol.constants import DEFAULT_MAX_FRAME
from protocol.messages import from_wire

READ_SIZE = 1 << 18
_tokens = itertools.count(1)


def say_text(sender: str, sequence: int, padding: int = 0) -> str:
    return f"{sender}#{sequence}#{'.' * padding}"


@dataclass(eq=False)
class Peer:
    """One client: its socket, what it has to send, and what it has received."""

    name: str
    sock: socket.socket
    codec: Codec
    connected: bool = False
    reading: bool = True
    #: Half-close once everything queued is sent.
    closing: bool = False
    out: bytearray = field(default_factory=bytearray)
    decoder: FrameDecoder = field(default_factory=lambda: FrameDecoder(DEFAULT_MAX_FRAME))
    welcome: Welcome | None = None
    #: "FIN" or "RST" once the server ended the stream; "local" once this side closed.
    ended: str = ""
    #: For each sender, the sequence number of the next message expected from it.
    next_sequence: dict[str, int] = field(default_factory=dict)
    #: For each sender, the first sequence number received (a late joiner starts mid-stream).
    first_sequence: dict[str, int] = field(default_factory=dict)
    relayed: int = 0
    #: For each sender whose left arrived: how far its messages had got by then.
    left_at: dict[str, int | None] = field(default_factory=dict)
    #: Every other message, in arrival order.
    others: list[Message] = field(default_factory=list)
    pongs: set[str] = field(default_factory=set)
    #: Broken rules, described as they were seen; a test asserts this stays empty.
    violations: list[str] = field(default_factory=list)

    def received_from(self, sender: str) -> int:
        """How many messages from ``sender`` arrived (all in order, or a violation says otherwise)."""
        return self.next_sequence.get(sender, 0) - self.first_sequence.get(sender, 0)

    def errors(self) -> list[Error]:
        return [message for message in self.others if isinstance(message, Error)]

    def _take(self, payload: bytes) -> None:
        try:
            value: Any = self.codec.decode(payload)
        except ProtocolError as exc:
            self.violations.append(f"{self.name}: undecodable frame from the server: {exc!r}")
            return
        if type(value) is dict and value.get("type") == "message":
            self._relayed(value)
            return
        try:
            message = from_wire(value, SERVER_MESSAGES)
        except ProtocolError as exc:
            self.violations.append(f"{self.name}: invalid server message {exc!r}")
            return
        if isinstance(message, Welcome):
            if self.welcome is not None:
                self.violations.append(f"{self.name}: a second welcome")
            self.welcome = message
        elif isinstance(message, Pong):
            self.pongs.add(message.token)
        elif isinstance(message, Joined) and message.name in self.next_sequence:
            self.violations.append(f"{self.name}: joined for {message.name} after its messages (§11)")
        elif isinstance(message, Left):
            self.left_at[message.name] = self.next_sequence.get(message.name)
        self.others.append(message)

    def _relayed(self, value: dict[str, Any]) -> None:
        self.relayed += 1
        name, text = value.get("name"), value.get("text")
        if not isinstance(text, str) or not isinstance(name, str) or text.count("#") < 2:
            self.violations.append(f"{self.name}: relayed message not from a crowd: {value!r:.200}")
            return
        sender, sequence_text, _ = text.split("#", 2)
        sequence = int(sequence_text)
        if sender != name:
            self.violations.append(f"{self.name}: {sender}'s text relayed under the name {name}")
        if name in self.left_at:
            self.violations.append(f"{self.name}: #{sequence} from {name} after its left (§11)")
        expected = self.next_sequence.setdefault(name, sequence)
        self.first_sequence.setdefault(name, sequence)
        if sequence != expected:
            kind = "duplicate or reordered" if sequence < expected else "gap"
            self.violations.append(f"{self.name}: from {name} got #{sequence}, expected #{expected} ({kind})")
        self.next_sequence[name] = sequence + 1


class Crowd:
    """Peers of one server, all served by one selector."""

    def __init__(self, address: tuple[str, int], codec: Codec | None = None) -> None:
        self.address = address
        self.codec: Codec = codec if codec is not None else MsgpackCodec()
        self.selector = selectors.DefaultSelector()
        self.peers: list[Peer] = []

    def __enter__(self) -> Crowd:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        for peer in self.peers:
            if peer.ended != "local":
                self._forget(peer)
                peer.sock.close()
        self.selector.close()

    # --- connections ----------------------------------------------------------------------

    def open(self, names: Iterable[str], *, rcvbuf: int | None = None) -> list[Peer]:
        """Start connecting one peer per name; ``pump`` completes the connections."""
        opened = []
        for name in names:
            sock = socket.socket(socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET)
            if rcvbuf is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: the window
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            peer = Peer(name, sock, self.codec)
            code = sock.connect_ex(self.address)
            if code not in (0, errno.EINPROGRESS):
                sock.close()
                raise OSError(code, f"{name}: connect failed: {errno.errorcode.get(code, code)}")
            self.selector.register(sock, selectors.EVENT_WRITE, peer)
            self.peers.append(peer)
            opened.append(peer)
        return opened

    def join(self, names: Iterable[str], timeout: float = 30.0) -> list[Peer]:
        """Connect, send hello, and wait for every welcome."""
        peers = self.open(names)
        for peer in peers:
            self.send(peer, Hello(peer.name))
        self.pump(lambda: all(p.welcome is not None for p in peers), timeout, "every welcome")
        return peers

    def send(self, peer: Peer, *messages: Message) -> None:
        self.send_raw(peer, b"".join(encode_message(self.codec, message) for message in messages))

    def send_raw(self, peer: Peer, data: bytes) -> None:
        peer.out += data
        if peer.connected:
            self._flush(peer)
            self._watch(peer)

    def say(self, peer: Peer, sequences: Iterable[int], padding: int = 0) -> None:
        """Queue one say per sequence number, in one write."""
        self.send(peer, *(Say(say_text(peer.name, n, padding)) for n in sequences))

    def ping(self, peers: Iterable[Peer]) -> Callable[[], bool]:
        """Each peer pings; returns the condition "every pong is back" for ``pump``."""
        tokens = []
        for peer in peers:
            token = f"t{next(_tokens)}"
            self.send(peer, Ping(token))
            tokens.append((peer, token))
        return lambda: all(token in peer.pongs for peer, token in tokens)

    def barrier(self, peers: Iterable[Peer], timeout: float = 30.0) -> None:
        """Ping from each of ``peers`` and wait for every pong (§11: all they caused is queued)."""
        self.pump(self.ping(list(peers)), timeout, "every pong")

    def stall(self, peer: Peer) -> None:
        """Stop reading: the server's data piles up in this socket, then in the server (§10)."""
        peer.reading = False
        self._watch(peer)

    def half_close(self, peer: Peer) -> None:
        """Send FIN once everything queued is sent, and go on reading."""
        peer.closing = True
        self._flush(peer)

    def reset(self, peer: Peer) -> None:
        """Close with RST (SO_LINGER 0), as a crashed client would."""
        peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.hang_up(peer)

    def hang_up(self, peer: Peer) -> None:
        """Close this side now, whatever is unread or unsent."""
        self._forget(peer)
        peer.sock.close()
        peer.ended = "local"

    # --- the loop ---------------------------------------------------------------------------

    def pump(self, until: Callable[[], bool], timeout: float, what: str) -> None:
        """Move bytes both ways until ``until()`` holds; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not until():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"waited {timeout} s for {what}; {self.describe()}")
            # Short: ``until`` may be throttled (at_most_every), and must be asked again soon.
            for key, events in self.selector.select(min(remaining, 0.02)):
                peer: Peer = key.data
                if events & selectors.EVENT_WRITE:
                    self._writable(peer)
                if events & selectors.EVENT_READ and not peer.ended:
                    self._read(peer)

    def describe(self) -> str:
        waiting = [p.name for p in self.peers if p.welcome is None and not p.ended][:5]
        unsent = sum(len(p.out) for p in self.peers)
        violations = [v for p in self.peers for v in p.violations][:5]
        return f"not welcomed: {waiting}, unsent octets: {unsent}, violations: {violations}"

    def _writable(self, peer: Peer) -> None:
        if not peer.connected:
            error = peer.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                peer.violations.append(f"{peer.name}: connect failed: {errno.errorcode.get(error, error)}")
                self._end(peer, "RST")
                return
            peer.connected = True
        self._flush(peer)
        self._watch(peer)

    def _flush(self, peer: Peer) -> None:
        if peer.ended or not peer.connected:
            return
        if peer.out:
            try:
                sent = peer.sock.send(peer.out)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._end(peer, "RST")
                return
            del peer.out[:sent]
        if peer.closing and not peer.out:
            peer.closing = False
            peer.sock.shutdown(socket.SHUT_WR)

    def _read(self, peer: Peer) -> None:
        try:
            data = peer.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._end(peer, "RST")
            return
        if not data:
            self._end(peer, "FIN")
            return
        peer.decoder.feed(data)
        try:
            while (payload := peer.decoder.next_frame()) is not None:
                peer._take(payload)
        except ProtocolError as exc:
            peer.violations.append(f"{peer.name}: frame over max_frame from the server: {exc!r}")
            self._end(peer, "RST")

    def _end(self, peer: Peer, how: str) -> None:
        peer.ended = how
        self._forget(peer)

    def _forget(self, peer: Peer) -> None:
        if peer.sock.fileno() >= 0 and peer.sock in self.selector.get_map():
            self.selector.unregister(peer.sock)

    def _watch(self, peer: Peer) -> None:
        if peer.ended:
            return
        events = (selectors.EVENT_READ if peer.reading and peer.connected else 0) | (
            selectors.EVENT_WRITE if peer.out or not peer.connected else 0
        )
        try:
            key = self.selector.get_key(peer.sock)
        except KeyError:
            if events:
                self.selector.register(peer.sock, events, peer)
            return
        if not events:
            self.selector.unregister(peer.sock)
        elif key.events != events:
            self.selector.modify(peer.sock, events, peer)


# --- servers -------------------------------------------------------------------------------------


@contextmanager
def running(impl: str, *args: str) -> Iterator[ServerProcess]:
    """Run a bundled server for the duration of a test; on leaving, check it stops cleanly."""
    server = ServerProcess(BUNDLED[impl], extra_args=args).start()
    try:
        yield server
    finally:
        status = server.stop()
    log = server.stderr_tail(100_000)
    assert status == 0, log
    assert "Traceback" not in log, log


def fds(server: ServerProcess) -> int:
    """The server's open descriptors (Linux)."""
    count = server.open_fds()
    assert count is not None, "no /proc: descriptor checks need Linux"
    return count


def rss(server: ServerProcess) -> int:
    """The server's resident memory in KiB (Linux)."""
    kib = server.rss_kib()
    assert kib is not None, "no /proc: memory checks need Linux"
    return kib


def raise_descriptor_limit(needed: int) -> None:
    """Let this process open ``needed`` sockets, or skip the test."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < needed:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below the {needed} descriptors needed")


def settle(read: Callable[[], int | None], target: int, timeout: float, what: str) -> int:
    """Poll a measurement of the server until it equals ``target``; returns the last value.

    For what no message can signal: the server closes a connection that never joined
    without a word to anyone, so its descriptor count is watched until it drops.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if value == target or time.monotonic() >= deadline:
            assert value == target, f"{what}: {value}, expected {target} within {timeout} s"
            return value
        time.sleep(0.02)  # a polling interval, not a synchronisation


def at_most_every(interval: float, condition: Callable[[], bool]) -> Callable[[], bool]:
    """``condition``, evaluated at most every ``interval`` seconds (false in between): for costly checks."""
    due = time.monotonic()

    def throttled() -> bool:
        nonlocal due
        if time.monotonic() < due:
            return False
        due = time.monotonic() + interval
        return condition()

    return throttled
