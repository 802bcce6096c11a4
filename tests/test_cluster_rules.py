"""A clustered room's node without Redis (spec §18): ClusterRules and its RedisLinks, sans I/O.

The tests play Redis: they read the RESP commands the links queue and feed replies back, and
drive the node's connections through a MemoryServer. No socket, no clock but the test's.
"""

from __future__ import annotations

from typing import Any

import hiredis
import pytest

from protocol import (
    FrameDecoder,
    Hello,
    Joined,
    Left,
    MsgpackCodec,
    Ping,
    Pong,
    Say,
    Shutdown,
    Welcome,
    encode_message,
)
from protocol.cluster import ClusterAddress, ClusterRules, LinkState, RedisLink
from protocol.cluster.scripts import SCRIPTS
from protocol.constants import (
    CLUSTER_BACKOFF_MAX,
    CLUSTER_BACKOFF_MIN,
    CLUSTER_DOWN_REASON,
    CLUSTER_GAP_REASON,
    CLUSTER_HELD_REASON,
    CLUSTER_LEASE_REFRESH,
    CLUSTER_LOST_REASON,
    CLUSTER_REPLY_TIMEOUT,
    CLUSTER_RESET_REASON,
    CLUSTER_RESUME_BOUND,
    SHUTDOWN_FLUSH_TIMEOUT,
)
from protocol.messages import SERVER_MESSAGES, from_wire
from protocol.server import ServerCore
from protocol.server.memory import MemoryServer

CODEC = MsgpackCodec()
EPOCH = b"epoch-1"
#: Where a say proposal's texts begin: EVALSHA, its SHA, the key count, 7 keys, 5 shared
#: arguments (scripts.py) and the client.
SAY_TEXTS = 16


def resp(value: Any) -> bytes:
    """``value`` as Redis would send it: None is nil, str a status, bytes a bulk string."""
    if value is None:
        return b"$-1\r\n"
    if isinstance(value, int):
        return b":%d\r\n" % value
    if isinstance(value, str):
        return f"+{value}\r\n".encode()
    if isinstance(value, bytes):
        return b"$%d\r\n%s\r\n" % (len(value), value)
    return b"*%d\r\n" % len(value) + b"".join(resp(item) for item in value)


def commands(link: RedisLink) -> list[list[bytes]]:
    """The commands ``link`` has queued since the last call, parsed."""
    reader = hiredis.Reader()
    reader.feed(link.take_output())
    parsed = []
    while (command := reader.gets()) is not False:
        parsed.append(command)
    return parsed


def messages(data: bytes) -> list[Any]:
    decoder = FrameDecoder(1 << 20)
    decoder.feed(data)
    return [from_wire(CODEC.decode(payload), SERVER_MESSAGES) for payload in decoder.frames()]


