"""Clustered rooms (spec §18): nodes of both servers on a redis-server each test starts itself.

Every test starts its own Redis on a free loopback port (conformance.redisproc) and its own
nodes, and stops them. Ordering across nodes is established with ping/pong barriers: a node
answers a ping once it has applied the room's log as far as Redis had it when the ping came
(§18.2), so after a barrier on each node, everything sent before is delivered.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import pytest

from conformance.redisproc import RedisProcess, launch_redis
from conformance.serverproc import BUNDLED, ServerProcess
from conformance.wire import Transcript, WirePeer
from protocol import Error, Hello, Joined, Left, Member, Relayed, Roster, Say, Shutdown, Welcome, Who
from protocol.constants import (
    CLUSTER_LEASE_REFRESH,
    CLUSTER_LEASE_TTL,
    CLUSTER_LOST_REASON,
    CLUSTER_RESET_REASON,
    CLUSTER_RESUME_BOUND,
)

#: One node of each server: the room must not care which one a client is on.
MIXED = ("impl_select", "impl_asyncio")
#: How long after a kill -9 the others announce its members at most (§18.5), and the slack a
#: loaded machine may add to it (scheduling, not the design).
NODE_DOWN_BOUND = CLUSTER_LEASE_TTL + 2 * CLUSTER_LEASE_REFRESH
SLACK = 3.0


@pytest.fixture
def redis() -> Iterator[RedisProcess]:
    server = launch_redis()
    try:
        yield server
    finally:
        server.close()


def start_node(implementation: str, redis: RedisProcess, *extra: str) -> ServerProcess:
    return ServerProcess(BUNDLED[implementation], extra_args=["--cluster", redis.url, *extra]).start()


#: Nodes a test killed on purpose: they exit with -SIGKILL, not 0.
KILLED: list[ServerProcess] = []  # the nodes themselves: an id() is reused once one is freed


def kill(node: ServerProcess) -> None:
    """kill -9 of the node's whole process group."""
    assert node.pid is not None
    KILLED.append(node)
    os.killpg(node.pid, signal.SIGKILL)


@contextmanager
def cluster(redis: RedisProcess, implementations: tuple[str, ...] = MIXED) -> Iterator[list[ServerProcess]]:
    """Nodes of one room; each must exit with status 0 and log no traceback, unless killed."""
    with ExitStack() as stack:
        nodes = []
        for implementation in implementations:
            node = start_node(implementation, redis)
            stack.callback(node.stop)
            nodes.append(node)
        yield nodes
        for node in nodes:
            status = node.stop()
            if any(node is killed for killed in KILLED):
                assert status == -signal.SIGKILL
                continue
            assert status == 0, node.stderr_tail()
            assert "Traceback" not in node.stderr_tail(200), node.stderr_tail(200)


class Peers:
    """Test peers sharing one transcript, all closed at the end."""

    def __init__(self) -> None:
        self.transcript = Transcript()
        self.all: list[WirePeer] = []

    def connect(self, node: ServerProcess, label: str) -> WirePeer:
        peer = WirePeer(node.address, label=label, transcript=self.transcript)
        self.all.append(peer)
        return peer

    def join(self, node: ServerProcess, name: str) -> WirePeer:
        peer = self.connect(node, name)
        peer.join(name)
        return peer

    def close(self) -> None:
        for peer in self.all:
            peer.close()


@pytest.fixture
def peers() -> Iterator[Peers]:
    made = Peers()
    try:
        yield made
    finally:
        made.close()


def settle(*members: WirePeer) -> None:
    """A barrier on every member: each has received all that was sent before."""
    for member in members:
        member.barrier()


# --- the room across nodes, as one server ---------------------------------------------------


def test_join_say_who_leave_across_nodes(redis: RedisProcess, peers: Peers) -> None:
    with cluster(redis) as (one, two):
        alice = peers.join(one, "alice")
        assert alice.welcome is not None and alice.welcome.clients == 1
        bob = peers.join(two, "bob")
        assert bob.welcome is not None and bob.welcome.clients == 2
        assert alice.expect(Joined) == Joined("bob", "127.0.0.1", 2)
        carol = peers.join(one, "carol")
        assert carol.welcome is not None and carol.welcome.clients == 3
        assert alice.expect(Joined) == Joined("carol", "127.0.0.1", 3)
        assert bob.expect(Joined) == Joined("carol", "127.0.0.1", 3)

        bob.send(Say("from two"))
        alice.send(Say("from one"))
        assert alice.expect(Relayed) == Relayed("bob", "127.0.0.1", "from two")
        assert bob.expect(Relayed) == Relayed("alice", "127.0.0.1", "from one")
        # Both says are in the log now, so a barrier shows all they caused: no echo (§8.4).
        for sender in (alice, bob):
            assert not [m for m in sender.barrier() if isinstance(m, Relayed)]
        to_carol = [m.text for m in carol.barrier() if isinstance(m, Relayed)]
        assert sorted(to_carol) == ["from one", "from two"]

        roster = Roster(
            (Member("alice", "127.0.0.1"), Member("bob", "127.0.0.1"), Member("carol", "127.0.0.1")), False
        )
        for member in (alice, bob, carol):
            member.send(Who())
            assert member.expect(Roster) == roster

        bob.close()
        assert alice.expect(Left) == Left("bob", "127.0.0.1", 2, "quit")
        assert carol.expect(Left) == Left("bob", "127.0.0.1", 2, "quit")
        # The name is free on every node from the departure on (§6.2).
        again = peers.join(one, "BOB")
        assert again.welcome is not None and again.welcome.clients == 3


