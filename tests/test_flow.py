"""ServerCore's fairness rules (protocol/server/core.py rules 6-9): congestion and the
slow-consumer timeout (§10.1, §10.2), the read budget (§14.2), the frame and idle timeouts
(§7.5) and the server-wide totals (§14.2), on a MemoryServer with its own clock."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from test_lifecycle import decoded, errors, join

from protocol import Hello, Left, Ping, Pong, Relayed, Roster, Say, Who, encode_message, get_codec
from protocol.constants import READ_BUDGET_MIN_COST, CodecName, ErrorCode
from protocol.server import ClientId, ServerCore
from protocol.server.memory import MemoryServer

CODEC = get_codec(CodecName.MSGPACK)
SOFT = 4096


def make(**limits: float) -> MemoryServer:
    limits.setdefault("output_soft_limit", SOFT)
    return MemoryServer(ServerCore(CODEC, server_name="test/1", **limits))  # type: ignore[arg-type]


def say(text: str) -> bytes:
    return encode_message(CODEC, Say(text))


def ping(token: str) -> bytes:
    return encode_message(CODEC, Ping(token))


def congest(memory: MemoryServer, sender: ClientId, reader: ClientId) -> int:
    """Say from ``sender`` until ``reader`` (which does not read) is congested; the says sent."""
    for count in range(1, 1000):
        memory.receive(sender, say("x" * 200))
        memory.read(sender)
        if memory.core.outbox(reader).congested:  # type: ignore[union-attr]
            return count
    raise AssertionError("never congested")


# --- rule 6: congestion (§10.1, §10.2) --------------------------------------------------------


def test_a_connection_over_the_soft_limit_is_congested_and_not_read_until_half_drained() -> None:
    memory = make()
    alice, bob = join(memory, "alice"), join(memory, "bob")
    congest(memory, alice, bob)
    outbox = memory.core.outbox(bob)
    assert outbox is not None and outbox.buffered > SOFT and not outbox.reading
    assert bob in memory.paused
    # Drained to just above half: still congested.
    queued = b"".join(outbox.frames)
    memory.core.sent(bob, len(queued) - SOFT // 2 - 1)
    assert outbox.congested
    memory.core.sent(bob, 1)
    assert not outbox.congested and outbox.reading


def test_says_wait_while_a_member_is_congested_and_pings_before_them_are_answered() -> None:
    memory = make()
    alice, bob, carol = join(memory, "alice"), join(memory, "bob"), join(memory, "carol")
    congest(memory, alice, bob)
    memory.read(carol)
    memory.receive(alice, ping("p1") + say("waits") + ping("p2"))
    [pong] = decoded(memory.read(alice))
    assert pong == Pong("p1")
    assert memory.read(carol) == b""  # the say waits, and the ping behind it
    assert alice in memory.paused
    memory.read(bob)  # bob drains: the room goes on
    assert decoded(memory.read(carol)) == [Relayed("alice", "127.0.0.1", "waits")]
    assert decoded(memory.read(alice)) == [Pong("p2")]
    assert alice not in memory.paused


def test_a_connection_congested_for_the_slow_consumer_timeout_is_cut_off() -> None:
    memory = make(slow_consumer_timeout=5.0)
    alice, bob, carol = join(memory, "alice"), join(memory, "bob"), join(memory, "carol")
    congest(memory, alice, bob)
    memory.read(carol)
    memory.advance(4.9)
    assert bob in memory.core
    memory.advance(0.2)
    assert bob not in memory.core
    lefts = [m for m in decoded(memory.read(carol)) if isinstance(m, Left)]
    assert lefts == [Left("bob", "127.0.0.1", 2, "slow_consumer")]


def test_draining_before_the_slow_consumer_timeout_stops_it() -> None:
    memory = make(slow_consumer_timeout=5.0)
    alice, bob = join(memory, "alice"), join(memory, "bob")
    congest(memory, alice, bob)
    memory.advance(4.0)
    memory.read(bob)
    memory.advance(10.0)
    assert bob in memory.core
    assert memory.core.congested == 0


def test_a_reader_that_keeps_up_is_never_congested() -> None:
    memory = make()
    alice, bob = join(memory, "alice"), join(memory, "bob")
    for _ in range(500):
        memory.receive(alice, say("x" * 200))
        memory.read(bob)
    assert memory.core.congested == 0 and bob in memory.core


def hold(memory: MemoryServer, sender: ClientId, reader: ClientId) -> int:
    """Say from ``sender`` until ``reader`` (which does not read) holds the room's says."""
    for count in range(1, 1000):
        memory.receive(sender, say("x" * 200))
        memory.read(sender)
        if reader in memory.core._holders:
            return count
    raise AssertionError("never held")