class Node:
    """One node's rules and core, its links up and the room loaded from an empty snapshot."""

    def __init__(self, core: dict[str, Any] | None = None, **options: Any) -> None:
        self.rules = ClusterRules(
            CODEC, server_name="test/1", address=ClusterAddress("127.0.0.1", 6379, 0), **options
        )
        self.server = MemoryServer(ServerCore(CODEC, server_name="test/1", rules=self.rules, **(core or {})))
        self.seq = 0
        self.server.advance(0.0)
        self.up()
        self.load([])

    def feed(self, link: RedisLink, *replies: Any) -> None:
        self.rules.link_received(link, b"".join(resp(reply) for reply in replies), self.server.now)
        self.server.advance(0.0)

    def up(self) -> None:
        for link in self.rules.links:
            assert link.wants_connect(self.server.now)
            link.connecting()
            self.rules.link_connected(link, self.server.now)
        assert commands(self.rules.reader) == [[b"SELECT", b"0"]]
        self.feed(self.rules.reader, "OK")

    def load(self, members: list[bytes], *, seq: int = 0, holders: tuple[bytes, ...] = ()) -> None:
        sent = commands(self.rules.commands)
        names = [command[0] for command in sent]
        assert names == [b"SELECT"] + [b"SCRIPT"] * len(SCRIPTS) + [b"SET", b"EVALSHA"]
        assert sent[-1][1] == SCRIPTS["snapshot"].sha.encode()
        self.seq = seq
        self.feed(self.rules.commands, "OK", *(s.sha.encode() for s in SCRIPTS.values()), "OK")
        self.feed(self.rules.commands, [EPOCH, seq, b"%d-0" % seq, members, list(holders)])
        assert self.rules.epoch == EPOCH
        (read,) = commands(self.rules.reader)
        assert read[0] == b"XREAD"

    def entries(self, *entries: tuple[bytes, ...]) -> None:
        """Deliver log entries (fields after ``q``) as the answer to the pending XREAD."""
        batch = []
        for fields in entries:
            self.seq += 1
            batch.append([b"%d-0" % self.seq, [b"q", b"%d" % self.seq, *fields]])
        self.feed(self.rules.reader, [[b"chatwire:{main}:log", batch]])

    def member(self, client: int) -> bytes:
        return f"{self.rules.node}:{client}".encode()

    def join(self, name: str) -> int:
        """Connect and join ``name`` through the log; returns the client id."""
        client = self.server.connect("192.0.2.7")
        self.server.receive(client, encode_message(CODEC, Hello(name)))
        (proposal,) = commands(self.rules.commands)
        assert proposal[1] == SCRIPTS["join"].sha.encode()
        self.feed(self.rules.commands, b"ok")
        assert self.messages(client) == []  # nothing before the log decides
        count = len(self.rules.members) + 1
        self.entries(
            (
                b"k",
                b"j",
                b"m",
                self.member(client),
                b"n",
                name.encode(),
                b"h",
                b"192.0.2.7",
                b"c",
                b"%d" % count,
            )
        )
        assert isinstance(self.messages(client)[0], Welcome)
        return client

    def messages(self, client: int) -> list[Any]:
        return messages(self.server.read(client))


def test_cluster_address_parse() -> None:
    assert ClusterAddress.parse("redis://10.0.0.1:6380/2") == ClusterAddress("10.0.0.1", 6380, 2)
    assert ClusterAddress.parse("redis://localhost") == ClusterAddress("localhost", 6379, 0)
    assert str(ClusterAddress.parse("redis://[::1]:7000/1")) == "redis://[::1]:7000/1"
    for bad in ("http://x:1/0", "redis://", "redis://h:1/x", "redis://u:p@h:1/0", "redis://h:99999/0"):
        with pytest.raises(ValueError):
            ClusterAddress.parse(bad)


# --- the link ----------------------------------------------------------------------------------


def test_link_replies_go_to_their_commands_in_order_in_one_write() -> None:
    link = RedisLink("test", "127.0.0.1", 6379, 0)
    link.connecting()
    link.connected(0.0)
    got: list[Any] = []
    link.command(("GET", "a"), got.append)
    link.command(("GET", "b"), got.append)
    assert [c[0] for c in commands(link)] == [b"SELECT", b"GET", b"GET"]  # one take: one write
    data = resp("OK") + resp(b"1") + resp(None)
    link.receive(data[:5], 0.0)
    link.receive(data[5:], 0.0)
    assert got == [b"1", None]
    assert link.next_deadline() is None


def test_link_late_reply_drops_it_and_backoff_doubles_to_its_cap() -> None:
    link = RedisLink("test", "127.0.0.1", 6379, 0)
    downs: list[float] = []
    link.on_down = downs.append
    link.connecting()
    link.connected(0.0)
    assert link.next_deadline() == CLUSTER_REPLY_TIMEOUT  # SELECT unanswered
    link.expire(CLUSTER_REPLY_TIMEOUT)
    assert link.state is LinkState.DOWN and link.wants_close and downs == [CLUSTER_REPLY_TIMEOUT]
    link.lost(CLUSTER_REPLY_TIMEOUT)  # the server closed the socket
    assert not link.wants_close
    now = CLUSTER_REPLY_TIMEOUT
    waits = []
    for _ in range(8):  # connecting fails each time: the wait doubles up to its cap
        retry = link.next_deadline()
        assert retry is not None and not link.wants_connect(retry - 0.001) and link.wants_connect(retry)
        waits.append(retry - now)
        now = retry
        link.connecting()
        link.lost(now, "connection refused")
    assert waits[:2] == pytest.approx([CLUSTER_BACKOFF_MIN, 2 * CLUSTER_BACKOFF_MIN])
    assert waits[-1] == pytest.approx(CLUSTER_BACKOFF_MAX) and max(waits) == pytest.approx(
        CLUSTER_BACKOFF_MAX
    )
    link.command(("GET", "x"))  # down: dropped, not queued for later
    assert link.take_output() == b""
    link.connecting()
    link.connected(now)  # a connection that works starts the backoff over
    link.drop(now, "test")
    assert link.next_deadline() == pytest.approx(now + CLUSTER_BACKOFF_MIN)


