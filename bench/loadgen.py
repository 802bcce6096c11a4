"""The load generator: one process that plays every client of one benchmark job.

``python -m bench.loadgen JOB_JSON`` runs the job against a server that is already listening
and prints one JSON object, the result. It runs on its own CPU (``Job.cpu``), on uvloop when
it is installed, and counts every delivery by parsing (:class:`bench.wire.DeliveryCounter`).
Every wait is bounded by ``Job.timeout``; a job that runs out of time still reports what it
counted, with ``complete`` false.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import itertools
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, cast

import msgpack

from protocol import Joined, encode_message, get_codec
from protocol.serving import raise_open_file_limit

from .pin import realtime
from .wire import HOST, WIRES, DeliveryCounter, Wire, stamp, stamped_text

#: The latency publisher's pacing interval, seconds.
TICK = 0.001


@dataclass
class Job:
    """What to run; sent to the generator process as JSON."""

    kind: str  # "fanout", "latency" or "scale"
    wire: str  # "chat" or "redis"
    port: int
    host: str = HOST
    server_pid: int | None = None
    server_cpu: int | None = None  # the CPU the server is pinned to, for Window.other_cpu
    subscribers: int = 100  # scale: every client
    publishers: int = 1
    messages: int = 2000  # per publisher and round (fanout), from the speaker (scale)
    rounds: int = 3  # fanout: measured rounds on the same connections, after one warm-up round
    round_seconds: float = 0.0  # fanout: size measured rounds to last this long (0: ``messages``)
    size: int = 64  # text bytes per message
    rate: float = 1000.0  # latency: messages per second, all publishers together
    duration: float = 4.0  # latency: seconds measured
    warmup: float = 0.5  # latency: seconds sent before measuring
    timed_every: int = 1  # latency: every n-th subscriber times its deliveries
    window: int = 200  # connections joining at once
    timeout: float = 60.0
    cpu: int | None = None
    realtime: bool = False  # run under SCHED_FIFO (see bench.pin)
    #: A cluster (§18): the other nodes' ports, subscribers spread over ``port`` and these in
    #: turn (publishers stay on ``port``), and the pids of the other nodes and of Redis.
    ports: tuple[int, ...] = ()
    other_pids: tuple[int, ...] = ()

    def to_json(self) -> str:
        return json.dumps(asdict(self))


# --- measuring ------------------------------------------------------------------------------


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of process ``pid`` (Linux), or of this process."""
    if pid is None:
        times = os.times()
        return times.user + times.system
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_kib(pid: int | None) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` (the peak) of process ``pid`` in KiB (Linux)."""
    found: dict[str, int] = {}
    if pid is None:
        return found
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0])
    return found


def busy_seconds(cpus: set[int]) -> tuple[float, float]:
    """CPU time spent on ``cpus`` (Linux /proc/stat): by tasks (user, nice, system, steal), and
    by interrupts (irq, softirq: on loopback, much of TCP's receive path)."""
    tasks = interrupts = 0
    with contextlib.suppress(OSError), open("/proc/stat", encoding="ascii") as stat:
        for line in stat:
            name, *fields = line.split()
            if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
                user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
                tasks += user + nice + system + steal
                interrupts += irq + softirq
    tick = os.sysconf("SC_CLK_TCK")
    return tasks / tick, interrupts / tick


class Window:
    """Wall time, and the CPU share of generator, server and everything else, over one interval.

    ``other_cpu`` is what other processes took from the two CPUs in use: a shared machine's
    noise, to read next to every figure. ``interrupt_cpu`` is interrupt time on them, mostly
    the kernel receiving our own loopback traffic.
    """

    def __init__(self, server_pid: int | None, cpus: set[int], others: Sequence[int] = ()) -> None:
        self.server_pid = server_pid
        self.cpus = cpus
        #: A cluster's other processes: ``server_cpu`` is then the cluster's, ``node_cpu`` each one's.
        self.others = tuple(others)
        self.start = time.perf_counter()
        self.own = cpu_seconds(None)
        self.nodes = [cpu_seconds(pid) for pid in (server_pid, *self.others)]
        self.busy = busy_seconds(cpus)

    def close(self, end: float | None = None) -> dict[str, float]:
        """``end`` (a perf_counter time) closes the wall-time interval; CPU runs until now."""
        now = time.perf_counter()
        elapsed = now - self.start
        share = 1 / elapsed if elapsed > 0 else 0.0
        own = (cpu_seconds(None) - self.own) * share
        pids = (self.server_pid, *self.others)
        nodes = [(cpu_seconds(pid) - before) * share for pid, before in zip(pids, self.nodes, strict=True)]
        server = sum(nodes)
        tasks, interrupts = busy_seconds(self.cpus)
        nothing = float("nan")
        measured = {
            "seconds": (end if end is not None else now) - self.start,
            "generator_cpu": own,
            "server_cpu": server,
            "other_cpu": max(0.0, (tasks - self.busy[0]) * share - own - server) if self.cpus else nothing,
            "interrupt_cpu": (interrupts - self.busy[1]) * share if self.cpus else nothing,
        }
        for index, node in enumerate(nodes if self.others else ()):
            measured[f"node{index}_cpu"] = node
        return measured


# --- connections ----------------------------------------------------------------------------


class Client(asyncio.Protocol):
    """One connection: sends its join, waits for the confirmation, then feeds ``sink``."""

    def __init__(self, session: Session, name: str, *, publisher: bool = False) -> None:
        self.session = session
        self.name = name
        self.publisher = publisher
        self.transport: asyncio.Transport | None = None
        self.joined: asyncio.Future[bytes] = session.loop.create_future()
        self.sink: Callable[[bytes], None] = self.count_units
        self.units = 0  # units counted by count_units
        self.closing = False  # closed by this side, so its end is no loss
        self._pending = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.session.wire.join(self.name, publisher=self.publisher))

    def data_received(self, data: bytes) -> None:
        if self.joined.done():
            self.sink(data)
            return
        pending = self._pending
        pending += data
        wire = self.session.wire
        position = 0
        while (end := wire.unit_end(pending, position)) is not None:
            unit = bytes(pending[position:end])
            position = end
            try:
                confirmed = wire.is_joined(unit)
            except RuntimeError as exc:
                self.joined.set_exception(exc)
                return
            if confirmed:
                rest = bytes(pending[position:])
                pending.clear()
                self.joined.set_result(unit)
                self.session.on_joined(self, unit)
                if rest:
                    self.sink(rest)
                return
        del pending[:position]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closing:
            self.session.lost.append(f"{self.name}: {exc or 'closed by the server'}")
        if not self.joined.done():
            self.joined.set_exception(ConnectionError(f"{self.name} was closed before it joined"))

    def count_units(self, data: bytes) -> None:
        """Parse and count whatever arrives: RESP replies to a publisher, notices."""
        pending = self._pending
        pending += data
        wire = self.session.wire
        position = 0
        while (end := wire.unit_end(pending, position)) is not None:
            position = end
            self.units += 1
        del pending[:position]

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)


class Session:
    """Every connection of one job."""

    def __init__(self, job: Job, wire: Wire, loop: asyncio.AbstractEventLoop) -> None:
        self.job = job
        self.wire = wire
        self.loop = loop
        self.clients: list[Client] = []
        self.lost: list[str] = []
        self.cpus = {cpu for cpu in (job.cpu, job.server_cpu) if cpu is not None}

    def on_joined(self, client: Client, unit: bytes) -> None:
        """Called as each client's join is confirmed (before the bytes after it are sunk)."""

    async def connect(self, clients: Sequence[Client]) -> None:
        """Connect ``clients`` and wait until all have joined, at most ``job.window`` joining at once."""
        window = asyncio.Semaphore(self.job.window)
        self.clients.extend(clients)
        ports = (self.job.port, *self.job.ports)
        subscribers = itertools.count()

        async def join(client: Client) -> None:
            port = self.job.port if client.publisher else ports[next(subscribers) % len(ports)]
            async with window:
                await self.loop.create_connection(lambda: client, self.job.host, port)
                await client.joined

        tasks = [asyncio.ensure_future(join(client)) for client in clients]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()

    def close_all(self) -> None:
        for client in self.clients:
            client.closing = True
            if client.transport is not None:
                client.transport.close()


class Tracker:
    """Waits until every counter has reached a target; notes when the last one did."""

    def __init__(self, loop: asyncio.AbstractEventLoop, counters: list[DeliveryCounter]) -> None:
        self.loop = loop
        self.counters = counters
        self.target = 0
        self.waiting: set[int] = set()
        self.done: asyncio.Future[None] = loop.create_future()
        self.finished_at = 0.0

    def expect(self, target: int) -> asyncio.Future[None]:
        self.target = target
        self.waiting = {i for i, counter in enumerate(self.counters) if counter.deliveries < target}
        self.done = self.loop.create_future()
        self.finished_at = 0.0
        self._check_done()
        return self.done

    def check(self, index: int) -> None:
        """Called after counter ``index`` was fed."""
        if index in self.waiting and self.counters[index].deliveries >= self.target:
            self.waiting.discard(index)
            self._check_done()

    def _check_done(self) -> None:
        if not self.waiting and not self.done.done():
            self.finished_at = time.perf_counter()
            self.done.set_result(None)

    def subscriber(self, session: Session, name: str, counter: DeliveryCounter, *, timed: bool) -> Client:
        """A subscriber whose deliveries go to ``counter``, stamped with their arrival if ``timed``."""
        client = Client(session, name)
        index = len(self.counters)
        self.counters.append(counter)
        check = self.check
        feed = counter.feed
        if timed:

            def sink(data: bytes) -> None:
                feed(data, time.perf_counter_ns())
                check(index)

        else:

            def sink(data: bytes) -> None:
                feed(data)
                check(index)

        client.sink = sink
        return client


async def bounded(awaitable: Awaitable[Any], deadline: float) -> bool:
    """Wait for ``awaitable`` until ``deadline`` (a perf_counter time); whether it finished."""
    try:
        await asyncio.wait_for(awaitable, max(0.0, deadline - time.perf_counter()))
    except TimeoutError:
        return False
    return True


def publisher_names(count: int) -> list[str]:
    return [f"p{i:03d}" for i in range(count)]


def subscriber_names(count: int) -> list[str]:
    return [f"s{i:05d}" for i in range(count)]


# --- jobs -------------------------------------------------------------------------------------


async def run_fanout(job: Job, session: Session, deadline: float) -> dict[str, Any]:
    """Publishers send their messages as fast as they can, in ``rounds`` + 1 rounds; each
    subscriber must receive every message of every round.

    The first round warms up and is not measured. With ``round_seconds``, it has at most
    2,000 messages per publisher and sizes the measured rounds to last about that long
    (never more than ``messages``): a slow peer then takes seconds, not minutes.
    """
    wire = session.wire
    text = b"x" * job.size
    names = publisher_names(job.publishers)
    templates = [wire.delivery(name, text) for name in names]
    tracker = Tracker(session.loop, [])
    subscribers = [
        tracker.subscriber(session, name, DeliveryCounter(wire, templates, job.size), timed=False)
        for name in subscriber_names(job.subscribers)
    ]
    await session.connect(subscribers)
    publishers = [Client(session, name, publisher=True) for name in names]
    await session.connect(publishers)
    messages = min(job.messages, 2000) if job.round_seconds else job.messages
    fanned_out = job.subscribers * job.publishers
    expected = 0
    rounds: list[dict[str, float]] = []
    complete = True
    for round_number in range(job.rounds + 1):
        expected += messages * job.publishers
        done = tracker.expect(expected)
        blobs = [wire.publish(p.name, text) * messages for p in publishers]
        window = Window(job.server_pid, session.cpus, job.other_pids)
        for publisher, blob in zip(publishers, blobs, strict=True):
            publisher.send(blob)
        complete = await bounded(asyncio.shield(done), deadline)
        measured = window.close(tracker.finished_at if complete else None)
        measured["per_second"] = messages * fanned_out / measured["seconds"]
        measured["messages"] = messages
        if not complete:
            break
        if round_number:
            rounds.append(measured)
        elif job.round_seconds:
            sized = int(measured["per_second"] * job.round_seconds / fanned_out)
            messages = min(job.messages, max(messages, sized))
    return {
        "complete": complete,
        "expected": expected * job.subscribers,
        "deliveries": sum(counter.deliveries for counter in tracker.counters),
        "messages": messages,
        "rounds": rounds,
    }


async def run_latency(job: Job, session: Session, deadline: float) -> dict[str, Any]:
    """Publishers send at ``rate`` in total, every ``TICK``; timed subscribers record how long
    each delivery took from the publisher's write to the subscriber's read."""
    wire = session.wire
    names = publisher_names(job.publishers)
    templates = [wire.delivery(name, stamped_text(job.size, 0)) for name in names]
    tracker = Tracker(session.loop, [])
    subscribers = []
    for index, name in enumerate(subscriber_names(job.subscribers)):
        timed = index % job.timed_every == 0
        counter = DeliveryCounter(wire, templates, job.size, exact=False, timed=timed)
        subscribers.append(tracker.subscriber(session, name, counter, timed=timed))
    await session.connect(subscribers)
    publishers = [Client(session, name, publisher=True) for name in names]
    await session.connect(publishers)
    timed_counters = [counter for counter in tracker.counters if counter.latencies_ns is not None]
    heads_and_tails = [wire.stamped_publish(publisher.name, job.size) for publisher in publishers]

    start = time.perf_counter()
    measure_from = start + job.warmup
    stop_at = measure_from + job.duration
    window: Window | None = None
    sent = sent_before_window = turn = 0
    while (now := time.perf_counter()) < min(stop_at, deadline):
        if window is None and now >= measure_from:
            window = Window(job.server_pid, session.cpus, job.other_pids)
            for counter in timed_counters:
                counter.latencies_ns = []
            sent_before_window = sent
        due = int((now - start) * job.rate) - sent
        if due > 0:
            sent_at = stamp(time.perf_counter_ns())
            batches: list[list[bytes]] = [[] for _ in publishers]
            for _ in range(due):
                head, tail = heads_and_tails[turn]
                batches[turn] += (head, sent_at, tail)
                turn = (turn + 1) % len(publishers)
            for publisher, batch in zip(publishers, batches, strict=True):
                if batch:
                    publisher.send(b"".join(batch))
            sent += due
        await asyncio.sleep(TICK)
    measured = window.close(stop_at) if window is not None else {"seconds": 0.0}
    complete = await bounded(asyncio.shield(tracker.expect(sent)), deadline)
    latencies = sorted(x for counter in timed_counters for x in counter.latencies_ns or ())
    seconds = measured["seconds"]
    return {
        **measured,
        "complete": complete,
        "expected": sent * job.subscribers,
        "deliveries": sum(counter.deliveries for counter in tracker.counters),
        "offered_per_second": (sent - sent_before_window) / seconds if seconds else 0.0,
        "samples": len(latencies),
        "percentiles_ms": {label: percentile(latencies, q) / 1e6 for label, q in PERCENTILES},
        "cdf_ms": [percentile(latencies, q) / 1e6 for q in CDF_QUANTILES],
    }


PERCENTILES = (("p50", 0.50), ("p99", 0.99), ("p99.9", 0.999), ("max", 1.0))
#: Where the latency distribution is sampled for the plots: every percent, then the tail.
CDF_QUANTILES = (*(i / 100 for i in range(1, 100)), 0.995, 0.999, 0.9995, 0.9999, 1.0)


def percentile(ordered: list[int], q: float) -> float:
    """The nearest-rank percentile ``q`` (0..1) of an ascending list."""
    if not ordered:
        return float("nan")
    return float(ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))])


class Member(Client):
    """A client of the scale job: the join storm first, then the speaker's messages.

    The member welcomed with ``clients == r`` is sent one ``joined`` for each later member
    (§8.2), whose size depends on its count only, so the storm's bytes are known exactly:
    they are checked by size, and every hundredth member decodes them to check the counts.
    """

    def __init__(self, session: ScaleSession, name: str, counter: DeliveryCounter, *, sample: bool) -> None:
        super().__init__(session, name)
        self.scale = session
        self.counter = counter
        self.storm_left = -1  # notice bytes still to come; -1 until welcomed
        self.counts: list[int] | None = [] if sample else None
        self._notices = bytearray()
        self.sink = self.receive

    def welcomed(self, welcome: bytes) -> None:
        rank = msgpack.unpackb(welcome[4:], raw=False)["clients"]
        self.storm_left = self.scale.notice_bytes_after[rank]
        if self.storm_left == 0:
            self.scale.storm_over(self)

    def receive(self, data: bytes) -> None:
        if self.storm_left > 0:
            taken = min(self.storm_left, len(data))
            if self.counts is not None:
                self._decode_notices(data[:taken])
            self.storm_left -= taken
            data = data[taken:]
            if self.storm_left == 0:
                self.scale.storm_over(self)
        if data:
            self.counter.feed(data)
            self.scale.tracker.check(self.scale.index[self])

    def _decode_notices(self, data: bytes) -> None:
        assert self.counts is not None
        pending = self._notices
        pending += data
        position = 0
        while len(pending) - position >= 4:
            end = position + 4 + int.from_bytes(pending[position : position + 4], "big")
            if end > len(pending):
                break
            message = msgpack.unpackb(bytes(pending[position + 4 : end]), raw=False)
            self.counts.append(message["clients"] if message.get("type") == "joined" else -1)
            position = end
        del pending[:position]


class ScaleSession(Session):
    """The scale job's session: knows the storm's size and who has received all of it."""

    def __init__(self, job: Job, wire: Wire, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(job, wire, loop)
        codec = get_codec("msgpack")
        count = job.subscribers
        name = f"u{0:05d}"
        sizes = [len(encode_message(codec, Joined(name, HOST, c))) for c in range(1, count + 1)]
        # notice_bytes_after[r]: the joined notices sent to the member welcomed as the r-th.
        self.notice_bytes_after = [0] * (count + 1)
        for rank in range(count - 1, 0, -1):
            self.notice_bytes_after[rank] = self.notice_bytes_after[rank + 1] + sizes[rank]
        self.storm_waiting = count
        self.storm_done: asyncio.Future[None] = loop.create_future()
        self.storm_finished_at = 0.0
        self.last_welcome = 0.0
        self.tracker = Tracker(loop, [])
        self.index: dict[Client, int] = {}

    def on_joined(self, client: Client, unit: bytes) -> None:
        self.last_welcome = time.perf_counter()
        assert isinstance(client, Member)
        client.welcomed(unit)

    def storm_over(self, member: Member) -> None:
        self.storm_waiting -= 1
        if self.storm_waiting == 0:
            self.storm_finished_at = time.perf_counter()
            self.storm_done.set_result(None)


async def run_scale(job: Job, session: Session, deadline: float) -> dict[str, Any]:
    """``subscribers`` clients join one chat server and wait out the join storm; then the first
    speaks ``messages`` times to all the others."""
    assert isinstance(session, ScaleSession)
    count = job.subscribers
    text = b"x" * job.size
    names = [f"u{i:05d}" for i in range(count)]
    speaker_template = session.wire.delivery(names[0], text)
    members = []
    for i, name in enumerate(names):
        member = Member(
            session, name, DeliveryCounter(session.wire, [speaker_template], job.size), sample=i % 100 == 50
        )
        session.index[member] = len(session.tracker.counters)
        session.tracker.counters.append(member.counter)
        members.append(member)
    before = memory_kib(job.server_pid)
    storm = Window(job.server_pid, session.cpus)
    first_connect = storm.start
    await session.connect(members)
    storm_complete = await bounded(asyncio.shield(session.storm_done), deadline)
    during_storm = storm.close(session.storm_finished_at or None)
    idle = memory_kib(job.server_pid)
    # The speaker gets none of its own messages (§8.4): it is done from the start.
    speaker = members[0]
    speaker.counter.deliveries = job.messages
    done = session.tracker.expect(job.messages)
    window = Window(job.server_pid, session.cpus)
    speaker.send(session.wire.publish(speaker.name, text) * job.messages)
    fanout_complete = await bounded(asyncio.shield(done), deadline)
    measured = window.close(session.tracker.finished_at if fanout_complete else None)
    sampled = [m.counts for m in members if m.counts is not None]
    notices_ok = all(
        counts == list(range(counts[0], counts[0] + len(counts))) and -1 not in counts
        for counts in sampled
        if counts
    )
    delivered = sum(m.counter.deliveries for m in members[1:])
    return {
        "complete": storm_complete and fanout_complete and notices_ok,
        "clients": count,
        "join_seconds": session.last_welcome - first_connect,
        "storm_seconds": (session.storm_finished_at or time.perf_counter()) - first_connect,
        "notices": count * (count - 1) // 2,
        "notice_bytes": sum(session.notice_bytes_after[1:]),
        "sampled_notices_ok": notices_ok,
        "rss_before_kib": before.get("VmRSS", 0),
        "rss_idle_kib": idle.get("VmRSS", 0),
        "rss_peak_kib": idle.get("VmHWM", 0),
        "rss_per_client_kib": (idle.get("VmRSS", 0) - before.get("VmRSS", 0)) / count,
        "expected": (count - 1) * job.messages,
        "deliveries": delivered,
        "storm_server_cpu": during_storm["server_cpu"],
        "storm_generator_cpu": during_storm["generator_cpu"],
        "fanout_seconds": measured["seconds"],
        "server_cpu": measured["server_cpu"],
        "generator_cpu": measured["generator_cpu"],
        "other_cpu": during_storm["other_cpu"],
    }


JOBS: dict[str, Callable[[Job, Session, float], Awaitable[dict[str, Any]]]] = {
    "fanout": run_fanout,
    "latency": run_latency,
    "scale": run_scale,
}


async def run(job: Job) -> dict[str, Any]:
    """Run ``job``; its connections are closed whatever happens."""
    loop = asyncio.get_running_loop()
    wire = WIRES[job.wire]()
    session = ScaleSession(job, wire, loop) if job.kind == "scale" else Session(job, wire, loop)
    deadline = time.perf_counter() + job.timeout
    result: dict[str, Any]
    try:
        result = await asyncio.wait_for(JOBS[job.kind](job, session, deadline), job.timeout)
    except TimeoutError:
        result = {"complete": False, "error": f"not done within {job.timeout} s"}
    except (ConnectionError, OSError, RuntimeError, ValueError) as exc:
        result = {"complete": False, "error": f"{type(exc).__name__}: {exc}"}
    finally:
        session.close_all()
        await asyncio.sleep(0)
    if session.lost:
        result["complete"] = False
        result["lost"] = f"{len(session.lost)} connections, e.g. {session.lost[0]}"
    result["accounted"] = bool(result.get("complete")) and result.get("deliveries") == result.get("expected")
    return result


def event_loop_runner() -> tuple[asyncio.Runner, str]:
    """An asyncio runner on uvloop when it is installed."""
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        return asyncio.Runner(), f"asyncio (Python {sys.version.split()[0]})"
    return asyncio.Runner(loop_factory=uvloop.new_event_loop), f"uvloop {uvloop.__version__}"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    fields = json.loads(args[0])
    job = Job(**fields | {key: tuple(fields.get(key, ())) for key in ("ports", "other_pids")})
    if job.cpu is not None and hasattr(os, "sched_setaffinity"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {job.cpu})
    if job.realtime:
        realtime()
    raise_open_file_limit()
    # A collection would pause the generator and be counted as the server's latency; a job
    # lives seconds and leaves little garbage in cycles.
    gc.disable()
    runner, loop_name = event_loop_runner()
    with runner:
        result = runner.run(run(job))
    result["generator_loop"] = loop_name
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