def test_a_member_over_the_hold_mark_holds_says_before_it_is_congested() -> None:
    memory = make(hold_mark=1024)
    alice, bob, carol = join(memory, "alice"), join(memory, "bob"), join(memory, "carol")
    hold(memory, alice, bob)
    outbox = memory.core.outbox(bob)
    assert outbox is not None and 1024 < outbox.buffered <= SOFT
    assert not outbox.congested and outbox.reading  # held, not throttled itself
    memory.read(carol)
    memory.receive(alice, say("waits"))
    assert memory.read(carol) == b""
    queued = b"".join(outbox.frames)
    memory.core.sent(bob, len(queued) - 512 - 1)  # just above half the mark: still holding
    memory.receive(carol, ping("c"))
    assert decoded(memory.read(carol)) == [Pong("c")]
    memory.core.sent(bob, 1)
    memory.advance(0)
    assert decoded(memory.read(carol)) == [Relayed("alice", "127.0.0.1", "waits")]


def test_the_hold_mark_is_never_above_the_soft_limit() -> None:
    assert ServerCore(CODEC, server_name="t/1", output_soft_limit=1000, hold_mark=5000).hold_mark == 1000


def test_a_holder_that_drains_nothing_for_the_patience_stops_holding_and_is_cut_at_the_cap() -> None:
    memory = make(hold_patience=1.0, slow_consumer_timeout=60.0, max_output_buffer=4 * SOFT)
    alice, bob, carol = join(memory, "alice"), join(memory, "bob"), join(memory, "carol")
    hold(memory, alice, bob)
    memory.read(carol)
    memory.receive(alice, say("waits"))
    memory.advance(0.9)
    assert memory.read(carol) == b""  # within the patience: still held
    memory.advance(0.2)
    assert decoded(memory.read(carol)) == [Relayed("alice", "127.0.0.1", "waits")]
    # Says flow again: bob's buffer grows to the cap, long before the slow-consumer timeout.
    messages = []
    for n in range(200):
        memory.receive(alice, say(f"{n:03}" + "x" * 200))
        messages += decoded(memory.read(carol))
        if bob not in memory.core:
            break
    assert bob not in memory.core and memory.now < 60.0
    assert alice in memory.core and carol in memory.core
    assert messages[-1] == Left("bob", "127.0.0.1", 2, "slow_consumer")
    memory.receive(alice, say("after"))
    assert decoded(memory.read(carol)) == [Relayed("alice", "127.0.0.1", "after")]


def test_a_holder_that_drains_slowly_keeps_holding_and_holds_again_once_it_drains() -> None:
    memory = make(hold_patience=1.0, slow_consumer_timeout=60.0)
    alice, bob, carol = join(memory, "alice"), join(memory, "bob"), join(memory, "carol")
    hold(memory, alice, bob)
    memory.read(carol)
    memory.receive(alice, say("waits"))
    for _ in range(10):  # 16 octets every half second: slow, but draining
        memory.core.sent(bob, 16)
        memory.advance(0.5)
        assert memory.read(carol) == b""
    memory.advance(2.01)  # then nothing for two patience windows: it stops holding
    assert decoded(memory.read(carol)) == [Relayed("alice", "127.0.0.1", "waits")]
    memory.core.sent(bob, 16)  # it drains again: it holds again
    memory.receive(alice, say("waits again"))
    assert memory.read(carol) == b""
    memory.read(bob)
    memory.advance(0)
    assert decoded(memory.read(carol)) == [Relayed("alice", "127.0.0.1", "waits again")]