def test_link_unreadable_or_unasked_reply_drops_it() -> None:
    for data in (b"?garbage\r\n", resp("OK") + resp("OK")):
        link = RedisLink("test", "127.0.0.1", 6379, 0)
        link.connecting()
        link.connected(0.0)
        link.receive(data, 0.0)
        assert link.state is LinkState.DOWN


# --- the room, applied from the log ----------------------------------------------------------


def test_join_welcomed_only_when_the_log_says_and_counts_are_the_logs() -> None:
    node = Node()
    alice = node.join("alice")
    # A member of another node joins: announced with the log's count.
    node.entries((b"k", b"j", b"m", b"other:1", b"n", b"bob", b"h", b"198.51.100.1", b"c", b"2"))
    assert node.messages(alice) == [Joined("bob", "198.51.100.1", 2)]
    # A say of the other node's member is relayed; one of alice's is not echoed to her.
    node.entries(
        (b"k", b"s", b"m", b"other:1", b"t", b"hi"), (b"k", b"s", b"m", node.member(alice), b"t", b"me")
    )
    assert [m.text for m in node.messages(alice)] == ["hi"]
    node.entries((b"k", b"l", b"m", b"other:1", b"r", b"quit", b"c", b"1"))
    assert node.messages(alice) == [Left("bob", "198.51.100.1", 1, "quit")]


def test_a_refusal_in_the_log_is_name_taken_and_releases_held_input() -> None:
    node = Node()
    client = node.server.connect("192.0.2.7")
    node.server.receive(client, encode_message(CODEC, Hello("alice")) + encode_message(CODEC, Say("x")))
    commands(node.rules.commands)
    node.entries((b"k", b"x", b"m", node.member(client), b"w", b"key"))
    errors = node.messages(client)
    assert [(e.code, e.fatal) for e in errors] == [("name_taken", False), ("hello_required", True)]


def test_says_of_one_turn_are_one_proposal_and_ping_waits_for_the_log() -> None:
    node = Node()
    alice = node.join("alice")
    frames = b"".join(encode_message(CODEC, Say(f"s{i}")) for i in range(5))
    node.server.receive(alice, frames + encode_message(CODEC, Ping("t")))
    say, position = commands(node.rules.commands)
    assert say[1] == SCRIPTS["say"].sha.encode() and say[-5:] == [b"s0", b"s1", b"s2", b"s3", b"s4"]
    assert position == [b"GET", b"chatwire:{main}:seq"]
    node.feed(node.rules.commands, b"ok", b"%d" % (node.seq + 5))
    assert node.messages(alice) == []  # the log has not reached the ping's point yet
    node.entries(*[(b"k", b"s", b"m", node.member(alice), b"t", b"s%d" % i) for i in range(5)])
    assert node.messages(alice) == [Pong("t")]


def test_a_gap_in_the_log_shuts_members_down() -> None:
    node = Node()
    alice = node.join("alice")
    node.seq += 1  # an entry trimmed away before this node read it
    node.entries((b"k", b"s", b"m", b"other:1", b"t", b"lost"))
    assert node.messages(alice) == [Shutdown(CLUSTER_GAP_REASON)]
    assert node.server.closed[alice]
    # It starts over: a new node id, and a snapshot is asked for at once.
    assert [c[0] for c in commands(node.rules.commands)][-1] == b"EVALSHA"


