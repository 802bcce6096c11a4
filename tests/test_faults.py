"""Faults and hostile resource use against both servers (spec §3.2, §7.4, §8.7, §9.4, §10, §12).

Clients reset mid-frame, half-close, stop reading during a flood, arrive in a storm, and are
still flooding when the server is told to stop. Hostile clients announce huge frames, send
one octet at a time, or never say hello. Through all of it the server serves the others,
who lose nothing it had accepted (sequence numbers, tests/crowd.py), and its descriptors and
memory come back to their baseline afterwards (measured from /proc).

Memory is compared with bounds, not equality: the allocator keeps freed memory for reuse,
so resident size rarely returns exactly. Each bound is far below what the attack would cost
if the server kept what it is sent, and a second round of the same attack must not grow the
server further (a leak would).
"""

from __future__ import annotations

import json
import random
import signal
import socket
import struct
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from crowd import Crowd, Peer, at_most_every, fds, raise_descriptor_limit, rss, running, say_text, settle

from conformance.serverproc import BUNDLED, ServerProcess
from conformance.wire import WirePeer
from protocol import (
    Codec,
    Error,
    Hello,
    Joined,
    Left,
    PickleCodec,
    Say,
    Shutdown,
    encode_frame,
    encode_message,
    get_codec,
)
from protocol.constants import CLOSE_LINGER, DEFAULT_MAX_FRAME, SHUTDOWN_FLUSH_TIMEOUT, CodecName
from protocol.options import ServerOptions
from protocol.server import ServerCore
from protocol.server.memory import MemoryServer
from protocol.serving import server_name

ROOT = Path(__file__).resolve().parent.parent
QUIET = ("--log-level", "ERROR")
LOCALHOST = "127.0.0.1"


