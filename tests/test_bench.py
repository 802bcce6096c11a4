"""The benchmarks in smoke mode: every row is produced and every delivery accounted for.

Also: the load generator's delivery counting, and the fast paths the benchmarks led to,
each against the plain path it replaces. Nothing here looks at a wall time; ``python -m
bench`` without ``--quick`` is for measuring.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.patches import Rectangle

from bench.flood import server_hold_mark
from bench.loadgen import CDF_QUANTILES
from bench.plots import fanout_figure, latency_figure
from bench.plots import write as write_plots
from bench.runner import QUICK, SMOKE_WARNING, Settings, build_parser, report, targets
from bench.wire import ChatWire, DeliveryCounter, RedisWire, Wire, stamped_text
from protocol import (
    FrameDecoder,
    Hello,
    Joined,
    Relayed,
    RemoteProtocolError,
    Say,
    encode_message,
    get_codec,
)
from protocol.connection import RelayEncoder
from protocol.constants import CodecName, ErrorCode
from protocol.server import ClientId, Send, ServerCore
from protocol.server.memory import MemoryServer

ROOT = Path(__file__).resolve().parent.parent


def _notice(wire: Wire) -> bytes:
    if isinstance(wire, ChatWire):
        return encode_message(get_codec("msgpack"), Joined("zed", "127.0.0.1", 3))
    return b"*3\r\n$9\r\nsubscribe\r\n$4\r\nchat\r\n:1\r\n"


def _feed_in_random_chunks(counter: DeliveryCounter, stream: bytes, seed: int) -> None:
    chance = random.Random(seed)
    position = 0
    while position < len(stream):
        size = chance.randint(1, 3000)
        counter.feed(stream[position : position + size], 10**15)
        position += size


@pytest.mark.parametrize("wire", [ChatWire(), RedisWire()], ids=lambda wire: wire.name)
@pytest.mark.parametrize("mode", ["exact", "uniform", "timed"])
def test_every_delivery_is_counted_once_however_the_stream_is_cut(wire: Wire, mode: str) -> None:
    publishers = ["p000", "p001"]
    stamped = [stamped_text(64, 10**12 + i) for i in range(400)]
    texts = [b"x" * 64] * 400 if mode == "exact" else stamped
    deliveries = [wire.delivery(publishers[i % 2], text) for i, text in enumerate(texts)]
    stream = b"".join(deliveries[:150]) + _notice(wire) + b"".join(deliveries[150:])
    templates = [wire.delivery(name, texts[0]) for name in publishers]
    counter = DeliveryCounter(wire, templates, 64, exact=mode == "exact", timed=mode == "timed")
    _feed_in_random_chunks(counter, stream, seed=len(stream))
    assert (counter.deliveries, counter.others) == (400, 1)
    if mode == "timed":
        assert counter.latencies_ns is not None and len(counter.latencies_ns) == 400


@pytest.mark.parametrize("wire", [ChatWire(), RedisWire()], ids=lambda wire: wire.name)
def test_a_delivery_other_than_the_expected_one_is_not_counted(wire: Wire) -> None:
    known = wire.delivery("p000", b"x" * 64)
    counter = DeliveryCounter(wire, [known], 64)
    counter.feed(known * 3 + wire.delivery("p000", b"y" * 64) + known)
    assert (counter.deliveries, counter.others) == (4, 1)


def quick_run(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """``python -m bench --quick ARGS``, which must succeed: its output and its results."""
    output = tmp_path / "results.json"
    finished = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", *args, "--json", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr[-2000:]
    results: dict[str, Any] = json.loads(output.read_text(encoding="utf-8"))
    return finished, results


@pytest.mark.timeout(180)
def test_the_quick_run_produces_every_row_with_every_delivery_accounted(tmp_path: Path) -> None:
    finished, results = quick_run(tmp_path)
    peers = ["impl_select", "impl_asyncio", "baseline"]
    if shutil.which("redis-server"):
        peers.append("redis")
    else:
        assert "redis" in results["skipped"]
    assert {(row["layer"], row["codec"]) for row in results["codec"]} == {
        (layer, codec) for layer in ("bare", "codec", "message") for codec in ("msgpack", "pickle")
    }
    for peer in peers:
        fanout = results["fanout"][peer]
        assert fanout["accounted"], fanout["runs"]
        latency = results["latency"][peer]
        assert set(latency) == {"fixed", "half_peak"}
        for load in latency.values():
            assert load["accounted"], load["runs"]
            assert len(load["cdf"]["ms"]) == len(CDF_QUANTILES)
            assert load["cdf"]["ms"] == sorted(load["cdf"]["ms"])
    for server in ("impl_select", "impl_asyncio"):
        scale = results["scale"][server]
        assert scale["accounted"] and scale["sampled_notices_ok"], scale
    assert {row["target"].split(" ")[0] for row in results["targets"]} >= {"fan-out", "p99", "<=", "codec"}
    assert "Targets (smoke run: not meaningful)" in finished.stdout
    assert finished.stdout.splitlines()[1] == SMOKE_WARNING
    for job in ("fanout", "latency"):
        plot = tmp_path / f"results-{job}.png"
        assert plot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
        assert f"plot written to {plot}" in finished.stdout


@pytest.mark.timeout(180)
def test_the_quick_cluster_run_accounts_every_delivery_and_reports_the_hop(tmp_path: Path) -> None:
    """``--cluster``: two nodes on one Redis beside a single server; needs redis-server (fails without)."""
    finished, results = quick_run(
        tmp_path, "--cluster", "--only", "fanout,latency", "--peers", "impl_select,redis"
    )
    assert "cluster" not in results["skipped"], results["skipped"]
    fanout = results["fanout"]["cluster"]
    assert fanout["accounted"], fanout["runs"]
    assert {"node0_cpu", "node1_cpu", "node2_cpu"} <= set(fanout), sorted(fanout)
    for load in results["latency"]["cluster"].values():
        assert load["accounted"], load["runs"]
    assert "Cluster hop:" in finished.stdout and "per-process CPU" in finished.stdout


# --- the command line, the report and the plots ------------------------------------------------


@pytest.mark.parametrize("impl", ["impl_select", "impl_asyncio"])
def test_the_flood_run_reports_the_readers_pings_and_the_says_flooded(impl: str) -> None:
    finished = subprocess.run(
        [sys.executable, "-m", "bench.flood", "--impl", impl, "--readers", "2", "--seconds", "0.5"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr
    line = finished.stdout.strip()
    assert line.startswith(f"{impl}: 2 readers (rcvbuf 65536), ") and " p99 " in line
    assert int(line.split(", ")[1].split(" says")[0]) >= 500  # the flood was relayed
    pings = int(line.split(": ")[2].split(" pings")[0])
    assert pings >= 2  # each reader's first ping at least came back
    # The same without the flood's onset, when every process starts at once.
    settled = int(line.split("(after the first 0.25 s: ")[1].split(" pings, p99 ")[0])
    assert 0 < settled < pings
    # What the pongs waited behind, against §10.1's bound; and the readers' own pauses.
    # (Not judged against each other: a reader also takes what arrives during its round trip.)
    most = int(line.split("behind median ")[1].split(" KiB, max ")[1].split(" KiB")[0])
    bound = int(line.split("(§10.1: ")[1].split(" KiB")[0])
    assert most > 0 and bound >= 64 + 32 + 64 + 64  # the hold mark, unsent, a segment, the rcvbuf
    # §10.1's time: those octets at the pace of the slowest reader.
    rate, time_bound = line.split("at the slowest reader's ")[1].split(" ms)")[0].split(" MB/s ")
    assert float(rate) > 0 and float(time_bound) > 0
    assert "the readers' own pauses p99 " in line


@pytest.mark.parametrize(
    ("server_args", "mark"),
    [
        ([], 65536),
        (["--hold-mark", "4096"], 4096),
        (["--hold-mark=8192", "--log-level", "ERROR"], 8192),
        (["--output-soft-limit", "1000", "--hold-mark", "4096"], 1000),
        (["--loop", "asyncio", "--output-soft-limit=2048"], 2048),
    ],
)
def test_the_flood_run_takes_the_hold_mark_the_server_has(server_args: list[str], mark: int) -> None:
    assert server_hold_mark(server_args) == mark


def test_the_help_starts_with_a_sentence_and_explains_every_option() -> None:
    parser = build_parser()
    text = parser.format_help()
    description = text.split("\n\n")[1]
    assert description.startswith("Every benchmark") and "``" not in text
    for action in parser._actions:
        assert action.help, f"{action.option_strings} has no help"


def _results(*, quick: bool) -> dict[str, Any]:
    """A run's results as Bench.run() leaves them, with made-up figures."""
    settings = Settings(**QUICK) if quick else Settings()

    def fanout(rate: float, rounds: list[float], accounted: bool = True) -> dict[str, Any]:
        cpu = dict.fromkeys(("server_cpu", "generator_cpu", "other_cpu", "interrupt_cpu"), 0.5)
        runs = [{"rounds": [{"per_second": r} for r in rounds]}]
        return {
            "deliveries_per_second": rate,
            "rounds": len(rounds),
            "accounted": accounted,
            "messages": [300],
            **cpu,
            "runs": runs,
        }

    def latency(rate: float, cdf: list[float]) -> dict[str, Any]:
        cpu = dict.fromkeys(("server_cpu", "generator_cpu", "other_cpu", "interrupt_cpu"), 0.5)
        return {
            "messages_per_second": rate,
            "deliveries_per_second": rate * 10,
            "percentiles_ms": {"p50": cdf[49], "p99": cdf[98], "p99.9": cdf[-4], "max": cdf[-1]},
            "cdf": {"quantiles": list(CDF_QUANTILES), "ms": cdf},
            "accounted": True,
            **cpu,
            "runs": [],
        }

    ramp = [0.1 + i / 100 for i in range(len(CDF_QUANTILES))]
    results: dict[str, Any] = {
        "environment": {"cpu": "test cpu", "cpus": 2, "python": "3.x", "server_cpu": 0, "generator_cpu": 1},
        "settings": asdict(settings),
        "skipped": {},
        "load_before": (0.5, 0.5, 0.5),
        "fanout": {
            "impl_select": fanout(2e6, [1.9e6, 2e6, 2.1e6]),
            "baseline": fanout(2e5, [2e5], accounted=False),
        },
        "latency": {
            "impl_select": {"fixed": latency(500, ramp), "half_peak": latency(9e4, [0.0, *ramp[1:]])},
            "baseline": {"fixed": latency(500, [r * 2 for r in ramp])},
        },
    }
    results["targets"] = targets(results, settings)
    return results


