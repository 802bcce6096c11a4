"""``python -m bench.flood``: readers that keep up, each in a process of its own, ping during
a flood (spec §10.1); prints the round trips' median and p99 (also without the flood's
onset), what each pong waited behind in octets against §10.1's bound and that bound in
time at the slowest reader's pace, and how long the readers themselves went without running.

One member sends 200-octet says unpaced while ``--readers`` others read everything and
ping every 50 ms. A reader in its own process reads as fast as one Python process can, so
what its pong waits behind is the server's backlog for it (the hold mark of §10.1, the
kernel's unsent octets) and its own receive buffer (``--rcvbuf``), not a shared test
loop's. The flood keeps every reader busy (it goes at the slowest one's pace), so with more
readers than CPUs a reader's pauses, not the server, set the tail. TESTING.md has the figures.
"""

from __future__ import annotations

import argparse
import multiprocessing
import selectors
import socket
import statistics
import sys
import time
from collections.abc import Sequence
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from typing import NamedTuple

from conformance.serverproc import BUNDLED, ServerProcess
from protocol import Hello, Ping, Say, encode_message, get_codec
from protocol.constants import DEFAULT_HOLD_MARK, DEFAULT_OUTPUT_SOFT_LIMIT, HEADER_SIZE, NOT_SENT_LOW_WATER
from protocol.frame import FrameDecoder

PING_INTERVAL = 0.05
#: The flood's onset: every process starts at once and the first writes go out, so the first
#: pings wait for the start of the processes as much as for the server. Their round trips
#: are counted, and also left out of a second figure.
ONSET = 0.25
#: Seconds a reader waits for its last pongs once the flood is over.
LAST_PONGS = 5.0
#: What Linux may queue unsent past TCP_NOTSENT_LOWAT: the last write's segment, at most the
#: loopback MTU (§10.1).
LOOPBACK_SEGMENT = 64 << 10


def _joined(address: tuple[str, int], name: str, rcvbuf: int) -> socket.socket:
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: the window
    sock.connect(address)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(encode_message(get_codec("msgpack"), Hello(name)))
    return sock


class Seen(NamedTuple):
    """What one reader measured."""

    #: Seconds from each ping to its pong.
    trips: list[float]
    #: Seconds from the start of the flood to each of those pings.
    starts: list[float]
    #: Octets of the frames taken after each ping was sent, up to and including its pong.
    behind: list[int]
    #: Seconds between the reader's turns during the flood: how long it was not running.
    pauses: list[float]
    #: Its SO_RCVBUF as the system reports it (Linux doubles what was asked for, and uses it).
    rcvbuf: int
    #: Octets it took per second during the flood: the R of §10.1's time bound.
    rate: float


def reader(
    address: tuple[str, int], name: str, *, rcvbuf: int, seconds: float, out: Queue[Seen], go: Event
) -> None:
    """Read and decode everything, ping every ``PING_INTERVAL`` for ``seconds``; put what it saw."""
    codec = get_codec("msgpack")
    sock = _joined(address, name, rcvbuf)
    sock.setblocking(False)
    decoder = FrameDecoder()
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ)
    go.wait()
    sent: dict[str, tuple[float, int]] = {}
    trips: list[float] = []
    starts: list[float] = []
    behind: list[int] = []
    pauses: list[float] = []
    count = taken = flooded = 0
    next_ping = 0.0
    begun = last = time.monotonic()
    end = begun + seconds
    while (now := time.monotonic()) < end or (sent and now < end + LAST_PONGS):
        if now < end:
            pauses.append(now - last)
            flooded = taken
        last = now
        if end > now >= next_ping:
            count += 1
            token = f"{name}-{count}"
            sent[token] = (now, taken)
            next_ping = now + PING_INTERVAL
            sock.send(encode_message(codec, Ping(token)))
        if not selector.select(0.01):
            continue
        try:
            data = sock.recv(1 << 18)
        except BlockingIOError:
            continue
        decoder.feed(data)
        for frame in decoder.frames():
            taken += HEADER_SIZE + len(frame)
            message = codec.decode(frame)
            if message.get("type") == "pong":
                since = sent.pop(message["token"], None)
                if since is not None:
                    trips.append(time.monotonic() - since[0])
                    starts.append(since[0] - begun)
                    behind.append(taken - since[1])
    rcvbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    sock.close()
    out.put(Seen(trips, starts, behind, pauses, rcvbuf, flooded / seconds))


