"""``python -m bench``: every benchmark side by side in one run, tables, a JSON record and plots.

Each job runs a fresh server process pinned to one CPU and a load generator process
(:mod:`bench.loadgen`) pinned to another. Repetitions interleave the peers, so slow drift
of a shared machine spreads over all of them; results are medians, and the targets are
ratios within the run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import Any

from conformance.serverproc import ServerFailed
from protocol.options import int_within, positive_int, seconds

from . import codec
from .loadgen import CDF_QUANTILES, Job
from .peers import CHAT_SERVERS, CLUSTER, PEERS, Peer
from .wire import STAMP_DIGITS

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ("codec", "fanout", "latency", "scale")

PERCENTILE_KEYS = ("p50", "p99", "p99.9", "max")
CPU_KEYS = ("server_cpu", "generator_cpu", "other_cpu", "interrupt_cpu")

#: Timed deliveries per second the generator can afford when the offered load is high.
TIMED_BUDGET = 100_000


@dataclass
class Settings:
    """What one run measures; ``--quick`` shrinks everything to a smoke test."""

    runs: int = 3
    subscribers: int = 100
    publishers: int = 1
    messages: int = 20_000
    rounds: int = 3
    round_seconds: float = 0.5
    size: int = 64
    fixed_rate: float = 1000.0
    duration: float = 3.0
    warmup: float = 0.5
    scale_clients: int = 10_000
    scale_messages: int = 10
    codec_repeats: int = 15
    codec_budget: float = 2.0
    realtime: bool = False  # latency jobs under SCHED_FIFO
    cluster: bool = False  # also a 2-node cluster (§18) in the fan-out and latency jobs
    peers: list[str] = field(default_factory=lambda: list(PEERS))
    servers: dict[str, str] = field(default_factory=dict)  # more chat servers: name -> command
    sections: list[str] = field(default_factory=lambda: list(SECTIONS))
    quick: bool = False  # a smoke run: its figures measure nothing


QUICK: dict[str, Any] = {
    "quick": True,
    "runs": 1,
    "subscribers": 10,
    "messages": 300,
    "rounds": 1,
    "round_seconds": 0.0,
    "duration": 0.3,
    "warmup": 0.1,
    "fixed_rate": 500.0,
    "scale_clients": 200,
    "scale_messages": 3,
    "codec_repeats": 3,
    "codec_budget": 0.3,
}


class Bench:
    """One run: settings, the CPUs to use, and everything measured so far."""

    def __init__(self, settings: Settings, *, verbose: bool = True) -> None:
        self.settings = settings
        self.verbose = verbose
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        # The server gets one CPU and the generator another; on one CPU they share it.
        self.server_cpu = cpus[0] if len(cpus) >= 2 else None
        self.generator_cpu = cpus[1] if len(cpus) >= 2 else None
        self.peers = [PEERS[name] for name in settings.peers] + [
            Peer(name, "chat", command, "given on the command line")
            for name, command in settings.servers.items()
        ]
        if settings.cluster:
            self.peers.append(CLUSTER)
        self.skipped = {peer.name: reason for peer in self.peers if (reason := peer.missing())}
        self.results: dict[str, Any] = {
            "environment": environment(self.peers, self.server_cpu, self.generator_cpu),
            "settings": asdict(settings),
            "skipped": self.skipped,
        }

    def say(self, text: str) -> None:
        if self.verbose:
            print(text, file=sys.stderr, flush=True)

    def runnable(self, names: tuple[str, ...] | None = None) -> list[Peer]:
        return [
            peer
            for peer in self.peers
            if peer.name not in self.skipped and (names is None or peer.name in names)
        ]

    # --- one job --------------------------------------------------------------------------

    def job(self, peer: Peer, job: Job, *, server_args: tuple[str, ...] = ()) -> dict[str, Any]:
        """Start ``peer``, run ``job`` against it in the generator process, stop the peer."""
        if peer.nodes:
            return self.cluster_job(peer, job)
        server = peer.server(self.server_cpu, server_args, realtime=job.realtime)
        try:
            try:
                server.start()
            except ServerFailed as exc:
                return {"complete": False, "accounted": False, "error": f"server did not start: {exc}"}
            job = replace(job, wire=peer.wire, port=server.port, server_pid=server.pid)

            def died() -> str:
                return "" if server.alive() else f"the server died: {server.stderr_tail(5)}"

            return self.generate(job, died)
        finally:
            server.stop()

    def cluster_job(self, peer: Peer, job: Job) -> dict[str, Any]:
        """``job`` against a fresh cluster: the publishers on node 0, the subscribers on all in turn."""
        cluster = peer.cluster(self.server_cpu, realtime=job.realtime)
        try:
            try:
                cluster.start()
            except ServerFailed as exc:
                return {"complete": False, "accounted": False, "error": f"cluster did not start: {exc}"}
            first, *others = cluster.nodes
            job = replace(
                job,
                wire=peer.wire,
                port=first.port,
                server_pid=first.pid,
                ports=tuple(node.port for node in others),
                other_pids=tuple(pid for pid in (*(n.pid for n in others), cluster.redis.pid) if pid),
            )
            return self.generate(job, cluster.deaths)
        finally:
            cluster.stop()

    def generate(self, job: Job, died: Callable[[], str]) -> dict[str, Any]:
        """Run ``job`` in the load generator process; ``died`` says what of the servers died."""
        job = replace(job, server_cpu=self.server_cpu, cpu=self.generator_cpu)
        command = [sys.executable, "-m", "bench.loadgen", job.to_json()]
        try:
            finished = subprocess.run(
                command, capture_output=True, text=True, timeout=job.timeout + 30, check=False
            )
        except subprocess.TimeoutExpired:
            return {"complete": False, "accounted": False, "error": "the load generator hung"}
        lines = finished.stdout.strip().splitlines()
        if finished.returncode != 0 or not lines:
            tail = finished.stderr.strip().splitlines()[-3:]
            return {"complete": False, "accounted": False, "error": f"load generator failed: {tail}"}
        result: dict[str, Any] = json.loads(lines[-1])
        death = died()
        if death:
            result["accounted"] = False
            result["error"] = death
        return result

    # --- the benchmarks ---------------------------------------------------------------------

    def codec(self) -> None:
        self.say("codec: ns per frame")
        with pinned(self.generator_cpu):
            rows = codec.run(repeats=self.settings.codec_repeats, budget=self.settings.codec_budget)
        self.results["codec"] = rows

    def fanout(self) -> None:
        s = self.settings
        runs: dict[str, list[dict[str, Any]]] = {peer.name: [] for peer in self.runnable()}
        for repetition in range(s.runs):
            for peer in self.runnable():
                self.say(f"fan-out {repetition + 1}/{s.runs}: {peer.name}")
                job = Job(
                    "fanout",
                    peer.wire,
                    0,
                    subscribers=s.subscribers,
                    publishers=s.publishers,
                    messages=s.messages,
                    rounds=s.rounds,
                    round_seconds=s.round_seconds,
                    size=s.size,
                    timeout=120,
                )
                runs[peer.name].append(self.job(peer, job))
        summary = {}
        for name, results in runs.items():
            rounds = [measured for result in results for measured in result.get("rounds", ())]
            summary[name] = {
                "deliveries_per_second": _median(r["per_second"] for r in rounds),
                "rounds": len(rounds),
                "accounted": bool(results) and all(result.get("accounted") for result in results),
                "messages": sorted({result.get("messages", 0) for result in results}),
                **{key: _median(r[key] for r in rounds) for key in CPU_KEYS},
                **{key: _median(r[key] for r in rounds) for key in _node_keys(rounds)},
                "runs": results,
            }
        self.results["fanout"] = summary

    def latency(self) -> None:
        s = self.settings
        fanout = self.results.get("fanout", {})
        loads: dict[str, list[tuple[str, float]]] = {}
        for peer in self.runnable():
            loads[peer.name] = [("fixed", s.fixed_rate)]
            # Half the peak deliveries, in messages (each reaches every subscriber); needs fanout.
            peak = fanout.get(peer.name, {}).get("deliveries_per_second", float("nan"))
            if math.isfinite(peak):
                loads[peer.name].append(("half_peak", peak / 2 / s.subscribers))
        runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for repetition in range(s.runs):
            for peer in self.runnable():
                for label, rate in loads[peer.name]:
                    self.say(f"latency {repetition + 1}/{s.runs}: {peer.name} at {rate:,.0f} messages/s")
                    timed_every = max(1, math.ceil(rate * s.subscribers / TIMED_BUDGET))
                    job = Job(
                        "latency",
                        peer.wire,
                        0,
                        subscribers=s.subscribers,
                        publishers=s.publishers,
                        size=s.size,
                        rate=rate,
                        duration=s.duration,
                        warmup=s.warmup,
                        timed_every=timed_every,
                        timeout=s.duration + s.warmup + 60,
                        realtime=s.realtime,
                    )
                    result = self.job(peer, job)
                    result["rate"] = rate
                    runs.setdefault((peer.name, label), []).append(result)
        summary: dict[str, dict[str, Any]] = {}
        for (name, label), results in runs.items():
            percentiles = {
                key: _median(r.get("percentiles_ms", {}).get(key, float("nan")) for r in results)
                for key in PERCENTILE_KEYS
            }
            cdfs = [r["cdf_ms"] for r in results if len(r.get("cdf_ms", ())) == len(CDF_QUANTILES)]
            summary.setdefault(name, {})[label] = {
                "messages_per_second": results[0]["rate"],
                "deliveries_per_second": results[0]["rate"] * s.subscribers,
                "percentiles_ms": percentiles,
                # Quantile by quantile, the median of the runs, as the percentiles are.
                "cdf": {
                    "quantiles": list(CDF_QUANTILES),
                    "ms": [_median(column) for column in zip(*cdfs, strict=True)] if cdfs else [],
                },
                "accounted": all(r.get("accounted") for r in results),
                **{key: _median(r.get(key, float("nan")) for r in results) for key in CPU_KEYS},
                **{key: _median(r.get(key, float("nan")) for r in results) for key in _node_keys(results)},
                "runs": results,
            }
        self.results["latency"] = summary

    def scale(self) -> None:
        s = self.settings
        clients = s.scale_clients
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        # Each process holds one end of every connection, plus a few descriptors of its own.
        fits = hard - 64 if hard != resource.RLIM_INFINITY else clients
        note = ""
        if fits < clients:
            note = f"RLIMIT_NOFILE hard limit {hard} allows {fits} clients per process, not {clients}"
            clients = fits
        summary = {}
        for peer in self.runnable((*CHAT_SERVERS, *s.servers)):
            self.say(f"scale: {clients:,} clients on {peer.name}")
            job = Job(
                "scale",
                peer.wire,
                0,
                subscribers=clients,
                messages=s.scale_messages,
                size=s.size,
                timeout=max(60.0, clients * 0.05),
            )
            summary[peer.name] = self.job(peer, job) | {"note": note, "nofile_limit": [soft, hard]}
        self.results["scale"] = summary

    def run(self) -> dict[str, Any]:
        self.results["started"] = datetime.now(UTC).isoformat(timespec="seconds")
        self.results["load_before"] = os.getloadavg()
        for section in self.settings.sections:
            getattr(self, section)()
        self.results["load_after"] = os.getloadavg()
        self.results["targets"] = targets(self.results, self.settings)
        return self.results


def _node_keys(measured: list[dict[str, Any]]) -> list[str]:
    """``node0_cpu``, ``node1_cpu``, ...: a cluster's processes (nodes, then Redis), as measured."""
    return sorted({key for m in measured for key in m if key.startswith("node") and key.endswith("_cpu")})