def test_output_moved_into_the_transport_is_no_drain_and_a_shrinking_transport_is() -> None:
    memory = make(hold_patience=1.0, slow_consumer_timeout=60.0)
    alice, bob, carol = join(memory, "alice"), join(memory, "bob"), join(memory, "carol")
    hold(memory, alice, bob)
    outbox = memory.core.outbox(bob)
    assert outbox is not None
    memory.read(carol)
    memory.receive(alice, say("waits"))
    # The whole outbox handed to a transport that holds it all (asyncio, its socket full).
    moved = outbox.size
    memory.core.sent(bob, moved, outbox.held + moved)
    memory.advance(1.01)
    assert decoded(memory.read(carol)) == [Relayed("alice", "127.0.0.1", "waits")]
    assert outbox.stalled
    memory.core.sent(bob, 0, outbox.held - 16)  # the transport's buffer shrank: a drain
    assert not outbox.stalled
    memory.receive(alice, say("waits again"))
    assert memory.read(carol) == b""


# --- rule 7: the read budget (§14.2) ----------------------------------------------------------


def test_one_receive_handles_at_most_the_read_budget_and_the_rest_follows_in_order() -> None:
    memory = make(read_budget=10 * READ_BUDGET_MIN_COST)
    core = memory.core
    alice = join(memory, "alice")
    core.receive(alice, b"".join(ping(str(n)) for n in range(25)), memory.now)
    first = [m for m in decoded(b"".join(core.outbox(alice).frames)) if isinstance(m, Pong)]  # type: ignore[union-attr]
    assert len(first) == 10
    assert core.has_pending
    core.pump(lambda outbox: None, lambda disposal, client: None, memory._reading)
    assert alice in memory.paused  # input waits in the core: the socket is not read
    core.process_pending(memory.now)
    core.process_pending(memory.now)
    assert not core.has_pending
    pongs = [m for m in decoded(memory.read(alice)) if isinstance(m, Pong)]
    assert [p.token for p in pongs] == [str(n) for n in range(25)]
    assert alice not in memory.paused


def test_a_who_costs_the_octets_of_its_roster() -> None:
    memory = make()
    members = [join(memory, f"m{n}") for n in range(20)]
    who = encode_message(CODEC, Who())
    memory.read(members[0])
    memory.receive(members[0], who)
    roster = len(memory.read(members[0]))
    core = ServerCore(CODEC, server_name="test/1", read_budget=roster * 3)
    budgeted = MemoryServer(core)
    clients = [join(budgeted, f"m{n}") for n in range(20)]
    for client in clients:
        budgeted.read(client)
    core.receive(clients[0], who * 10, budgeted.now)
    answers = [m for m in decoded(b"".join(core.outbox(clients[0]).frames)) if isinstance(m, Roster)]  # type: ignore[union-attr]
    assert len(answers) == 3  # 3 rosters' worth of budget; 10 * len(who) alone is far less
    assert 10 * len(who) < roster
    assert core.has_pending


# --- rule 8: frame and idle timeouts (§7.5) ---------------------------------------------------


def test_a_frame_begun_must_complete_within_the_frame_timeout() -> None:
    memory = make(frame_timeout=3.0, idle_timeout=100.0)
    alice = join(memory, "alice")
    frame = say("hello")
    memory.receive(alice, frame[:3])
    memory.advance(2.9)
    assert errors(memory.read(alice)) == []
    memory.advance(0.2)
    assert errors(memory.read(alice)) == [(ErrorCode.FRAME_TIMEOUT, True)]
    assert memory.closed[alice]


def test_a_trickle_of_octets_does_not_restart_the_frame_timer() -> None:
    memory = make(frame_timeout=3.0, idle_timeout=100.0)
    alice = join(memory, "alice")
    frame = encode_message(CODEC, Say("x" * 100))
    for octet in range(10):
        memory.receive(alice, frame[octet : octet + 1])
        memory.advance(0.5)
        if alice in memory.closed:
            break
    assert errors(memory.read(alice)) == [(ErrorCode.FRAME_TIMEOUT, True)]
    assert memory.now <= 3.5