def test_removed_by_another_node_is_closed_and_the_others_told() -> None:
    node = Node()
    alice = node.join("alice")
    bob = node.join("bob")
    node.messages(alice)
    node.entries((b"k", b"l", b"m", node.member(alice), b"r", b"connection_lost", b"c", b"1"))
    assert node.messages(alice) == [Shutdown(CLUSTER_DOWN_REASON)]
    assert node.messages(bob) == [Left("alice", "192.0.2.7", 1, "connection_lost")]


def test_held_input_is_bounded() -> None:
    node = Node(max_held_input=2048)
    client = node.server.connect("192.0.2.7")
    node.server.receive(client, encode_message(CODEC, Hello("alice")))
    node.server.receive(client, encode_message(CODEC, Say("x" * 1024)))
    assert node.messages(client) == []
    node.server.receive(client, encode_message(CODEC, Say("x" * 1024)))
    assert node.messages(client) == [Shutdown(CLUSTER_HELD_REASON)]


def test_lease_refresh_and_reap_of_other_nodes() -> None:
    node = Node()
    node.join("alice")
    node.entries((b"k", b"j", b"m", b"other:1", b"n", b"bob", b"h", b"h", b"c", b"2"))
    commands(node.rules.commands)
    node.server.advance(CLUSTER_LEASE_REFRESH)
    lease, reap = commands(node.rules.commands)
    assert lease[:2] == [b"SET", f"chatwire:{{main}}:lease:{node.rules.node}".encode()]
    assert reap[1] == SCRIPTS["reap"].sha.encode() and reap[-2:] == [b"0", b"other"]


def test_redis_away_past_the_bound_then_a_new_room() -> None:
    node = Node()
    alice = node.join("alice")
    for link in node.rules.links:
        node.rules.link_failed(link, node.server.now, "reset")
    node.server.receive(alice, encode_message(CODEC, Ping("held")))
    node.server.advance(CLUSTER_RESUME_BOUND - 0.01)
    assert node.messages(alice) == []  # held, not lost, within the bound
    node.server.advance(0.02)
    assert node.messages(alice) == [Shutdown(CLUSTER_LOST_REASON)]
    late = node.server.connect("192.0.2.8")
    node.server.receive(late, encode_message(CODEC, Hello("carol")))
    assert node.messages(late) == [Shutdown(CLUSTER_LOST_REASON)]  # refused at once meanwhile


def test_epoch_changed_on_resume_resets_the_room() -> None:
    node = Node()
    alice = node.join("alice")
    for link in node.rules.links:
        node.rules.link_failed(link, node.server.now, "reset")
    node.server.advance(1.0)
    node.up()
    sent = commands(node.rules.commands)
    assert sent[-1] == [b"GET", b"chatwire:{main}:epoch"]
    node.feed(node.rules.commands, "OK", *(s.sha.encode() for s in SCRIPTS.values()), "OK", None)
    assert node.messages(alice) == [Shutdown(CLUSTER_RESET_REASON)]


def test_resume_within_the_bound_sends_unacknowledged_proposals_again() -> None:
    node = Node()
    alice = node.join("alice")
    node.server.receive(alice, encode_message(CODEC, Say("in flight")))
    (say,) = commands(node.rules.commands)
    for link in node.rules.links:
        node.rules.link_failed(link, node.server.now, "reset")
    node.server.advance(1.0)
    node.up()
    assert commands(node.rules.commands)[-1] == [b"GET", b"chatwire:{main}:epoch"]
    node.feed(node.rules.commands, "OK", *(s.sha.encode() for s in SCRIPTS.values()), "OK", EPOCH)
    (again,) = commands(node.rules.commands)
    assert again == say  # same proposal number: the script runs it once (§18.3)