def _median(values: Any) -> float:
    finite = [v for v in values if isinstance(v, int | float) and math.isfinite(v)]
    return statistics.median(finite) if finite else float("nan")


@contextlib.contextmanager
def pinned(cpu: int | None) -> Iterator[None]:
    """Run this process on ``cpu`` for a while (the codec benchmark runs in-process)."""
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        yield
        return
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, previous)


def environment(peers: list[Peer], server_cpu: int | None, generator_cpu: int | None) -> dict[str, Any]:
    """The machine and software the numbers were measured on."""
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "")
    versions: dict[str, str | None] = {}
    for package in ("msgpack", "uvloop"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    commit = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "server_cpu": server_cpu,
        "generator_cpu": generator_cpu,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "packages": versions,
        "peers": {peer.name: peer.version() for peer in peers if peer.missing() is None},
        "commit": commit,
    }


# --- targets ----------------------------------------------------------------------------------


def targets(results: dict[str, Any], settings: Settings) -> list[dict[str, Any]]:
    """The issue's targets, each as a ratio measured in this run."""
    rows: list[dict[str, Any]] = []

    def add(target: str, subject: str, value: float, limit: float, *, at_least: bool, note: str = "") -> None:
        met = math.isfinite(value) and (value >= limit if at_least else value <= limit)
        rows.append(
            {"target": target, "subject": subject, "value": value, "limit": limit, "met": met, "note": note}
        )

    fanout = results.get("fanout", {})
    for name in CHAT_SERVERS:
        rate = fanout.get(name, {}).get("deliveries_per_second", float("nan"))
        for peer, limit in (("redis", 0.5), ("baseline", 5.0)):
            other = fanout.get(peer, {}).get("deliveries_per_second", float("nan"))
            if name in fanout and peer in fanout:
                add(f"fan-out >= {limit:g}x {peer}", name, rate / other, limit, at_least=True)
    for name in CHAT_SERVERS:
        fixed = results.get("latency", {}).get(name, {}).get("fixed")
        if fixed:
            rate = fixed["messages_per_second"]
            add(
                f"p99 <= 5 ms at {rate:,.0f} msg/s", name, fixed["percentiles_ms"]["p99"], 5.0, at_least=False
            )
    for name, scale in results.get("scale", {}).items():
        if "rss_per_client_kib" in scale:
            note = scale.get("note") or ("" if scale.get("accounted") else "fan-out not accounted")
            subject = f"{name} ({scale['clients']:,} clients)"
            add(
                "<= 20 KiB RSS per idle connection",
                subject,
                scale["rss_per_client_kib"],
                20.0,
                at_least=False,
                note=note,
            )
    rows_by = {(r["layer"], r["codec"]): r for r in results.get("codec", [])}
    if ("codec", "msgpack") in rows_by:
        ratio = rows_by[("codec", "msgpack")]["vs_bare_msgpack"]
        add(
            "codec encode+decode <= 1.3x bare struct+msgpack",
            "protocol (msgpack)",
            ratio,
            1.3,
            at_least=False,
        )
    return rows