def test_a_completed_frame_stops_the_frame_timer() -> None:
    memory = make(frame_timeout=3.0, idle_timeout=100.0)
    alice = join(memory, "alice")
    frame = ping("t")
    memory.receive(alice, frame[:3])
    memory.advance(2.0)
    memory.receive(alice, frame[3:])
    memory.advance(2.0)
    assert decoded(memory.read(alice)) == [Pong("t")]
    assert alice not in memory.closed


def test_a_frame_refused_is_a_frame_read_for_the_timers_and_the_budget() -> None:
    memory = make(frame_timeout=3.0, idle_timeout=5.0, read_budget=4 * READ_BUDGET_MIN_COST)
    alice = join(memory, "alice")
    frame = encode_message(CODEC, Hello("again"))  # already_joined: refused, not fatal
    memory.receive(alice, frame[:3])
    memory.advance(2.0)
    memory.receive(alice, frame[3:])
    memory.advance(2.0)  # 4 s after the frame began: it completed, so no frame_timeout
    assert errors(memory.read(alice)) == [(ErrorCode.ALREADY_JOINED, False)]
    memory.advance(2.5)  # 4.5 s after it completed: it restarted the idle timer
    assert alice in memory.core.rules
    # Refused frames cost the read budget as others do: 8 of them take two turns.
    memory.core.receive(alice, frame * 8, memory.now)
    assert memory.core.rules.stop.name == "BUDGET"


def test_a_member_silent_for_the_idle_timeout_is_closed_and_a_frame_restarts_it() -> None:
    memory = make(idle_timeout=10.0)
    alice, bob = join(memory, "alice"), join(memory, "bob")
    memory.advance(9.0)
    memory.receive(alice, ping("alive"))
    memory.advance(1.5)
    assert errors(memory.read(bob)) == [(ErrorCode.IDLE_TIMEOUT, True)]
    assert alice in memory.core and bob not in memory.core.rules
    memory.advance(8.0)  # 9.5 s after alice's ping
    assert alice in memory.core.rules
    memory.advance(1.0)
    assert errors(memory.read(alice)) == [(ErrorCode.IDLE_TIMEOUT, True)]


def test_no_frame_or_idle_timer_runs_before_the_welcome() -> None:
    memory = make(hello_timeout=50.0, frame_timeout=1.0, idle_timeout=2.0)
    client = memory.connect()
    memory.receive(client, encode_message(CODEC, Hello("alice"))[:3])
    memory.advance(10.0)
    assert memory.read(client) == b""
    assert memory.core.next_deadline() == 50.0


def test_a_connection_the_core_does_not_read_is_not_timed() -> None:
    memory = make(frame_timeout=1.0, idle_timeout=2.0, slow_consumer_timeout=100.0)
    alice, bob = join(memory, "alice"), join(memory, "bob")
    memory.receive(bob, say("x")[:2])  # bob begins a frame
    congest(memory, alice, bob)
    memory.advance(50.0)  # bob is not read meanwhile: neither timer may blame him
    assert bob in memory.core.rules
    memory.read(bob)
    memory.advance(0.9)
    assert bob in memory.core.rules
    memory.advance(0.2)
    assert (ErrorCode.FRAME_TIMEOUT, True) in errors(memory.read(bob))


# --- rule 9: totals (§14.2) -------------------------------------------------------------------


def test_over_the_output_total_the_largest_queue_is_cut_off() -> None:
    memory = make(max_total_output=20_000, output_soft_limit=1 << 20, slow_consumer_timeout=100.0)
    alice, bob, carol = join(memory, "alice"), join(memory, "bob"), join(memory, "carol")
    memory.read(bob)
    for _ in range(5):
        memory.receive(alice, say("x" * 1000))
    memory.read(carol)  # carol reads, bob does not: bob holds the most
    for _ in range(100):
        memory.receive(alice, say("x" * 1000))
        memory.read(alice)
        if bob not in memory.core:
            break
    assert bob not in memory.core and carol in memory.core
    assert memory.core.queued <= 20_000
    assert Left("bob", "127.0.0.1", 2, "slow_consumer") in decoded(memory.read(carol))


