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
from collections.abc import Callable, Iterable, Iterator, Sequence
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
from protocol.constants import DEFAULT_MAX_FRAME, HEADER_SIZE
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
    #: Octets of the frames taken so far, headers included.
    octets: int = 0
    #: Each pong's token, and when it was taken (``time.monotonic()``) with ``octets`` then.
    pongs: dict[str, tuple[float, int]] = field(default_factory=dict)
    #: Broken rules, described as they were seen; a test asserts this stays empty.
    violations: list[str] = field(default_factory=list)

    def received_from(self, sender: str) -> int:
        """How many messages from ``sender`` arrived (all in order, or a violation says otherwise)."""
        return self.next_sequence.get(sender, 0) - self.first_sequence.get(sender, 0)

    def errors(self) -> list[Error]:
        return [message for message in self.others if isinstance(message, Error)]

    def _take(self, payload: bytes) -> None:
        self.octets += HEADER_SIZE + len(payload)
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
            self.pongs[message.token] = (time.monotonic(), self.octets)
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
    """Peers of one server (or of a cluster's nodes, in turn), all served by one selector."""

    def __init__(
        self,
        address: tuple[str, int],
        codec: Codec | None = None,
        *,
        addresses: Sequence[tuple[str, int]] = (),
    ) -> None:
        self.address = address
        #: Where peers connect, one after the other: a cluster's nodes, or just ``address``.
        self.addresses = list(addresses) or [address]
        self._next_address = itertools.cycle(self.addresses)
        self.codec: Codec = codec if codec is not None else MsgpackCodec()
        self.selector = selectors.DefaultSelector()
        self.peers: list[Peer] = []
        #: The address each peer connected to.
        self.address_of: dict[Peer, tuple[str, int]] = {}

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

    def open(
        self, names: Iterable[str], *, rcvbuf: int | None = None, address: tuple[str, int] | None = None
    ) -> list[Peer]:
        """Start connecting one peer per name (to ``address``, or to the next node in turn);
        ``pump`` completes the connections."""
        opened = []
        fixed = address
        for name in names:
            address = fixed or next(self._next_address)
            sock = socket.socket(socket.AF_INET6 if ":" in address[0] else socket.AF_INET)
            if rcvbuf is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: the window
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            peer = Peer(name, sock, self.codec)
            code = sock.connect_ex(address)
            if code not in (0, errno.EINPROGRESS):
                sock.close()
                raise OSError(code, f"{name}: connect failed: {errno.errorcode.get(code, code)}")
            self.selector.register(sock, selectors.EVENT_WRITE, peer)
            self.peers.append(peer)
            self.address_of[peer] = address
            opened.append(peer)
        return opened

    def join(self, names: Iterable[str], timeout: float = 30.0, *, rcvbuf: int | None = None) -> list[Peer]:
        """Connect (with ``SO_RCVBUF`` set to ``rcvbuf``), send hello, and wait for every welcome."""
        peers = self.open(names, rcvbuf=rcvbuf)
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


# --- a room's accounting ------------------------------------------------------------------------


def knows_everyone(peer: Peer, count: int) -> bool:
    """Its welcome counted those before it; a joined followed for each later one."""
    assert peer.welcome is not None
    later = sum(isinstance(m, Joined) for m in peer.others)
    return peer.welcome.clients - 1 + later == count - 1


#: Messages each sender sends per round; readers catch up between rounds, which bounds what
#: the server holds for any reader to one round of everyone's messages.
BATCH = 50


@dataclass
class AccountedRoom:
    """What :func:`accounted_room` checked."""

    clients: int
    churn: int
    messages: int
    delivered: int
    elapsed: float
    #: The members at the end (stayers and latecomers), before they closed.
    present: list[Peer]

    def describe(self) -> str:
        return (
            f"{self.clients} + {self.churn} clients x {self.messages} messages: {self.delivered} deliveries "
            f"checked in {self.elapsed:.1f} s ({self.delivered / self.elapsed:,.0f}/s)"
        )