# --- output -------------------------------------------------------------------------------------

SMOKE_WARNING = (
    "SMOKE RUN (--quick): every job ran, on sizes far too small to measure anything;"
    " the figures, ratios and targets below are noise"
)


def si(value: float) -> str:
    """``value`` with an SI suffix, as the tables and the plots show rates; ``-`` if not finite."""
    if not math.isfinite(value):
        return "-"
    for scale, suffix in ((1e6, " M"), (1e3, " k")):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{suffix}"
    return f"{value:.0f}"


def _ratio(value: float, reference: float) -> str:
    return f"{value / reference:.2f}x" if math.isfinite(value / reference) else "-"


def _yes(flag: object) -> str:
    return "yes" if flag else "NO"


Column = tuple[str, Callable[[dict[str, Any]], str]]


def _table(columns: list[Column], rows: list[dict[str, Any]]) -> str:
    cells = [[cell(row) for _, cell in columns] for row in rows]
    headers = [header for header, _ in columns]
    widths = [max([len(header)] + [len(line[i]) for line in cells]) for i, header in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in cells]
    return "\n".join(lines)


CPU_COLUMNS: list[Column] = [
    ("server cpu", lambda r: f"{r['server_cpu']:.2f}"),
    ("gen cpu", lambda r: f"{r['generator_cpu']:.2f}"),
    ("irq cpu", lambda r: f"{r['interrupt_cpu']:.2f}"),
    ("others cpu", lambda r: f"{r['other_cpu']:.2f}"),
    ("accounted", lambda r: _yes(r["accounted"])),
]