@pytest.mark.parametrize("quick", [True, False], ids=["quick", "full"])
def test_the_report_heads_every_column_and_says_when_its_figures_mean_nothing(quick: bool) -> None:
    text = report(_results(quick=quick))
    lines = text.splitlines()
    heading = next(i for i, line in enumerate(lines) if line.startswith("Targets"))
    assert lines[heading] == ("Targets (smoke run: not meaningful)" if quick else "Targets")
    header, rule, *rows = lines[heading + 1 :]
    # Every column (a run of dashes in the rule) has a heading above it.
    starts = [i for i, char in enumerate(rule) if char == "-" and (i == 0 or rule[i - 1] == " ")]
    assert all(header[start] != " " for start in starts if start < len(header)), header
    assert header.split() == ["target", "subject", "measured", "result", "note"]
    assert rows and all(" met" in row or "NOT MET" in row for row in rows)
    assert (SMOKE_WARNING in lines) is quick


def _values(data: Any) -> list[float]:
    """A line's data (an array to matplotlib's types) as plain floats."""
    return [float(value) for value in data]


def test_the_fanout_plot_has_a_bar_per_peer_at_its_median_and_a_dot_per_round() -> None:
    results = _results(quick=False)
    figure = fanout_figure(results)
    assert figure is not None
    (axes,) = figure.axes
    bars = [patch for patch in axes.patches if isinstance(patch, Rectangle)]
    assert [tick.get_text() for tick in axes.get_xticklabels()] == ["impl_select", "baseline"]
    assert [bar.get_height() for bar in bars] == [2e6, 2e5]
    assert [bar.get_hatch() for bar in bars] == [None, "//"]  # the baseline was not accounted
    dots = [_values(line.get_ydata()) for line in axes.get_lines()]
    assert dots == [[1.9e6, 2e6, 2.1e6], [2e5]]
    assert "smoke run" not in axes.get_title()
    smoke = fanout_figure(_results(quick=True))
    assert smoke is not None and "smoke run" in smoke.axes[0].get_title()