def test_over_the_input_total_the_largest_holder_gets_server_busy() -> None:
    memory = make(max_total_input=3000)
    alice, bob, carol = join(memory, "alice"), join(memory, "bob"), join(memory, "carol")
    big = encode_message(CODEC, Say("x" * 5000))
    memory.receive(alice, big[:1000])
    memory.receive(bob, big[:1500])
    assert memory.core.input_total == 2500
    memory.receive(carol, big[:700])
    assert errors(memory.read(bob)) == [(ErrorCode.SERVER_BUSY, True)]
    assert errors(memory.read(alice)) == [] and errors(memory.read(carol)) == []
    assert memory.core.input_total == 1700


def test_new_connections_get_server_busy_while_a_total_is_above_its_mark() -> None:
    memory = make(max_total_input=4000)
    alice = join(memory, "alice")
    big = encode_message(CODEC, Say("x" * 5000))
    memory.receive(alice, big[:3100])  # above 3/4 of the bound
    refused = memory.connect()
    assert errors(memory.read(refused)) == [(ErrorCode.SERVER_BUSY, True)]
    memory.receive(alice, big[3100:])
    welcomed = memory.connect()
    memory.receive(welcomed, encode_message(CODEC, Hello("bob")))
    assert errors(memory.read(welcomed)) == []


STEPS = st.sampled_from(["say", "half", "read", "who", "lost"])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), STEPS), max_size=60))
def test_the_totals_are_the_sums_of_what_each_connection_holds(steps: list[tuple[int, str]]) -> None:
    memory = make(output_soft_limit=2000, max_total_output=6000)
    clients = [join(memory, f"m{n}") for n in range(4)]
    halves: set[ClientId] = set()
    frame = say("z" * 20)
    for index, chosen in steps:
        client = clients[index]
        # A whole frame after half of one would not be a frame: the half is completed instead.
        step = "half" if client in halves and chosen in ("say", "who") else chosen
        if step == "say":
            memory.receive(client, say("y" * 300))
        elif step == "half":
            memory.receive(client, frame[10:] if client in halves else frame[:10])
            halves ^= {client}
        elif step == "who":
            memory.receive(client, encode_message(CODEC, Who()))
        elif step == "read":
            memory.read(client)
        else:
            memory.lost(client)
        core = memory.core
        outboxes = [core.outbox(c) for c in clients]
        assert core.queued == sum(o.buffered for o in outboxes if o is not None)
        assert core.input_total == sum(o.input for o in outboxes if o is not None)
        assert core.queued <= 6000
        assert all(o.input <= 10 for o in outboxes if o is not None)


def test_a_congested_connection_s_leftover_requests_wait_until_it_drains() -> None:
    memory = make(read_budget=4 * READ_BUDGET_MIN_COST)
    core = memory.core
    members = [join(memory, f"member{n:02d}") for n in range(30)]
    asker, other = members[0], members[1]
    for member in members:
        memory.read(member)
    memory.receive(other, encode_message(CODEC, Who()))
    roster = len(memory.read(other))
    memory.receive(asker, encode_message(CODEC, Who()) * 500)  # never read: its answers pile up
    outbox = core.outbox(asker)
    assert outbox is not None and outbox.congested
    assert not core.has_pending  # no turn is spent on it while it does not read
    # The soft limit plus the budget of the turn that passed it, not 500 rosters.
    assert outbox.buffered <= SOFT + 4 * READ_BUDGET_MIN_COST + 2 * roster
    answered = len(decoded(memory.read(asker)))
    assert 0 < answered < 500  # drained: the rest is handled now, a budget per turn
    assert len(decoded(memory.read(asker))) > 0