def report(results: dict[str, Any]) -> str:
    """The human-readable tables of a run."""
    s = results["settings"]
    env = results["environment"]
    out = [
        f"{env['cpu']} x{env['cpus']}, Python {env['python']}, server on CPU {env['server_cpu']}, "
        f"generator on CPU {env['generator_cpu']}, load average {results['load_before'][0]:.2f} at start"
    ]
    if s.get("quick"):
        out.append(SMOKE_WARNING)
    out += [f"skipped {name}: {reason}" for name, reason in results.get("skipped", {}).items()]
    if "codec" in results:
        out.append("\nCodec: ns per frame (a relayed 64-byte text), median")
        out.append(
            _table(
                [
                    ("layer", lambda r: r["layer"]),
                    ("codec", lambda r: r["codec"]),
                    ("encode", lambda r: f"{r['encode_ns']:.0f}"),
                    ("decode", lambda r: f"{r['decode_ns']:.0f}"),
                    ("total", lambda r: f"{r['total_ns']:.0f}"),
                    ("vs bare msgpack", lambda r: f"{r['vs_bare_msgpack']:.2f}x"),
                ],
                results["codec"],
            )
        )
    if "fanout" in results:
        fanout = results["fanout"]
        redis = fanout.get("redis", {}).get("deliveries_per_second", float("nan"))
        baseline = fanout.get("baseline", {}).get("deliveries_per_second", float("nan"))
        out.append(
            f"\nFan-out: {s['subscribers']} subscribers, {s['publishers']} publisher(s), "
            f"{s['size']}-byte messages; deliveries/s, median of rounds"
        )
        out.append(
            _table(
                [
                    ("peer", lambda r: r["peer"]),
                    ("deliveries/s", lambda r: si(r["deliveries_per_second"])),
                    ("vs redis", lambda r: _ratio(r["deliveries_per_second"], redis)),
                    ("vs baseline", lambda r: _ratio(r["deliveries_per_second"], baseline)),
                    ("messages", lambda r: "/".join(str(m) for m in r["messages"])),
                    ("rounds", lambda r: str(r["rounds"])),
                    *CPU_COLUMNS,
                ],
                [{"peer": name} | r for name, r in fanout.items()],
            )
        )
    if "latency" in results:
        policy = "SCHED_FIFO" if s["realtime"] else "default scheduling"
        out.append(
            f"\nLatency: send to receipt, {s['subscribers']} subscribers, {policy}; ms, median of runs"
        )
        out.append(
            _table(
                [
                    ("peer", lambda r: r["peer"]),
                    ("load", lambda r: r["load"]),
                    ("msg/s", lambda r: f"{r['messages_per_second']:,.0f}"),
                    ("deliveries/s", lambda r: si(r["deliveries_per_second"])),
                    *[(key, lambda r, key=key: f"{r['percentiles_ms'][key]:.2f}") for key in PERCENTILE_KEYS],
                    *CPU_COLUMNS,
                ],
                [
                    {"peer": name, "load": load} | r
                    for name, loads in results["latency"].items()
                    for load, r in loads.items()
                ],
            )
        )
    if CLUSTER.name in results.get("fanout", {}):
        out.append(cluster_report(results))
    if "scale" in results:
        out.append("\nScale: clients in one server process")
        scaled = [{"server": name} | r for name, r in results["scale"].items() if "clients" in r]
        out.append(
            _table(
                [
                    ("server", lambda r: r["server"]),
                    ("clients", lambda r: f"{r['clients']:,}"),
                    ("all joined s", lambda r: f"{r['join_seconds']:.1f}"),
                    ("joined notices", lambda r: si(r["notices"])),
                    ("notices/s", lambda r: si(r["notices"] / r["storm_seconds"])),
                    ("RSS KiB/client", lambda r: f"{r['rss_per_client_kib']:.1f}"),
                    ("peak RSS MiB", lambda r: f"{r['rss_peak_kib'] / 1024:.0f}"),
                    ("fan-out ms", lambda r: f"{r['fanout_seconds'] * 1000:.0f}"),
                    ("storm server cpu", lambda r: f"{r['storm_server_cpu']:.2f}"),
                    ("storm gen cpu", lambda r: f"{r['storm_generator_cpu']:.2f}"),
                    ("others cpu", lambda r: f"{r['other_cpu']:.2f}"),
                    ("accounted", lambda r: _yes(r["accounted"])),
                ],
                scaled,
            )
        )
        out += [
            f"{name}: {r.get('error', 'failed')}"
            for name, r in results["scale"].items()
            if "clients" not in r
        ]
    if results.get("targets"):
        out.append("\nTargets" + (" (smoke run: not meaningful)" if s.get("quick") else ""))
        out.append(
            _table(
                [
                    ("target", lambda t: t["target"]),
                    ("subject", lambda t: t["subject"]),
                    ("measured", lambda t: f"{t['value']:.2f}"),
                    ("result", lambda t: "met" if t["met"] else "NOT MET"),
                    ("note", lambda t: t["note"]),
                ],
                results["targets"],
            )
        )
    return "\n".join(out)