def test_the_latency_plot_draws_each_peers_distribution_for_each_load() -> None:
    results = _results(quick=False)
    figure = latency_figure(results)
    assert figure is not None
    fixed, half_peak = figure.axes
    assert fixed.get_xscale() == "log"
    lines = {line.get_label(): line for line in fixed.get_lines()}
    assert set(lines) == {"impl_select (500 msg/s)", "baseline (500 msg/s)"}
    select = results["latency"]["impl_select"]["fixed"]["cdf"]
    assert _values(lines["impl_select (500 msg/s)"].get_xdata()) == select["ms"]
    assert _values(lines["impl_select (500 msg/s)"].get_ydata()) == select["quantiles"]
    # A log axis cannot show 0 ms: that quantile is left out, not plotted as an error.
    (line,) = half_peak.get_lines()
    assert line.get_label() == "impl_select (90,000 msg/s)"
    assert _values(line.get_ydata()) == list(CDF_QUANTILES[1:])


def test_the_plots_are_written_next_to_the_json_and_only_for_jobs_that_ran(tmp_path: Path) -> None:
    results = _results(quick=True)
    json_path = tmp_path / "run.json"
    assert write_plots(results, json_path) == [tmp_path / "run-fanout.png", tmp_path / "run-latency.png"]
    for path in tmp_path.iterdir():
        assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    del results["latency"]
    assert write_plots(results, tmp_path / "other.json") == [tmp_path / "other-fanout.png"]
    assert fanout_figure({}) is None and latency_figure({}) is None