@pytest.mark.parametrize("answered", [True, False])
def test_a_stopping_node_removes_its_members_and_waits_a_bounded_time(answered: bool) -> None:
    node = Node()
    alice = node.join("alice")
    node.server.shutdown()
    (depart,) = commands(node.rules.commands)
    assert depart[1] == SCRIPTS["reap"].sha.encode() and depart[-2:] == [b"1", node.rules.node.encode()]
    assert node.messages(alice) == [Shutdown("server shutting down")]
    node.server.receive(alice, b"")  # the client closes: no connection is left
    core = node.server.core
    assert not core.finished  # its members' departure is not in the room yet
    if answered:
        node.feed(node.rules.commands, 1)
    else:
        node.server.advance(SHUTDOWN_FLUSH_TIMEOUT - 0.01)
        assert not core.finished
        node.server.advance(0.02)  # Redis did not answer: the server exits all the same
    assert core.finished
    assert not any(link.wants_connect(node.server.now + 60) for link in node.rules.links)  # no reconnect


def test_a_long_run_of_says_is_split_into_bounded_proposals() -> None:
    node = Node()
    # One receive handles all eight (the read budget of §14.2 would split them over turns).
    node.server.core.read_budget = 1 << 30
    alice = node.join("alice")
    text = "x" * (300 * 1024)
    node.server.receive(alice, b"".join(encode_message(CODEC, Say(text)) for _ in range(8)))
    proposals = commands(node.rules.commands)
    assert [len(p) - SAY_TEXTS for p in proposals] == [4, 4]  # 1 MiB of texts at most per script call
    assert all(p[1] == SCRIPTS["say"].sha.encode() for p in proposals)


def test_a_malformed_log_entry_costs_the_link_not_the_server() -> None:
    node = Node()
    alice = node.join("alice")
    node.feed(node.rules.reader, [[b"chatwire:{main}:log", [[b"9-0", [b"q", b"not a number"]]]]])
    assert node.rules.reader.state is LinkState.DOWN
    assert node.rules.commands.wants_close  # both links start over, and the room resumes
    assert node.messages(alice) == []  # held, within the resume bound


def say_entry(member: bytes, text: bytes) -> tuple[bytes, ...]:
    return (b"k", b"s", b"m", member, b"t", text)


def test_says_wait_while_the_text_proposed_and_not_applied_passes_the_window() -> None:
    node = Node(say_window=1000)
    alice = node.join("alice")
    for text in ("a" * 600, "b" * 600, "c" * 10):
        node.server.receive(alice, encode_message(CODEC, Say(text)))
    first, second = commands(node.rules.commands)  # 1,200 octets out: the third waits (§18.2)
    assert (first[-1], second[-1]) == (b"a" * 600, b"b" * 600)
    assert node.rules.holding_says and alice in node.server.paused  # and alice is not read
    node.feed(node.rules.commands, b"ok", b"ok")
    assert commands(node.rules.commands) == []  # acknowledged is not applied
    node.entries(say_entry(node.member(alice), b"a" * 600))
    (third,) = commands(node.rules.commands)  # 600 octets out: the says go on, in order
    assert third[-1] == b"c" * 10 and alice not in node.server.paused


def test_a_say_proposal_refused_frees_its_part_of_the_window() -> None:
    node = Node(say_window=1000)
    alice = node.join("alice")
    for text in ("a" * 600, "b" * 600, "c" * 10):
        node.server.receive(alice, encode_message(CODEC, Say(text)))
    assert len(commands(node.rules.commands)) == 2
    node.feed(node.rules.commands, b"gone", b"gone")  # removed meanwhile: no entry will come
    assert not node.rules.holding_says
    (third,) = commands(node.rules.commands)
    assert third[-1] == b"c" * 10


def test_input_held_for_the_log_goes_on_within_the_read_budget_and_the_window() -> None:
    node = Node(say_window=1000, core={"read_budget": 1000})
    alice = node.join("alice")
    says = b"".join(encode_message(CODEC, Say(f"{i:03d}" + "x" * 297)) for i in range(8))
    node.server.receive(alice, encode_message(CODEC, Ping("p")) + says)
    (position,) = commands(node.rules.commands)
    assert position == [b"GET", b"chatwire:{main}:seq"]
    node.feed(node.rules.commands, b"%d" % node.seq)
    assert node.messages(alice) == [Pong("p")]
    # Released, the says behind the ping are read as any input is: one read budget's worth
    # (four says, 1,200 octets) in a turn; then the window holds the rest until the log moves.
    (say,) = commands(node.rules.commands)
    assert [text[:3] for text in say[SAY_TEXTS:]] == [b"000", b"001", b"002", b"003"]
    assert node.rules.holding_says