@pytest.fixture(params=sorted(BUNDLED))
def impl(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def members(crowd: Crowd, prefix: str, count: int) -> list[Peer]:
    return crowd.join(f"{prefix}{i:04d}" for i in range(count))


def all_from(readers: list[Peer], senders: list[Peer], count: int) -> bool:
    return all(
        reader.received_from(sender.name) == count
        for reader in readers
        for sender in senders
        if sender is not reader
    )


def connected(peers: list[Peer]) -> bool:
    return all(peer.connected for peer in peers)


def sent(peers: list[Peer]) -> bool:
    return all(not peer.out for peer in peers)


def assert_clean(*peers: Peer) -> None:
    for peer in peers:
        assert peer.violations == [], peer.violations[:10]
        assert peer.errors() == [], peer.errors()[:5]


# --- faults ----------------------------------------------------------------------------------


def test_resets_mid_frame_cost_only_the_reset_connections(impl: str) -> None:
    victims = 40
    with running(impl, *QUIET) as server, Crowd(server.address) as crowd:
        watcher, alice = members(crowd, "stay", 2)
        crowd.barrier([watcher, alice])
        baseline = fds(server)
        doomed = members(crowd, "doomed", victims)
        names = {p.name for p in doomed}
        crowd.pump(
            lambda: sum(isinstance(m, Joined) and m.name in names for m in watcher.others) == victims,
            30,
            "joined",
        )
        cut = encode_message(crowd.codec, Say("never finished"))[:7]
        crowd.say(alice, range(200))
        for peer in doomed:
            crowd.send_raw(peer, cut)
        crowd.pump(lambda: all(not p.out for p in doomed), 10, "half frames sent")
        for peer in doomed:
            crowd.reset(peer)
        crowd.say(alice, range(200, 400))

        def lefts() -> list[Left]:
            return [m for m in watcher.others if isinstance(m, Left)]

        crowd.pump(lambda: len(lefts()) == victims and all_from([watcher], [alice], 400), 30, "every left")
        crowd.barrier([watcher, alice])
        assert {m.reason for m in lefts()} == {"connection_lost"}
        assert sorted(m.name for m in lefts()) == sorted(p.name for p in doomed)
        assert [m.clients for m in lefts()] == list(range(victims + 1, 1, -1))
        assert_clean(watcher, alice)
        settle(lambda: fds(server), baseline, 10, "descriptors after the resets")


def test_half_closed_clients_get_what_was_queued_before_their_end(impl: str) -> None:
    with running(impl, *QUIET) as server, Crowd(server.address) as crowd:
        watcher, speaker = members(crowd, "stay", 2)
        crowd.barrier([watcher, speaker])
        baseline = fds(server)
        quitters = members(crowd, "quit", 10)
        cutter = members(crowd, "cutter", 1)[0]
        crowd.barrier([watcher, *quitters, cutter])
        # Queued for the quitters before their EOF: it must reach them, then FIN (§9.4).
        crowd.say(speaker, range(50))
        crowd.barrier([speaker])
        for peer in quitters:
            crowd.say(peer, range(30))
            crowd.half_close(peer)
        crowd.send_raw(cutter, encode_message(crowd.codec, Say("cut"))[:9])
        crowd.half_close(cutter)
        crowd.pump(lambda: all(p.ended for p in [*quitters, cutter]), 30, "every server FIN")
        crowd.pump(lambda: sum(isinstance(m, Left) for m in watcher.others) == 11, 30, "every left")
        crowd.barrier([watcher, speaker])

        for peer in quitters:
            assert peer.ended == "FIN"
            assert peer.received_from(speaker.name) == 50
        assert cutter.ended == "FIN"
        lefts = {m.name: m.reason for m in watcher.others if isinstance(m, Left)}
        assert lefts == {**{p.name: "quit" for p in quitters}, cutter.name: "connection_lost"}
        # Each quitter's 30 messages, all before its left (§11.3).
        assert all(watcher.left_at[p.name] == 30 for p in quitters)
        assert_clean(watcher, speaker, *quitters)
        settle(lambda: fds(server), baseline, 10, "descriptors after the half-closes")


def test_a_reader_that_stops_during_a_flood_is_cut_off_and_nobody_loses_anything(impl: str) -> None:
    # Within the spec's advice (§10): the cap well above max_frame.
    cap, max_frame = 1 << 20, 1 << 16
    rounds, batch, padding = 40, 50, 4000
    options = ("--max-output-buffer", str(cap), "--max-frame", str(max_frame))
    with running(impl, *QUIET, *options) as server, Crowd(server.address) as crowd:
        readers = members(crowd, "reader", 3)
        flooders = members(crowd, "flood", 3)
        [sleepy] = crowd.open(["sleepy"], rcvbuf=4096)
        crowd.send(sleepy, Hello("sleepy"))
        crowd.pump(lambda: sleepy.welcome is not None, 10, "sleepy's welcome")
        everyone = readers + flooders
        crowd.barrier(everyone)
        crowd.stall(sleepy)
        before = rss(server)
        # In rounds that the others read as they come: only sleepy falls behind.
        for round_ in range(rounds):
            for peer in flooders:
                crowd.say(peer, range(round_ * batch, (round_ + 1) * batch), padding)
            caught_up = partial(all_from, everyone, flooders, (round_ + 1) * batch)
            crowd.pump(at_most_every(0.01, caught_up), 30, "a round")
        crowd.pump(lambda: all("sleepy" in p.left_at for p in everyone), 10, "sleepy's left")
        crowd.barrier(everyone)
        grown = rss(server) - before

        assert_clean(*everyone)
        for peer in everyone:
            [left] = [m for m in peer.others if isinstance(m, Left)]
            assert (left.name, left.reason) == ("sleepy", "slow_consumer")
        flood = len(flooders) * rounds * batch * padding
        # The server held at most `cap` of the flood for sleepy; the others read each round.
        assert grown < 6 * 1024, f"RSS grew by {grown} KiB"
        print(f"\n{impl}: {flood // 1_000_000} MB flood past a stalled reader: RSS +{grown} KiB")


def test_a_connect_storm_leaves_the_room_serving_and_nothing_behind(impl: str) -> None:
    storm = 600
    raise_descriptor_limit(storm + 200)
    with running(impl, *QUIET) as server, Crowd(server.address) as crowd:
        watcher, alice = members(crowd, "stay", 2)
        crowd.barrier([watcher, alice])
        baseline = fds(server)
        crowd.say(alice, range(300))
        peers = crowd.open(f"storm{i:04d}" for i in range(storm))
        crowd.pump(lambda: all(p.connected or p.ended for p in peers), 30, "every storm connection")
        thirds = storm // 3
        for peer in peers[:thirds]:
            crowd.hang_up(peer)  # FIN, nothing sent
        for peer in peers[thirds : 2 * thirds]:
            crowd.reset(peer)  # RST, nothing sent
        hello_then_reset = peers[2 * thirds :]
        for peer in hello_then_reset:
            crowd.send(peer, Hello(peer.name))
        crowd.pump(lambda: all(not p.out for p in hello_then_reset), 10, "every hello sent")
        for peer in hello_then_reset:
            crowd.reset(peer)
        crowd.say(alice, range(300, 600))
        crowd.pump(lambda: all_from([watcher], [alice], 600), 30, "alice's messages")
        settle(lambda: fds(server), baseline, 20, "descriptors after the storm")
        crowd.barrier([watcher, alice])

        # Each stormer that joined before its reset left again (§8.7); none was heard twice.
        joined = [m.name for m in watcher.others if isinstance(m, Joined) and m.name.startswith("storm")]
        left = {m.name: m.reason for m in watcher.others if isinstance(m, Left)}
        assert sorted(joined) == sorted(left)
        assert set(joined) <= {p.name for p in hello_then_reset}
        assert set(left.values()) <= {"connection_lost"}
        assert_clean(watcher, alice)
        print(f"\n{impl}: storm of {storm}, {len(joined)} joined before their reset; fds back to {baseline}")


def test_sigterm_during_a_flood_ends_every_stream_cleanly(impl: str) -> None:
    """Readers get a prefix of every stream, then shutdown, then FIN; a reader that stopped
    reading cannot hold the server beyond SHUTDOWN_FLUSH_TIMEOUT (§12)."""
    count, flood = 12, 3000
    server = ServerProcess(BUNDLED[impl], extra_args=QUIET).start()
    try:
        with Crowd(server.address) as crowd:
            peers = members(crowd, "flood", count)
            [sleepy] = crowd.open(["sleepy"], rcvbuf=4096)
            crowd.send(sleepy, Hello("sleepy"))
            crowd.pump(lambda: sleepy.welcome is not None, 10, "sleepy's welcome")
            crowd.stall(sleepy)
            crowd.barrier(peers)
            for peer in peers:
                crowd.say(peer, range(flood))
            crowd.pump(lambda: sum(p.relayed for p in peers) > count * flood, 30, "the flood under way")
            server.signal(signal.SIGTERM)
            stopped = time.monotonic()

            told: set[str] = set()

            def stop_sending_on_shutdown() -> bool:
                for peer in peers:
                    if peer.name not in told and peer.others and isinstance(peer.others[-1], Shutdown):
                        told.add(peer.name)
                        peer.out.clear()  # a client told of shutdown stops and closes (§12)
                        crowd.half_close(peer)
                return all(p.ended for p in peers)

            crowd.pump(stop_sending_on_shutdown, 15, "every stream to end")
            status = server.wait(15)
            took = time.monotonic() - stopped
            assert sleepy.violations == []
        assert status == 0
        # sleepy's unread backlog held the flush until its deadline, and no longer.
        assert took < SHUTDOWN_FLUSH_TIMEOUT + 3
        print(f"\n{impl}: SIGTERM during a flood: every stream ended, exit 0 after {took:.1f} s")
        for peer in peers:
            # A prefix of every sender's stream, then shutdown, then FIN; no left (§12).
            assert peer.violations == []
            assert peer.others[-1] == Shutdown("server shutting down")
            assert not any(isinstance(m, Left | Error) for m in peer.others)
            assert peer.ended == "FIN"
            assert all(peer.first_sequence.get(p.name, 0) == 0 for p in peers)
    finally:
        server.stop()
    assert "Traceback" not in server.stderr_tail(100_000)


def test_fatal_errors_to_clients_that_never_close_hold_nothing_beyond_the_linger(impl: str) -> None:
    """After a fatal error the server drains until EOF, for CLOSE_LINGER at most (§9.4): clients
    that neither close nor read cannot keep their descriptors."""
    count = 300
    raise_descriptor_limit(count + 200)
    with running(impl, *QUIET) as server, Crowd(server.address) as crowd:
        [member] = members(crowd, "member", 1)
        crowd.barrier([member])
        baseline = fds(server)
        peers = crowd.open(f"stubborn{i:03d}" for i in range(count))
        crowd.pump(partial(connected, peers), 30, "every connection")
        for index, peer in enumerate(peers):
            if index % 2:
                crowd.stall(peer)  # reads nothing, so the error cannot even be flushed
            crowd.send_raw(peer, encode_frame(b""))  # bad_payload, fatal
        reading = peers[::2]
        crowd.pump(lambda: all(p.errors() for p in reading), 10, "the errors")
        started = time.monotonic()
        settle(lambda: fds(server), baseline, CLOSE_LINGER + 5, "descriptors after the linger")
        took = time.monotonic() - started
        crowd.barrier([member])
        for peer in reading:
            assert [(e.code, e.fatal) for e in peer.errors()] == [("bad_payload", True)]
        assert_clean(member)
        print(
            f"\n{impl}: {count} clients that never close: descriptors released {took:.1f} s after the errors"
        )


# --- hostile resource use ---------------------------------------------------------------------


def await_accepted(server: ServerProcess, count: int) -> None:
    deadline = time.monotonic() + 30
    while fds(server) < count:
        assert time.monotonic() < deadline, f"{fds(server)} descriptors, expected {count}"
        time.sleep(0.02)  # polling interval


def test_announced_frame_lengths_reserve_no_memory(impl: str) -> None:
    """1,000 connections announce max_frame (1 MiB) and send 100 octets of it: a server that
    reserved what is announced would need a gigabyte."""
    hostile = 1000
    raise_descriptor_limit(hostile + 200)
    header = struct.pack(">I", DEFAULT_MAX_FRAME)
    with running(impl, *QUIET) as server, Crowd(server.address) as crowd:
        [watcher] = members(crowd, "watcher", 1)
        # A first round warms the allocator up; the second is measured and must cost no more.
        grown = []
        for round_ in range(2):
            crowd.barrier([watcher])
            baseline_fds, baseline_rss = fds(server), rss(server)
            peers = crowd.open(f"huge{round_}-{i:04d}" for i in range(hostile))
            crowd.pump(partial(connected, peers), 30, "every connection")
            await_accepted(server, baseline_fds + hostile)
            crowd.barrier([watcher])
            idle = rss(server)
            for peer in peers:
                crowd.send_raw(peer, header + bytes(100))
            crowd.pump(partial(sent, peers), 30, "every announcement")
            crowd.barrier([watcher])
            announced = rss(server)
            for peer in peers:
                crowd.reset(peer)
            settle(lambda: fds(server), baseline_fds, 20, "descriptors after the round")
            crowd.barrier([watcher])
            grown.append((idle - baseline_rss, announced - idle, rss(server) - baseline_rss))
        print(f"\n{impl}: {hostile} connections (KiB): idle, +announced, after close: {grown}")
        for idle_cost, announced_cost, _ in grown:
            assert idle_cost < hostile * 16, "more than 16 KiB per idle connection"
            assert announced_cost < 8 * 1024, "announced lengths cost memory"
        assert grown[1][2] < grown[0][2] + 4 * 1024, "a second round kept more memory: a leak"
        assert_clean(watcher)


def test_senders_of_one_octet_at_a_time_are_served_with_bounded_memory(impl: str) -> None:
    count, says = 200, 5
    with running(impl, *QUIET) as server, Crowd(server.address) as crowd:
        [watcher] = members(crowd, "watcher", 1)
        crowd.barrier([watcher])
        before = rss(server)
        peers = crowd.open(f"drip{i:03d}" for i in range(count))
        crowd.pump(partial(connected, peers), 30, "every connection")
        streams = {
            peer: encode_message(crowd.codec, Hello(peer.name))
            + b"".join(encode_message(crowd.codec, Say(say_text(peer.name, n))) for n in range(says))
            for peer in peers
        }
        longest = max(len(stream) for stream in streams.values())
        for offset in range(longest):
            for peer, stream in streams.items():
                if offset < len(stream):
                    crowd.send_raw(peer, stream[offset : offset + 1])
            crowd.pump(partial(sent, peers), 10, "one octet each")
        crowd.pump(lambda: all_from([watcher], peers, says), 30, "every dripped message")
        crowd.barrier([watcher])
        grown = rss(server) - before
        assert all(p.welcome is not None for p in peers)
        assert_clean(watcher, *peers)
        assert grown < 8 * 1024, f"RSS grew by {grown} KiB"
        print(f"\n{impl}: {count} one-octet senders, {longest} octets each: RSS +{grown} KiB")


def test_connections_that_never_say_hello_are_timed_out_with_bounded_memory(impl: str) -> None:
    silent = 1000
    raise_descriptor_limit(silent + 200)
    with running(impl, *QUIET, "--hello-timeout", "2") as server, Crowd(server.address) as crowd:
        [member] = members(crowd, "member", 1)
        crowd.barrier([member])
        baseline_fds, before = fds(server), rss(server)
        peers = crowd.open(f"silent{i:04d}" for i in range(silent))
        crowd.pump(partial(connected, peers), 30, "every connection")
        await_accepted(server, baseline_fds + silent)
        crowd.barrier([member])
        grown = rss(server) - before
        crowd.pump(lambda: all(p.ended for p in peers), 30, "every hello timeout")
        for peer in peers:
            assert [(e.code, e.fatal) for e in peer.errors()] == [("hello_timeout", True)]
            assert peer.ended == "FIN"
        settle(lambda: fds(server), baseline_fds, 10, "descriptors after the timeouts")
        crowd.barrier([member])
        assert_clean(member)
        assert grown < silent * 16, f"RSS grew by {grown} KiB for {silent} idle connections"
        print(f"\n{impl}: {silent} silent connections: RSS +{grown} KiB, all timed out")


# --- pickle mode: the restricted unpickler against a running server -----------------------------


def gadget_payloads(marker: Path) -> Iterator[Any]:
    """Every refused pickle of the vectors, and gadgets that would create ``marker`` if run."""
    document = json.loads((ROOT / "spec" / "vectors" / "invalid.json").read_text(encoding="utf-8"))
    for vector in document["vectors"]:
        if (
            vector["codec"] == "pickle"
            and vector["error"] == "bad_payload"
            and vector["state"] == "await_hello"
        ):
            yield pytest.param(bytes.fromhex(vector["hex"]), id=vector["id"])
    touch = f"touch {marker}".encode()

    def unicode(text: bytes) -> bytes:
        return b"X" + len(text).to_bytes(4, "little") + text

    yield pytest.param(encode_frame(b"\x80\x02cos\nsystem\n" + unicode(touch) + b"\x85R."), id="os.system")
    yield pytest.param(
        encode_frame(
            b"\x80\x02csubprocess\ncall\n(X\x05\x00\x00\x00touch" + unicode(str(marker).encode()) + b"l\x85R."
        ),
        id="subprocess.call",
    )
    source = f"open({str(marker)!r}, 'w')".encode()
    yield pytest.param(encode_frame(b"\x80\x02cbuiltins\neval\n" + unicode(source) + b"\x85R."), id="eval")
    yield pytest.param(
        encode_frame(
            b"\x80\x02cbuiltins\ngetattr\ncbuiltins\n__import__\n"
            + unicode(b"os")
            + b"\x85R"
            + unicode(b"system")
            + b"\x86R"
            + unicode(touch)
            + b"\x85R."
        ),
        id="getattr-chain",
    )


def test_a_pickle_server_refuses_every_gadget_and_runs_nothing(impl: str, tmp_path: Path) -> None:
    marker = tmp_path / "gadget-ran"
    gadgets = list(gadget_payloads(marker))
    with (
        running(impl, *QUIET, "--codec", "pickle") as server,
        WirePeer(server.address, codec=PickleCodec(), label="alice") as alice,
    ):
        alice.join("alice")
        for gadget in gadgets:
            [frame] = gadget.values
            with WirePeer(server.address, codec=PickleCodec(), label=gadget.id, timeout=10) as mallory:
                mallory.send_raw(frame, gadget.id, tolerate_close=True)
                error = mallory.expect_error("bad_payload", fatal=True)
                assert len(error.message) <= 200
                mallory.wait_closed()
            # The room is still served, at once: no gadget ran or hung the server.
            assert alice.barrier(timeout=5) == []
    assert not marker.exists()
    assert list(tmp_path.iterdir()) == []


# --- hostile input, end to end: each server answers as the core it wraps ----------------------


def core_answer(impl: str, codec: Codec, data: bytes) -> bytes:
    """What ServerCore queues for a client that sends ``data`` and then ends its stream."""
    memory = MemoryServer(ServerCore(codec, server_name=server_name(impl)))
    client = memory.connect(LOCALHOST)
    memory.receive(client, data)
    memory.receive(client, b"")
    return memory.read(client)


def server_answer(address: tuple[str, int], data: bytes) -> bytes:
    """Send ``data``, half-close, and read until the server closes."""
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        received = bytearray()
        while chunk := sock.recv(1 << 16):
            received += chunk
        return bytes(received)


def hostile_inputs(codec: str, count: int) -> list[bytes]:
    """Every invalid vector of ``codec`` (joined first where it says so), and mutations of them."""
    document = json.loads((ROOT / "spec" / "vectors" / "invalid.json").read_text(encoding="utf-8"))
    hello = encode_message(get_codec(codec), Hello("alice"))
    inputs = [
        (hello if vector["state"] == "active" else b"") + bytes.fromhex(vector["hex"])
        for vector in document["vectors"]
        if vector["codec"] == codec
    ]
    chance = random.Random(f"{codec}-hostile")  # fixed: the same inputs every run
    for _ in range(count):
        data = bytearray(chance.choice(inputs))
        for _ in range(chance.randint(1, 4)):
            at = chance.randrange(len(data) + 1)
            data[at : at + chance.randint(0, 4)] = chance.randbytes(chance.randint(0, 4))
        inputs.append(bytes(data))
    return inputs


@pytest.mark.parametrize("codec", ["msgpack", "pickle"])
def test_each_server_answers_hostile_input_byte_for_byte_as_its_core(impl: str, codec: str) -> None:
    """The I/O layer adds nothing and loses nothing: over TCP, the octets a server sends for
    each invalid vector (and 100 mutations of them) are exactly what its sans-I/O core queued."""
    inputs = hostile_inputs(codec, 100)
    with running(impl, *QUIET, "--codec", codec) as server:
        for data in inputs:
            expected = core_answer(impl, ServerOptions(codec=CodecName(codec)).make_codec(), data)
            assert server_answer(server.address, data) == expected, data.hex()