# --- fast paths against the paths they replace ----------------------------------------------


def _one_by_one(decoder: FrameDecoder) -> tuple[list[bytes], ErrorCode | None]:
    payloads: list[bytes] = []
    try:
        while (payload := decoder.next_frame()) is not None:
            payloads.append(payload)
    except RemoteProtocolError as exc:
        return payloads, exc.code
    return payloads, None


def _in_batches(decoder: FrameDecoder) -> tuple[list[bytes], ErrorCode | None]:
    payloads: list[bytes] = []
    try:
        while batch := decoder.frames():
            payloads += batch
    except RemoteProtocolError as exc:
        return payloads, exc.code
    return payloads, None


@settings(max_examples=300, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 80), max_size=8),
    too_large=st.one_of(st.none(), st.integers(0, 8)),
    data=st.data(),
)
def test_frames_returns_what_next_frame_would_however_the_stream_arrives(
    lengths: list[int], too_large: int | None, data: st.DataObject
) -> None:
    frames = [(length).to_bytes(4, "big") + bytes([length % 251]) * length for length in lengths]
    if too_large is not None:
        frames.insert(min(too_large, len(frames)), (65).to_bytes(4, "big"))
    stream = b"".join(frames)
    cuts = sorted(data.draw(st.sets(st.integers(0, len(stream)), max_size=6)))
    one, batched = FrameDecoder(max_frame=64), FrameDecoder(max_frame=64)
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        one.feed(stream[start:end])
        batched.feed(stream[start:end])
        assert _in_batches(batched) == _one_by_one(one)
        assert batched.buffered == one.buffered