def cluster_report(results: dict[str, Any]) -> str:
    """The cost of the cluster hop: the cluster's figures as ratios to each single server's."""
    fanout, latency = results.get("fanout", {}), results.get("latency", {})
    cluster = fanout[CLUSTER.name]
    nodes = [key for key in cluster if key.startswith("node") and key.endswith("_cpu")]
    rows = []
    for name in (*CHAT_SERVERS, "redis"):
        single = fanout.get(name)
        if not single:
            continue
        row = {"versus": name, "fanout": cluster["deliveries_per_second"] / single["deliveries_per_second"]}
        for load in ("fixed", "half_peak"):
            mine = latency.get(CLUSTER.name, {}).get(load, {}).get("percentiles_ms", {})
            theirs = latency.get(name, {}).get(load, {}).get("percentiles_ms", {})
            for key in ("p50", "p99"):
                row[f"{load} {key}"] = mine.get(key, float("nan")) / theirs.get(key, float("nan"))
        rows.append(row)
    names = [*CLUSTER.nodes, "redis"]
    cpu = ", ".join(
        f"{names[i] if i < len(names) else key} {cluster[key]:.2f}" for i, key in enumerate(nodes)
    )
    lines = [
        f"\nCluster hop: {CLUSTER.description}; the cluster's figure / the peer's "
        f"(fan-out > 1 is faster, latency > 1 slower)",
        _table(
            [
                ("versus", lambda r: r["versus"]),
                ("fan-out", lambda r: f"{r['fanout']:.2f}x" if math.isfinite(r["fanout"]) else "-"),
                *[
                    (key, lambda r, key=key: f"{r[key]:.2f}x" if math.isfinite(r[key]) else "-")
                    for key in ("fixed p50", "fixed p99", "half_peak p50", "half_peak p99")
                ],
            ],
            rows,
        ),
        f"per-process CPU during fan-out (cores): {cpu or '-'}",
    ]
    return "\n".join(lines)


