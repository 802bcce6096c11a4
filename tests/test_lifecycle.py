"""ServerCore's own contracts (protocol/server/core.py), one test or more for each rule its
docstring states: the output cap, the hello timer, the closing procedure, shutdown, accept
pauses, and what it tells the server (dirty outboxes, directives, deadlines)."""

from __future__ import annotations

import errno

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import (
    Error,
    FrameDecoder,
    Hello,
    Left,
    Message,
    Relayed,
    Say,
    Shutdown,
    Welcome,
    decode_message,
    encode_frame,
    encode_message,
    get_codec,
)
from protocol.constants import (
    ACCEPT_BACKOFF,
    CLOSE_LINGER,
    FLUSH_EARLY,
    SHUTDOWN_FLUSH_TIMEOUT,
    SHUTDOWN_REASON,
    CodecName,
)
from protocol.messages import SERVER_MESSAGES
from protocol.server import ClientId, Disposal, Outbox, ServerCore
from protocol.server.memory import MemoryServer
from protocol.server.rules import Send

CODEC = get_codec(CodecName.MSGPACK)


def make(**limits: float) -> MemoryServer:
    return MemoryServer(ServerCore(CODEC, server_name="test/1", **limits))  # type: ignore[arg-type]


def decoded(data: bytes) -> list[Message]:
    decoder = FrameDecoder(1 << 20)
    decoder.feed(data)
    out = []
    while (payload := decoder.next_frame()) is not None:
        out.append(decode_message(CODEC, payload, SERVER_MESSAGES))
    return out


def join(memory: MemoryServer, name: str) -> ClientId:
    client = memory.connect()
    memory.receive(client, encode_message(CODEC, Hello(name)))
    [welcome] = decoded(memory.read(client))
    assert isinstance(welcome, Welcome)
    return client


def errors(data: bytes) -> list[tuple[str, bool]]:
    return [(m.code, m.fatal) for m in decoded(data) if isinstance(m, Error)]


# --- rule 1: the output cap ---------------------------------------------------------------------


def _relayed(sender: str, text: str) -> bytes:
    return encode_message(CODEC, Relayed(sender, "127.0.0.1", text))


@pytest.mark.parametrize("spare", [0, 1])
def test_a_frame_that_fills_the_buffer_exactly_is_queued_and_one_octet_more_is_not(spare: int) -> None:
    frame = len(_relayed("alice", "x" * 100))
    memory = make()
    alice = join(memory, "alice")
    bob = join(memory, "bob")
    memory.read(alice)
    already = memory.buffered(bob)
    memory.core.max_output_buffer = already + frame - spare
    memory.receive(alice, encode_message(CODEC, Say("x" * 100)))
    if spare == 0:
        assert memory.buffered(bob) == memory.core.max_output_buffer
        assert bob in memory.core
    else:
        assert memory.closed == {bob: False}
        assert (Disposal.ABORT, bob) in memory.directives
    assert memory.peak <= memory.core.max_output_buffer


@settings(max_examples=200, deadline=None)
@given(
    cap=st.integers(200, 3000),
    steps=st.lists(st.tuples(st.integers(0, 400), st.booleans(), st.booleans()), min_size=1, max_size=40),
)
def test_no_outbox_ever_holds_more_than_the_cap(cap: int, steps: list[tuple[int, bool, bool]]) -> None:
    # Three members; alice says things of random sizes, bob and carol read or not at random.
    memory = make()
    alice, bob, carol = (join(memory, name) for name in ("alice", "bob", "carol"))
    for client in (alice, bob):
        memory.read(client)
    memory.core.max_output_buffer = max(cap, *(memory.buffered(c) for c in (bob, carol)))
    memory.peak = 0
    for size, bob_reads, carol_reads in steps:
        if alice not in memory.core.rules:
            break
        memory.receive(alice, encode_message(CODEC, Say("y" * size)))
        if bob_reads:
            memory.read(bob)
        if carol_reads:
            memory.read(carol)
        memory.read(alice)
        assert memory.peak <= memory.core.max_output_buffer