def accounted_room(
    crowd: Crowd,
    clients: int,
    messages: int,
    *,
    after_joins: Callable[[], None] = lambda: None,
    before_close: Callable[[list[Peer]], None] = lambda present: None,
) -> AccountedRoom:
    """``clients`` x ``messages`` with churn through ``crowd``'s server, every delivery accounted.

    Every message reaches every client present for it exactly once, each sender's order kept;
    leavers' messages all arrive, then their ``left``; latecomers get an unbroken tail. Calls
    ``after_joins`` once every client knows every other, ``before_close`` with the members
    at the end, then closes them all.
    """
    churn = max(2, clients // 20)  # leavers, and as many latecomers
    midway = messages // 2 // BATCH * BATCH
    started = time.monotonic()
    first = crowd.join((f"c{i:04d}" for i in range(clients)), timeout=60 + clients / 10)
    counts = sorted(p.welcome.clients for p in first if p.welcome is not None)
    assert counts == list(range(1, clients + 1))
    everyone_known = at_most_every(0.05, lambda: all(knows_everyone(p, clients) for p in first))
    crowd.pump(everyone_known, 60, "every joined")
    after_joins()
    leavers, stayers = first[:churn], first[churn:]
    latecomers: list[Peer] = []
    sent = dict.fromkeys(first, 0)

    def caught_up() -> bool:
        # A cheap count first: the stayers hear every sender from its first message on.
        total = sum(sent.values())
        if sum(r.relayed for r in stayers) < sum(total - sent[r] for r in stayers):
            return False
        readers = stayers + latecomers
        # A member the server cut (slow_consumer, say) never catches up: fail now, with why.
        cut = [(p.name, p.ended, [e.code for e in p.errors()]) for p in readers if p.ended]
        assert not cut, f"members ended before the end: {cut[:5]}"
        return all(
            reader.next_sequence.get(sender.name, 0) >= sent[sender]
            for reader in readers
            for sender in readers
            if sender is not reader
        )

    def churned() -> bool:
        return all(p.welcome is not None for p in latecomers) and all(
            leaver.ended and leaver.name in reader.left_at for leaver in leavers for reader in stayers
        )

    for start in range(0, messages, BATCH):
        if start == midway:
            # The leavers send the rest at once and quit; latecomers join, then send all theirs.
            for peer in leavers:
                crowd.say(peer, range(sent[peer], messages))
                sent[peer] = messages
                crowd.half_close(peer)
            latecomers = crowd.open(f"late{i:03d}" for i in range(churn))
            for peer in latecomers:
                crowd.send(peer, Hello(peer.name))
            crowd.pump(at_most_every(0.05, churned), 60, "the leavers gone and the latecomers in")
            for peer in latecomers:
                crowd.say(peer, range(messages))
                sent[peer] = messages
        for peer in stayers if latecomers else first:
            end = min(start + BATCH, messages)
            crowd.say(peer, range(sent[peer], end))
            sent[peer] = end
        crowd.pump(at_most_every(0.05, caught_up), 60 + clients * clients * BATCH / 20_000, "a round")
    present = stayers + latecomers
    # Whatever was in flight (a duplicate, a message after a left) is in before the pongs.
    crowd.barrier(present)
    elapsed = time.monotonic() - started
    delivered = sum(p.relayed for p in crowd.peers)

    for peer in crowd.peers:
        assert peer.violations == [], peer.violations[:10]
        assert peer.errors() == []
    for leaver in leavers:
        assert leaver.ended == "FIN"
    for reader in stayers:
        for sender in present + leavers:
            if sender is not reader:
                assert reader.received_from(sender.name) == messages, (reader.name, sender.name)
        for leaver in leavers:
            assert reader.left_at[leaver.name] == messages  # all its messages, then its left (§11.3)
        lefts = [m for m in reader.others if isinstance(m, Left)]
        assert sorted(m.name for m in lefts) == sorted(p.name for p in leavers)
        assert {m.reason for m in lefts} == {"quit"}
        joined = [m.name for m in reader.others if isinstance(m, Joined)]
        assert sorted(joined[-churn:]) == sorted(p.name for p in latecomers)
    for reader in latecomers:
        for sender in stayers:
            # Present from its welcome on: an unbroken tail from midway at the latest.
            assert reader.first_sequence[sender.name] <= midway
            assert reader.next_sequence[sender.name] == messages
        for sender in latecomers:
            if sender is not reader:
                assert reader.received_from(sender.name) == messages
        for leaver in leavers:
            # It joined while the leavers were sending their last: an unbroken tail, then left.
            if leaver.name in reader.next_sequence:
                assert reader.next_sequence[leaver.name] == messages
                assert reader.left_at[leaver.name] == messages

    before_close(present)
    for peer in present:
        crowd.half_close(peer)
    crowd.pump(lambda: all(p.ended for p in present), 60, "every close")
    return AccountedRoom(clients, churn, messages, delivered, elapsed, present)


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