def test_a_welcome_decided_by_the_log_starts_the_idle_timer() -> None:
    node = Node(core={"hello_timeout": 0.5, "idle_timeout": 0.8})
    client = node.server.connect("192.0.2.7")
    node.server.receive(client, encode_message(CODEC, Hello("alice")))
    commands(node.rules.commands)
    node.server.advance(0.3)
    node.entries((b"k", b"j", b"m", node.member(client), b"n", b"alice", b"h", b"192.0.2.7", b"c", b"1"))
    assert isinstance(node.messages(client)[0], Welcome)
    node.server.advance(0.3)  # past the hello timeout from the connection: it has stopped (§7.4)
    assert node.messages(client) == [] and client not in node.server.closed
    node.server.advance(0.79 - 0.3)
    assert node.messages(client) == []
    node.server.advance(0.02)  # idle_timeout after the welcome, with no frame since (§7.5)
    (error,) = node.messages(client)
    assert (error.code, error.fatal) == ("idle_timeout", True)


def flow_entry(member: bytes, holds: bool) -> tuple[bytes, ...]:
    return (b"k", b"f", b"m", member, b"on", b"1" if holds else b"0")


def test_a_member_holding_on_another_node_holds_this_nodes_says() -> None:
    node = Node()
    alice = node.join("alice")
    node.entries((b"k", b"j", b"m", b"other:1", b"n", b"bob", b"h", b"h", b"c", b"2"))
    node.entries(flow_entry(b"other:1", True))
    assert node.rules.holding_says
    node.server.receive(alice, encode_message(CODEC, Say("waits")))
    assert commands(node.rules.commands) == [] and alice in node.server.paused  # §10.1 rule 2
    node.entries(flow_entry(b"other:1", False))
    (say,) = commands(node.rules.commands)
    assert say[-1] == b"waits" and alice not in node.server.paused


def test_a_holder_that_leaves_holds_nothing_more() -> None:
    node = Node()
    node.join("alice")
    node.entries((b"k", b"j", b"m", b"other:1", b"n", b"bob", b"h", b"h", b"c", b"2"))
    node.entries(flow_entry(b"other:1", True), (b"k", b"l", b"m", b"other:1", b"r", b"quit", b"c", b"1"))
    assert not node.rules.holding_says


def test_the_snapshot_brings_the_holders_of_other_nodes() -> None:
    node = Node()
    node.rules.link_failed(node.rules.commands, node.server.now, "reset")
    node.rules.link_failed(node.rules.reader, node.server.now, "reset")
    node.server.advance(CLUSTER_RESUME_BOUND + 0.1)  # a new room: loaded from a snapshot
    node.server.advance(CLUSTER_BACKOFF_MAX)
    node.up()
    record = b"\0".join([b"1", b"bob", b"h", b"bob", b"bob"])
    node.load([b"other:1", record], seq=1, holders=(b"other:1",))
    assert node.rules.holding_says


def test_a_local_member_holding_is_told_to_the_room_and_its_draining_too() -> None:
    node = Node(core={"output_soft_limit": 4096})
    alice = node.join("alice")
    bob = node.join("bob")
    commands(node.rules.commands)
    node.entries(*[say_entry(node.member(bob), b"x" * 1000) for _ in range(5)])  # alice does not read
    (flow,) = commands(node.rules.commands)
    assert flow[1] == SCRIPTS["flow"].sha.encode() and flow[-2:] == [b"%d" % alice, b"1"]
    node.messages(alice)  # alice reads: below half of the soft limit
    (flow,) = commands(node.rules.commands)
    assert flow[-2:] == [b"%d" % alice, b"0"]