def test_hello_pipelined_with_says_is_decided_first(redis: RedisProcess, peers: Peers) -> None:
    """Input after a hello waits until the log decides it (§18.4), so a pipelined say is
    relayed after the join, and one after a refused hello is hello_required."""
    with cluster(redis) as (one, two):
        alice = peers.join(one, "alice")
        bob = peers.connect(two, "bob")
        bob.send_raw(bob.frame(Hello("bob").to_wire()) + bob.frame(Say("right away").to_wire()))
        assert isinstance(bob.expect(Welcome), Welcome)
        assert alice.expect(Joined).name == "bob"
        assert alice.expect(Relayed) == Relayed("bob", "127.0.0.1", "right away")

        late = peers.connect(one, "late")
        late.send_raw(late.frame(Hello("Alice").to_wire()) + late.frame(Say("no").to_wire()))
        late.expect_error("name_taken", False)
        late.expect_error("hello_required", True)
        settle(alice, bob)
        assert not [m for m in alice.barrier() if isinstance(m, Relayed)]


def test_name_race_exactly_one_wins(redis: RedisProcess, peers: Peers) -> None:
    """Two nodes receive hellos for one name at the same instant: one welcome, one name_taken,
    every round, for equal keys and for equal skeletons alike (§6.2, §18.3)."""
    rounds = 40
    with cluster(redis) as (one, two):
        for index in range(rounds):
            first = peers.connect(one, f"first-{index}")
            second = peers.connect(two, f"second-{index}")
            # Odd rounds: the same key; even rounds: the same skeleton (a Cyrillic a).
            names = (
                (f"racer{index}", f"RACER{index}") if index % 2 else (f"alice{index}", f"\u0430lice{index}")
            )
            frames = [
                peer.frame(Hello(name).to_wire()) for peer, name in zip((first, second), names, strict=True)
            ]
            first.send_raw(frames[0])
            second.send_raw(frames[1])
            replies = [peer.expect(lambda m: isinstance(m, Welcome | Error)) for peer in (first, second)]
            welcomed = [reply for reply in replies if isinstance(reply, Welcome)]
            refused = [reply for reply in replies if isinstance(reply, Error)]
            assert len(welcomed) == 1 and len(refused) == 1, replies
            assert refused[0].code == "name_taken" and not refused[0].fatal
            assert welcomed[0].clients == index + 1  # every winner stays: the count is the log's
        watcher = peers.join(one, "watcher")
        watcher.send(Who())
        roster = watcher.expect(Roster)
        assert len(roster.members) == rounds + 1


def test_every_member_sees_one_sequence(redis: RedisProcess, peers: Peers) -> None:
    """Per-sender order (§11), and one order of everything for every member on every node."""
    count = 300
    with cluster(redis) as (one, two):
        ann = peers.join(one, "ann")
        ben = peers.join(two, "ben")
        watchers = [peers.join(one, "w1"), peers.join(two, "w2"), peers.join(two, "w3")]
        settle(ann, ben, *watchers)
        for index in range(count):
            ann.send(Say(f"a{index}"))
            ben.send(Say(f"b{index}"))
        settle(ann, ben)  # both senders' says are in the log: the watchers' barriers come after
        seen = []
        for watcher in watchers:
            received = [(m.name, m.text) for m in watcher.barrier() if isinstance(m, Relayed)]
            for name, prefix in (("ann", "a"), ("ben", "b")):
                assert [t for n, t in received if n == name] == [f"{prefix}{i}" for i in range(count)]
            seen.append(received)
        assert seen[0] == seen[1] == seen[2]


# --- failures -------------------------------------------------------------------------------


def test_node_killed_its_members_leave_once(redis: RedisProcess, peers: Peers) -> None:
    """kill -9 of one of three nodes: both survivors run the reap, and each of the dead node's
    members is announced once, on every node, within the bound; their names are free (§18.5)."""
    with cluster(redis, ("impl_select", "impl_asyncio", "impl_select")) as (one, two, three):
        alice = peers.join(one, "alice")
        dave = peers.join(three, "dave")
        bob = peers.join(two, "bob")
        carol = peers.join(two, "carol")
        settle(bob, carol)
        settle(alice, dave)
        killed = time.monotonic()
        kill(two)
        for member in (alice, dave):
            lefts = [member.expect(Left, timeout=NODE_DOWN_BOUND + SLACK) for _ in range(2)]
            assert [(m.name, m.clients, m.reason) for m in lefts] == [
                ("bob", 3, "connection_lost"),
                ("carol", 2, "connection_lost"),
            ]
        delay = time.monotonic() - killed
        print(f"announced {delay:.2f} s after kill -9 (bound {NODE_DOWN_BOUND:g} s)")
        # Once each: nothing more comes, and the names are free again.
        for member in (alice, dave):
            assert not [m for m in member.barrier() if isinstance(m, Left)]
        again = peers.join(three, "bob")
        assert again.welcome is not None and again.welcome.clients == 3