EPILOG = """\
examples:
  python -m bench                   everything, about 2.5 minutes (BENCHMARKS.md says how it measures)
  python -m bench --quick           a smoke run: checks that every job works, measures nothing
  python -m bench --only fanout,latency --peers impl_select,impl_asyncio
  python -m bench --server 'mine=./myserver --port {port}' --only fanout
  python -m bench --cluster --only fanout,latency --peers impl_select,impl_asyncio,redis

output: the tables on stdout, the results in --json, and beside that file one PNG per job
(bench-results-fanout.png: deliveries/s per peer; bench-results-latency.png: the latency
distributions) when matplotlib is installed (pip install -e '.[bench]').
"""


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m bench``."""
    full, quick = Settings(), Settings(**QUICK)

    def default(name: str) -> str:
        return f"default {getattr(full, name)}, --quick {getattr(quick, name)}"

    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=(
            "Every benchmark side by side in one run: this project's servers, Redis pub/sub and\n"
            "a tutorial baseline, through one load generator. Run it from the repository root."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick",
        "--smoke",
        action="store_true",
        help="a smoke run: tiny sizes, about 10 s, measures nothing",
    )
    parser.add_argument(
        "--json", default="bench-results.json", help="where to write the results (default %(default)s)"
    )
    parser.add_argument("--only", default=",".join(SECTIONS), help="sections to run (default %(default)s)")
    parser.add_argument("--peers", default=",".join(PEERS), help="peers to run (default %(default)s)")
    parser.add_argument(
        "--server",
        action="append",
        default=[],
        metavar="NAME=COMMAND",
        help="also measure this chat server, started by COMMAND with {host} and {port} (repeatable)",
    )
    parser.add_argument(
        "--runs",
        type=positive_int,
        metavar="N",
        help=f"repetitions per peer, a fresh server each ({default('runs')})",
    )
    parser.add_argument(
        "--subscribers",
        type=positive_int,
        metavar="N",
        help=f"receiving clients in the fan-out and latency jobs ({default('subscribers')})",
    )
    parser.add_argument(
        "--publishers",
        type=positive_int,
        metavar="N",
        help=f"sending clients in the fan-out and latency jobs ({default('publishers')})",
    )
    parser.add_argument(
        "--messages",
        type=positive_int,
        metavar="N",
        help=f"at most this many fan-out messages per publisher and round ({default('messages')})",
    )
    parser.add_argument(
        "--size",
        type=int_within(STAMP_DIGITS),
        metavar="BYTES",
        help=f"message text bytes, at least {STAMP_DIGITS} for the send time ({default('size')})",
    )
    parser.add_argument(
        "--clients",
        type=int_within(2),
        metavar="N",
        dest="scale_clients",
        help=f"clients of the scale job, at least 2 ({default('scale_clients')})",
    )
    parser.add_argument(
        "--duration",
        type=seconds,
        metavar="SECONDS",
        help=f"seconds measured per latency run ({default('duration')})",
    )
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="also measure 2 nodes of one room on Redis (publisher on node 0, subscribers split)",
    )
    parser.add_argument(
        "--realtime",
        action="store_true",
        help="run latency jobs under SCHED_FIFO (Linux, root), so that other processes cannot delay them",
    )
    return parser


def parse_args(argv: list[str] | None) -> tuple[Settings, argparse.Namespace]:
    parser = build_parser()
    args = parser.parse_args(argv)
    settings = Settings(**QUICK) if args.quick else Settings()
    for name in ("runs", "subscribers", "publishers", "messages", "size", "scale_clients", "duration"):
        value = getattr(args, name)
        if value is not None:
            setattr(settings, name, value)
    settings.realtime = args.realtime
    settings.cluster = args.cluster
    settings.sections = [part for part in args.only.split(",") if part]
    settings.peers = [part for part in args.peers.split(",") if part]
    for server in args.server:
        name, _, command = server.partition("=")
        if not name or "{port}" not in command or name in PEERS:
            parser.error(
                f"--server needs NAME=COMMAND with {{port}} in COMMAND and a new NAME, not {server!r}"
            )
        settings.servers[name] = command
    for section in settings.sections:
        if section not in SECTIONS:
            parser.error(f"unknown section {section!r}; expected some of {SECTIONS}")
    for peer in settings.peers:
        if peer not in PEERS:
            parser.error(f"unknown peer {peer!r}; expected some of {tuple(PEERS)}")
    return settings, args


def _interrupted(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    settings, args = parse_args(argv)
    # Stopped by Ctrl-C or by kill alike: the servers and generators it started stop too.
    signal.signal(signal.SIGINT, _interrupted)
    signal.signal(signal.SIGTERM, _interrupted)
    # Servers and the generator are started as ``python -m``; they must find this checkout.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    bench = Bench(settings)
    started = time.monotonic()
    try:
        results = bench.run()
    except KeyboardInterrupt:
        print("interrupted: every process this run started has been stopped", file=sys.stderr)
        return 130
    results["seconds"] = time.monotonic() - started
    print(report(results))
    output = Path(args.json)
    output.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(f"\nresults written to {output} ({results['seconds']:.0f} s)")
    try:
        from . import plots  # noqa: PLC0415 (matplotlib is the optional bench extra)
    except ImportError as exc:
        if (exc.name or "").partition(".")[0] != "matplotlib":
            raise
        print(f"no plots: {exc.name} is not installed (pip install -e '.[bench]')", file=sys.stderr)
    else:
        for path in plots.write(results, output):
            print(f"plot written to {path}")
    return 0
