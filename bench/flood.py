"""``python -m bench.flood``: readers that keep up, each in a process of its own, ping during
a flood (spec §10.1); prints the round trips' median and p99.

One member sends 200-octet says unpaced while ``--readers`` others read everything and
ping every 50 ms. A reader in its own process reads as fast as one Python process can, so
what its pong waits behind is the server's backlog for it (the hold mark of §10.1, the
kernel's unsent octets) and its own receive buffer (``--rcvbuf``), not a shared test
loop's. TESTING.md has the figures.
"""

from __future__ import annotations

import argparse
import multiprocessing
import selectors
import socket
import statistics
import sys
import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event

from conformance.serverproc import BUNDLED, ServerProcess
from protocol import Hello, Ping, Say, encode_message, get_codec
from protocol.frame import FrameDecoder

PING_INTERVAL = 0.05
#: Seconds a reader waits for its last pongs once the flood is over.
LAST_PONGS = 5.0


def _joined(address: tuple[str, int], name: str, rcvbuf: int) -> socket.socket:
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: the window
    sock.connect(address)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(encode_message(get_codec("msgpack"), Hello(name)))
    return sock


def reader(
    address: tuple[str, int], name: str, *, rcvbuf: int, seconds: float, out: Queue[list[float]], go: Event
) -> None:
    """Read and decode everything, ping every ``PING_INTERVAL`` for ``seconds``; put the trips."""
    codec = get_codec("msgpack")
    sock = _joined(address, name, rcvbuf)
    sock.setblocking(False)
    decoder = FrameDecoder()
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ)
    go.wait()
    sent: dict[str, float] = {}
    trips: list[float] = []
    count = 0
    next_ping = 0.0
    end = time.monotonic() + seconds
    while (now := time.monotonic()) < end or (sent and now < end + LAST_PONGS):
        if end > now >= next_ping:
            count += 1
            token = f"{name}-{count}"
            sent[token] = now
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
            message = codec.decode(frame)
            if message.get("type") == "pong":
                since = sent.pop(message["token"], None)
                if since is not None:
                    trips.append(time.monotonic() - since)
    sock.close()
    out.put(trips)


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
    args, server_args = parser.parse_known_args(argv)
    server = ServerProcess(BUNDLED[args.impl], extra_args=("--log-level", "ERROR", *server_args)).start()
    context = multiprocessing.get_context("spawn")
    go = context.Event()
    out: Queue[list[float]] = context.Queue()
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
    trips = sorted(t for r in results for t in r)
    if not trips:
        print("no pong came back", file=sys.stderr)
        return 1
    p99 = trips[min(len(trips) - 1, int(len(trips) * 0.99))]
    print(
        f"{args.impl}: {args.readers} readers (rcvbuf {args.rcvbuf or 'system'}), {says} says in "
        f"{args.seconds:g} s{''.join(' ' + arg for arg in server_args)}: {len(trips)} pings, median "
        f"{statistics.median(trips) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, max {trips[-1] * 1000:.1f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