def flooder(address: tuple[str, int], seconds: float, go: Event, out: Queue[int]) -> None:
    """Send says in writes of 500 for ``seconds``, as fast as the server takes them."""
    codec = get_codec("msgpack")
    sock = _joined(address, "flooder", 0)
    batch = b"".join(encode_message(codec, Say("f" * 180)) for _ in range(500))
    sock.settimeout(0.5)
    go.wait()
    says = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            sock.sendall(batch)  # a timeout may have sent part of it: only a count is off
            says += 500
        except TimeoutError:
            pass
    sock.close()
    out.put(says)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.flood", description=__doc__.split("\n\n")[0])
    parser.add_argument("--impl", choices=sorted(BUNDLED), default="impl_select")
    parser.add_argument("--readers", type=int, default=20)
    parser.add_argument("--rcvbuf", type=int, default=65536, help="readers' SO_RCVBUF, 0: the system's")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument(
        "--realtime", action="store_true", help="run the server under SCHED_FIFO: no reader delays it"
    )
    args, server_args = parser.parse_known_args(argv)
    template = BUNDLED[args.impl]
    if args.realtime:
        template = f"{sys.executable} -m bench.pin --fifo - {template}"
    server = ServerProcess(template, extra_args=("--log-level", "ERROR", *server_args)).start()
    context = multiprocessing.get_context("spawn")
    go = context.Event()
    out: Queue[Seen] = context.Queue()
    flooded: Queue[int] = context.Queue()
    try:
        readers = [
            context.Process(
                target=reader,
                args=(server.address, f"r{n}"),
                kwargs={"rcvbuf": args.rcvbuf, "seconds": args.seconds, "out": out, "go": go},
            )
            for n in range(args.readers)
        ]
        flood = context.Process(target=flooder, args=(server.address, args.seconds, go, flooded))
        for process in (*readers, flood):
            process.start()
        go.set()
        results = [out.get(timeout=args.seconds + LAST_PONGS + 60) for _ in range(args.readers)]
        says = flooded.get(timeout=60)
        for process in (*readers, flood):
            process.join(30)
    finally:
        server.stop()
    trips = sorted(t for seen in results for t in seen.trips)
    if not trips:
        print("no pong came back", file=sys.stderr)
        return 1
    settled = sorted(
        trip for seen in results for trip, at in zip(seen.trips, seen.starts, strict=True) if at >= ONSET
    )
    behind = sorted(b / 1024 for seen in results for b in seen.behind)
    pauses = sorted(p for seen in results for p in seen.pauses)
    bound = pong_bound(server_hold_mark(server_args), max(seen.rcvbuf for seen in results))
    slowest = min(seen.rate for seen in results)
    print(
        f"{args.impl}: {args.readers} readers (rcvbuf {args.rcvbuf or 'system'}), {says} says in "
        f"{args.seconds:g} s{' (server SCHED_FIFO)' if args.realtime else ''}"
        f"{''.join(' ' + arg for arg in server_args)}: {len(trips)} pings, median "
        f"{statistics.median(trips) * 1000:.1f} ms, p99 {p99(trips) * 1000:.1f} ms, "
        f"max {trips[-1] * 1000:.1f} ms (after the first {ONSET:g} s: {_figures(settled)}); "
        f"behind median {statistics.median(behind):.0f} KiB, "
        f"p99 {p99(behind):.0f} KiB, max {behind[-1]:.0f} KiB (§10.1: {bound >> 10} KiB, at the "
        f"slowest reader's {slowest / 1e6:.1f} MB/s {bound / slowest * 1000:.1f} ms); "
        f"the readers' own pauses p99 {p99(pauses) * 1000:.1f} ms, "
        f"max {pauses[-1] * 1000:.1f} ms"
    )
    return 0


def _figures(ordered: Sequence[float]) -> str:
    if not ordered:
        return "none"
    return f"{len(ordered)} pings, p99 {p99(ordered) * 1000:.1f} ms, max {ordered[-1] * 1000:.1f} ms"


def p99(ordered: Sequence[float]) -> float:
    """The 99th percentile of values already sorted."""
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def pong_bound(hold_mark: int, rcvbuf: int) -> int:
    """§10.1's octets for a reader whose receive buffer the system reports as ``rcvbuf``:
    what its pong waits behind at most, besides one say's fan-out and its own answers (the
    hold mark, the server kernel's unsent octets past one segment, the receive buffer)."""
    return hold_mark + NOT_SENT_LOW_WATER + LOOPBACK_SEGMENT + rcvbuf


def server_hold_mark(server_args: list[str]) -> int:
    """The server's hold mark: the lower of ``--hold-mark`` and ``--output-soft-limit`` (§10.1)."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--hold-mark", type=int, default=DEFAULT_HOLD_MARK)
    parser.add_argument("--output-soft-limit", type=int, default=DEFAULT_OUTPUT_SOFT_LIMIT)
    known, _ = parser.parse_known_args(server_args)
    return min(int(known.hold_mark), int(known.output_soft_limit))


if __name__ == "__main__":
    sys.exit(main())