@settings(max_examples=200, deadline=None)
@given(
    codec=st.sampled_from(list(CodecName)),
    name=st.text(min_size=1, max_size=32),
    host=st.sampled_from(["127.0.0.1", "::1", "2001:db8::1"]),
    text=st.text(max_size=300),
)
def test_relayed_frames_are_the_bytes_of_encode_message(
    codec: CodecName, name: str, host: str, text: str
) -> None:
    encoder = RelayEncoder(get_codec(codec), name, host)
    assert encoder.frame(text) == encode_message(get_codec(codec), Relayed(name, host, text))


def _room(members: int, cap: int, backlog: list[int]) -> tuple[MemoryServer, list[ClientId]]:
    codec = get_codec("msgpack")
    memory = MemoryServer(ServerCore(codec, server_name="bench/1", max_output_buffer=cap))
    clients = []
    for index in range(members):
        client = memory.connect("127.0.0.1")
        memory.receive(client, encode_message(codec, Hello(f"m{index}")))
        memory.read(client)
        clients.append(client)
    for client, size in zip(clients, backlog, strict=True):
        outbox = memory.core.outbox(client)
        assert outbox is not None
        outbox.frames.append(b"q" * size)
        outbox.size += size
    return memory, clients


def _queued(memory: MemoryServer, clients: list[ClientId]) -> dict[ClientId, bytes]:
    return {c: b"".join(outbox.frames) for c in clients if (outbox := memory.core.outbox(c)) is not None}


def _burst_against_frame_by_frame(cap: int, backlog: list[int], texts: list[str]) -> list[ClientId]:
    """Relay ``texts`` from the first member both ways; both must queue and close the same."""
    codec = get_codec("msgpack")
    burst, clients = _room(len(backlog), cap, backlog)
    burst.receive(clients[0], b"".join(encode_message(codec, Say(t)) for t in texts))
    frames = [RelayEncoder(codec, "m0", "127.0.0.1").frame(text) for text in texts]
    # Frame by frame: one Send each, to recipient lists that are equal but not the same
    # object, so the core cannot join them into one buffer.
    single, _ = _room(len(backlog), cap, backlog)
    members = single.core.room.members
    single.core._carry_out([Send(frame, tuple(members), exclude=clients[0]) for frame in frames])
    single.receive(0, b"")  # settles: client 0 is never a connection
    assert burst.directives == single.directives
    assert _queued(burst, clients) == _queued(single, clients)
    assert burst.core.room.members == single.core.room.members
    return [client for _, client in single.directives]


def test_a_burst_cuts_off_the_fullest_queue_first_as_frame_by_frame_queuing_does() -> None:
    # m2's queue overflows at the first frame, m1's only at the third: m2 leaves first.
    closed = _burst_against_frame_by_frame(4096, [0, 0, 4000], ["x" * 1500] * 3)
    assert closed == [3, 2]


@settings(max_examples=150, deadline=None)
@given(data=st.data(), members=st.integers(2, 6), cap=st.integers(1024, 4096))
def test_a_burst_relayed_as_one_send_cuts_off_whom_frame_by_frame_would_in_that_order(
    data: st.DataObject, members: int, cap: int
) -> None:
    backlog = data.draw(st.lists(st.integers(0, cap), min_size=members, max_size=members))
    sizes = data.draw(st.lists(st.integers(0, 1500), min_size=2, max_size=6))
    _burst_against_frame_by_frame(cap, backlog, ["x" * size for size in sizes])