def test_redis_connections_dropped_nothing_lost(redis: RedisProcess, peers: Peers) -> None:
    """Redis closes every node's connections but keeps its data: the nodes resume where they
    were, the members stay, and what was said meanwhile arrives (§18.6)."""
    with cluster(redis) as (one, two):
        alice = peers.join(one, "alice")
        bob = peers.join(two, "bob")
        settle(alice, bob)
        alice.barrier()
        for index in range(50):
            alice.send(Say(f"before {index}"))
        assert redis_command(redis, b"CLIENT", b"KILL", b"TYPE", b"normal").startswith(b":")
        for index in range(50):
            alice.send(Say(f"after {index}"))
        alice.barrier()
        texts = [m.text for m in bob.barrier() if isinstance(m, Relayed)]
        assert texts == [f"before {i}" for i in range(50)] + [f"after {i}" for i in range(50)]
        bob.send(Who())
        assert len(bob.expect(Roster).members) == 2


def test_redis_restarted_members_told_and_new_room(redis: RedisProcess, peers: Peers) -> None:
    """Redis restarts without its data: the room's log is gone, so every member is told with
    shutdown and closed; the nodes then serve a new, empty room (§18.6)."""
    with cluster(redis) as (one, two):
        alice = peers.join(one, "alice")
        bob = peers.join(two, "bob")
        settle(alice, bob)
        redis.restart()
        for member in (alice, bob):
            notice = member.expect(Shutdown, timeout=CLUSTER_RESUME_BOUND + SLACK)
            assert notice.reason in (CLUSTER_RESET_REASON, CLUSTER_LOST_REASON)
            member.wait_closed()
        fresh = peers.join(two, "alice")
        assert fresh.welcome is not None and fresh.welcome.clients == 1
        other = peers.join(one, "bob")
        assert other.welcome is not None and other.welcome.clients == 2
        assert fresh.expect(Joined).name == "bob"


def test_redis_away_past_the_bound(redis: RedisProcess, peers: Peers) -> None:
    """Redis stays away longer than the resume bound: members are told (shutdown) and closed;
    no node crashes or hangs, and once Redis is back hellos are welcome again (§18.6)."""
    with cluster(redis) as (one, two):
        alice = peers.join(one, "alice")
        bob = peers.join(two, "bob")
        settle(alice, bob)
        stopped = time.monotonic()
        redis.stop()
        for member in (alice, bob):
            notice = member.expect(Shutdown, timeout=CLUSTER_RESUME_BOUND + SLACK)
            assert notice.reason == CLUSTER_LOST_REASON
            member.wait_closed()
        assert time.monotonic() - stopped >= CLUSTER_RESUME_BOUND
        assert one.alive() and two.alive()
        # Until a node is back in the room it refuses hellos at once, with the same notice.
        refused = peers.connect(one, "refused")
        refused.send(Hello("carol"))
        assert refused.expect(Shutdown).reason == CLUSTER_LOST_REASON
        redis.start()
        for node in (one, two):
            assert join_when_back(peers, node, f"back{node.port}").welcome is not None
        watcher = peers.join(two, "watcher")
        assert watcher.welcome is not None and watcher.welcome.clients == 3


def test_shutdown_of_a_node_announces_its_members(redis: RedisProcess, peers: Peers) -> None:
    """A node stopped by SIGTERM tells its members (shutdown) and removes them from the room at
    once, so the other nodes announce them without waiting for the lease (§18.5)."""
    with cluster(redis) as (one, two):
        alice = peers.join(one, "alice")
        bob = peers.join(two, "bob")
        settle(alice, bob)
        two.signal(signal.SIGTERM)
        assert bob.expect(Shutdown).reason == "server shutting down"
        bob.close()
        assert alice.expect(Left, timeout=CLUSTER_LEASE_TTL) == Left("bob", "127.0.0.1", 1, "connection_lost")
        assert two.wait(10) == 0


def join_when_back(peers: Peers, node: ServerProcess, name: str, within: float = 10.0) -> WirePeer:
    """Join ``node`` as ``name``, trying again while it refuses hellos (its room unavailable)."""
    deadline = time.monotonic() + within
    while True:
        peer = peers.connect(node, name)
        peer.send(Hello(name))
        reply = peer.expect(lambda m: isinstance(m, Welcome | Shutdown))
        if isinstance(reply, Welcome):
            peer.welcome = reply
            return peer
        assert reply.reason == CLUSTER_LOST_REASON
        assert time.monotonic() < deadline, f"{name}: the room is still unavailable after {within:g} s"
        peer.close()


def redis_command(redis: RedisProcess, *args: bytes) -> bytes:
    """One command to ``redis`` on a connection of its own; the raw first reply line."""
    command = b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)
    with socket.create_connection((redis.host, redis.port), timeout=5) as sock:
        sock.sendall(command)
        return sock.recv(4096)