def test_held_octets_count_against_the_cap_and_are_asked_for_when_near_it() -> None:
    memory = make()
    alice = join(memory, "alice")
    bob = join(memory, "bob")
    memory.read(alice)
    memory.read(bob)
    frame = len(_relayed("alice", "hi"))
    memory.core.max_output_buffer = 10 * frame
    outbox = memory.core.outbox(bob)
    assert outbox is not None
    # The transport still held 9.5 frames at the last report: the next frame cannot fit...
    memory.core.sent(bob, 0, held=9 * frame + frame // 2)
    asked: list[int] = []
    actual = [9 * frame + frame // 2]

    def held_now() -> int:
        asked.append(actual[0])
        return actual[0]

    outbox.refresh_held = held_now
    memory.receive(alice, encode_message(CODEC, Say("hi")))
    # ...unless the transport says it has drained meanwhile: then the core asks, and queues.
    assert asked == [9 * frame + frame // 2]
    assert memory.closed == {bob: False}

    memory2 = make()
    alice = join(memory2, "alice")
    bob = join(memory2, "bob")
    memory2.read(alice)
    memory2.read(bob)
    memory2.core.max_output_buffer = 10 * frame
    outbox = memory2.core.outbox(bob)
    assert outbox is not None
    memory2.core.sent(bob, 0, held=9 * frame + frame // 2)
    outbox.refresh_held = lambda: 0
    memory2.receive(alice, encode_message(CODEC, Say("hi")))
    assert bob in memory2.core
    assert outbox.held == 0
    assert outbox.buffered == frame


def test_a_run_of_says_is_one_buffer_per_recipient_with_the_frames_in_order() -> None:
    memory = make()
    alice = join(memory, "alice")
    bob = join(memory, "bob")
    memory.read(alice)
    memory.read(bob)
    memory.receive(alice, b"".join(encode_message(CODEC, Say(t)) for t in ("one", "two", "three")))
    outbox = memory.core.outbox(bob)
    assert outbox is not None
    assert outbox.frames == [b"".join(_relayed("alice", t) for t in ("one", "two", "three"))]


def test_cut_offs_in_a_run_go_in_the_order_of_the_first_frame_each_could_not_take() -> None:
    memory = make()
    members = [join(memory, name) for name in ("alice", "bob", "carol")]
    for client in members:
        memory.read(client)
    alice, bob, carol = members
    frame = len(_relayed("alice", "z" * 500))
    memory.core.max_output_buffer = 3 * frame
    # carol can take one more frame, bob two: carol is cut at the second, bob at the third.
    for client, backlog in ((bob, frame), (carol, 2 * frame)):
        outbox = memory.core.outbox(client)
        assert outbox is not None
        outbox.frames.append(b"q" * backlog)
        outbox.size += backlog
    memory.receive(alice, b"".join(encode_message(CODEC, Say("z" * 500)) for _ in range(3)))
    assert [client for disposal, client in memory.directives if disposal is Disposal.ABORT] == [carol, bob]


# --- what the core tells the server ----------------------------------------------------------------


def test_only_an_outbox_that_was_empty_is_reported_dirty_and_each_once() -> None:
    memory = make()
    alice = join(memory, "alice")
    bob = join(memory, "bob")
    core = memory.core
    core.take_dirty()
    memory.read(alice)
    core.receive(alice, encode_message(CODEC, Say("a")), 0.0)
    core.receive(alice, encode_message(CODEC, Say("b")), 0.0)
    assert [outbox.client for outbox in core.take_dirty()] == [bob]
    # Not written yet: a new frame for bob's non-empty outbox does not make it dirty again.
    core.receive(alice, encode_message(CODEC, Say("c")), 0.0)
    assert core.take_dirty() == []
    memory.read(bob)
    core.receive(alice, encode_message(CODEC, Say("d")), 0.0)
    assert [outbox.client for outbox in core.take_dirty()] == [bob]


def test_flush_early_is_raised_when_an_outbox_passes_its_mark() -> None:
    # Says are held past the hold mark (§10.1): both above the mark, so that says reach it.
    memory = make(output_soft_limit=4 * FLUSH_EARLY, hold_mark=4 * FLUSH_EARLY)
    alice = join(memory, "alice")
    join(memory, "bob")
    core = memory.core
    core.take_dirty()
    assert not core.flush_early
    text = "w" * 60000
    for _ in range(FLUSH_EARLY // len(text) + 2):
        core.receive(alice, encode_message(CODEC, Say(text)), 0.0)
        if core.flush_early:
            break
    assert core.flush_early
    assert sum(len(frame) for frame in core.take_dirty()[0].frames) > FLUSH_EARLY
    assert not core.flush_early


def test_sent_drops_whole_frames_then_part_of_one() -> None:
    memory = make()
    alice = join(memory, "alice")
    bob = join(memory, "bob")
    memory.read(bob)
    for text in ("first", "second"):
        memory.core._carry_out([Send(_relayed("x", text), (bob,))])  # two separate frames
    outbox = memory.core.outbox(bob)
    assert outbox is not None
    first, second = (bytes(frame) for frame in outbox.frames)
    memory.core.sent(bob, len(first) + 3)
    assert [bytes(frame) for frame in outbox.frames] == [second[3:]]
    assert outbox.size == len(second) - 3
    assert memory.read(bob) == second[3:]
    assert alice in memory.core


# --- rule 2: the hello timer -------------------------------------------------------------------


def test_the_hello_timer_fires_at_its_deadline_not_before() -> None:
    memory = make(hello_timeout=5.0)
    client = memory.connect()
    assert memory.core.next_deadline() == 5.0
    memory.advance(4.999)
    assert memory.read(client) == b""
    memory.advance(0.001)
    assert errors(memory.read(client)) == [("hello_timeout", True)]


def test_rejected_hellos_do_not_restart_the_hello_timer() -> None:
    memory = make(hello_timeout=5.0)
    client = memory.connect()
    for _ in range(4):
        memory.advance(1.0)
        memory.receive(client, encode_message(CODEC, Hello("bad name")))
        assert errors(memory.read(client)) == [("name_invalid", False)]
    assert memory.core.next_deadline() == 5.0
    memory.advance(1.0)
    assert errors(memory.read(client)) == [("hello_timeout", True)]


def test_the_hello_timer_stops_at_welcome() -> None:
    memory = make(hello_timeout=5.0, idle_timeout=1000.0)
    client = join(memory, "alice")
    assert memory.core.next_deadline() == 1000.0  # the idle timer only (§7.5)
    memory.advance(60.0)
    assert memory.read(client) == b""
    assert client in memory.core.rules


# --- rule 3: the closing procedure ------------------------------------------------------------------


def test_closing_flushes_then_half_closes_then_drains_until_eof() -> None:
    memory = make()
    client = memory.connect()
    memory.receive(client, encode_message(CODEC, Say("too early")))  # hello_required, fatal
    assert memory.directives == []  # step 2 first: the error is still queued
    assert errors(memory.read(client)) == [("hello_required", True)]
    assert memory.directives == [(Disposal.HALF_CLOSE, client)]
    memory.receive(client, encode_message(CODEC, Hello("late")))  # step 4: discarded
    assert memory.read(client) == b""
    memory.receive(client, b"")
    assert memory.directives == [(Disposal.HALF_CLOSE, client), (Disposal.CLOSE, client)]
    assert client not in memory.core


def test_an_eof_before_the_flush_ends_in_close_without_half_close() -> None:
    memory = make()
    alice = join(memory, "alice")
    bob = join(memory, "bob")
    memory.read(alice)
    memory.receive(alice, encode_message(CODEC, Say("bye")))
    memory.receive(alice, b"")
    assert memory.directives == [(Disposal.CLOSE, alice)]  # nothing was queued for alice
    memory.receive(bob, encode_frame(b"\xc1"))
    memory.receive(bob, b"")
    assert memory.directives[-1:] == [(Disposal.CLOSE, alice)]  # bob's error not flushed yet
    memory.read(bob)
    assert memory.directives[-1:] == [(Disposal.CLOSE, bob)]


def test_the_linger_aborts_a_closing_connection_that_never_drains() -> None:
    memory = make()
    client = memory.connect()
    memory.receive(client, encode_frame(b""))  # bad_payload, fatal
    memory.advance(CLOSE_LINGER - 0.01)
    assert client in memory.core
    memory.advance(0.01)
    assert memory.directives == [(Disposal.ABORT, client)]
    assert client not in memory.core


def test_a_connection_lost_while_closing_announces_nothing_more() -> None:
    memory = make()
    alice = join(memory, "alice")
    bob = join(memory, "bob")
    memory.read(alice)
    memory.receive(bob, encode_frame(b""))
    left = decoded(memory.read(alice))
    memory.lost(bob)
    assert len(left) == 1
    assert memory.read(alice) == b""
    assert bob not in memory.core


# --- rule 4: shutdown ------------------------------------------------------------------------------


def test_shutdown_is_bounded_by_one_deadline_for_all() -> None:
    memory = make()
    alice = join(memory, "alice")
    bob = join(memory, "bob")
    memory.read(alice)
    memory.shutdown()
    assert not memory.core.accepting
    assert decoded(memory.read(alice)) == [Shutdown(SHUTDOWN_REASON)]
    memory.receive(alice, b"")  # alice drained and left
    assert not memory.core.finished  # bob never reads
    assert memory.core.next_deadline() == pytest.approx(min(SHUTDOWN_FLUSH_TIMEOUT, CLOSE_LINGER))
    memory.advance(max(SHUTDOWN_FLUSH_TIMEOUT, CLOSE_LINGER))
    assert memory.core.finished
    assert memory.directives[-1] == (Disposal.ABORT, bob)
    assert memory.core.next_deadline() is None


def test_a_second_shutdown_aborts_every_connection_at_once() -> None:
    memory = make()
    clients = [join(memory, name) for name in ("alice", "bob")]
    memory.shutdown()
    memory.shutdown()
    assert memory.core.finished
    assert sorted(client for disposal, client in memory.directives if disposal is Disposal.ABORT) == clients


def test_a_connection_accepted_during_shutdown_is_told_too() -> None:
    memory = make()
    join(memory, "alice")
    memory.shutdown()
    late = memory.connect()
    assert decoded(memory.read(late)) == [Shutdown(SHUTDOWN_REASON)]
    assert memory.directives[-1] == (Disposal.HALF_CLOSE, late)


def test_shutdown_with_nobody_connected_is_finished_at_once() -> None:
    memory = make()
    memory.shutdown()
    assert memory.core.finished


# --- rule 5: accept pauses -------------------------------------------------------------------------


def test_an_accept_error_pauses_accepting_for_the_backoff() -> None:
    memory = make()
    core = memory.core
    assert core.accepting
    core.accept_failed(OSError(errno.EMFILE, "Too many open files"), 10.0)
    assert not core.accepting
    assert core.next_deadline() == 10.0 + ACCEPT_BACKOFF
    core.expire(10.0 + ACCEPT_BACKOFF / 2)
    assert not core.accepting
    core.expire(10.0 + ACCEPT_BACKOFF)
    assert core.accepting


def test_pump_goes_on_until_writing_and_closing_have_nothing_left() -> None:
    core = ServerCore(CODEC, server_name="test/1")
    client = core.connect("127.0.0.1", 0.0)
    core.receive(client, encode_frame(b""), 0.0)  # bad_payload: an error to flush, then §9.4
    written: list[bytes] = []
    disposed: list[tuple[Disposal, ClientId]] = []

    def write(outbox: Outbox) -> None:
        data = b"".join(outbox.frames)
        written.append(data)
        core.sent(outbox.client, len(data))  # the flush completes: the half-close is due now

    core.pump(write, lambda disposal, target: disposed.append((disposal, target)))
    assert errors(b"".join(written)) == [("bad_payload", True)]
    assert disposed == [(Disposal.HALF_CLOSE, client)]
    assert not core.has_output


def test_pump_writes_what_a_failed_write_announces() -> None:
    # A write that finds the socket reset tells the core, whose left notice makes another
    # outbox dirty: the same pump must write it, or it would wait for an unrelated event.
    core = ServerCore(CODEC, server_name="test/1")
    members = []
    for name in ("alice", "bob"):
        client = core.connect("127.0.0.1", 0.0)
        core.receive(client, encode_message(CODEC, Hello(name)), 0.0)
        members.append(client)
    alice, bob = members
    core.pump(lambda outbox: core.sent(outbox.client, outbox.size), lambda *_: None)
    core.receive(alice, encode_message(CODEC, Say("hi")), 0.0)  # queued for bob
    written: list[ClientId] = []

    def write(outbox: Outbox) -> None:
        written.append(outbox.client)
        if outbox.client == bob:
            core.connection_lost(bob)  # the send failed: reset
        else:
            core.sent(outbox.client, outbox.size)

    core.pump(write, lambda *_: None)
    assert written == [bob, alice]  # alice's left notice was written in the same pump
    assert not core.has_output


def test_flush_early_ignores_an_outbox_waiting_for_its_socket() -> None:
    memory = make()
    alice = join(memory, "alice")
    bob = join(memory, "bob")
    core = memory.core
    core.take_dirty()
    outbox = core.outbox(bob)
    assert outbox is not None
    # bob's socket took nothing of a large backlog: the server waits for it to be writable.
    core._carry_out([Send(b"q" * (FLUSH_EARLY + 1), (bob,))])
    core.take_dirty()
    core.receive(alice, encode_message(CODEC, Say("more")), 0.0)
    assert not core.flush_early
    assert core.take_dirty() == []


def test_a_fatal_error_that_would_pass_the_cap_closes_at_once_and_leaves_once() -> None:
    memory = make()
    alice = join(memory, "alice")
    bob = join(memory, "bob")
    memory.read(alice)
    backlog = 1000
    memory.core._carry_out([Send(b"q" * backlog, (bob,))])  # bob is not reading
    memory.core.max_output_buffer = backlog + 8  # no error frame fits any more
    memory.receive(bob, encode_frame(b""))  # bad_payload: fatal
    assert memory.directives == [(Disposal.ABORT, bob)]  # no linger (§9.4 with §10)
    assert bob not in memory.core
    assert [m for m in decoded(memory.read(alice)) if isinstance(m, Left)] == [
        Left("bob", "127.0.0.1", 1, "error")
    ]


def test_shutdown_logs_whom_it_disconnects_and_how_long_it_took(caplog: pytest.LogCaptureFixture) -> None:
    memory = make()
    alice = join(memory, "alice")
    join(memory, "bob")
    memory.connect()  # never joins
    caplog.set_level("INFO", logger="protocol.server")
    memory.shutdown()
    assert "shutting down: telling 3 connections (2 members)" in caplog.text
    for client in (alice, 2, 3):
        memory.read(client)
    memory.receive(alice, b"")
    memory.advance(0.25)
    memory.receive(2, b"")
    assert "shutdown complete" not in caplog.text  # one is still draining
    memory.advance(SHUTDOWN_FLUSH_TIMEOUT)
    assert "shutdown complete: 3 connections closed in 2.250 s (1 aborted)" in caplog.text


def test_a_shutdown_notice_that_would_pass_the_cap_closes_at_once() -> None:
    memory = make()
    alice = join(memory, "alice")
    bob = join(memory, "bob")
    memory.read(alice)
    memory.core._carry_out([Send(b"q" * 1000, (bob,))])  # bob is not reading
    memory.core.max_output_buffer = 1010  # room for no shutdown frame (§12 with §10)
    memory.shutdown()
    assert memory.directives == [(Disposal.ABORT, bob)]  # alice's notice is still queued
    assert bob not in memory.core
    assert decoded(memory.read(alice)) == [Shutdown(SHUTDOWN_REASON)]
