"""The servers measured side by side, each started in its own process on its own CPU."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass

from conformance.cluster import Cluster
from conformance.serverproc import ServerProcess, free_port

from .wire import HOST

_PYTHON = shlex.quote(sys.executable)


@dataclass(frozen=True)
class Peer:
    """One server under test and how to start it; ``{host}`` and ``{port}`` are filled in."""

    name: str
    wire: str  # the bench.wire protocol it speaks
    command: str
    description: str
    fixed_port: bool = False  # cannot take port 0 and print its port: one is chosen for it
    binary: str | None = None  # an executable that must be installed
    #: A cluster (§18): this many nodes of one room on a Redis of its own, running these
    #: peers' commands in turn; ``command`` is then unused.
    nodes: tuple[str, ...] = ()

    def missing(self) -> str | None:
        """Why this peer cannot run here, or ``None``."""
        if self.binary is not None and shutil.which(self.binary) is None:
            return f"{self.binary} is not installed (e.g. apt-get install redis-server); its rows are skipped"
        return None

    def server(
        self, cpu: int | None, extra_args: tuple[str, ...] = (), *, realtime: bool = False
    ) -> ServerProcess:
        """A not yet started process for this peer, pinned to ``cpu`` (and SCHED_FIFO if ``realtime``)."""
        pin = _pin(cpu, realtime)
        extra = "".join(f" {shlex.quote(arg)}" for arg in extra_args)
        return ServerProcess(
            pin + self.command + extra,
            host=HOST,
            port=free_port(HOST) if self.fixed_port else None,
            start_timeout=20.0,
        )

    def cluster(self, cpu: int | None, *, realtime: bool = False) -> Cluster:
        """A not yet started cluster of this peer's nodes, every process of it pinned to ``cpu``.

        The whole cluster, Redis included, gets the one CPU a single server gets: the cost of
        the hop is then measured on the same hardware, not bought with a second core.
        """
        pin = _pin(cpu, realtime)
        templates = [pin + PEERS[node].command for node in self.nodes]
        return Cluster(templates, len(self.nodes), host=HOST, start_timeout=20.0, redis_prefix=pin)

    def version(self) -> str:
        """The peer's own version string, for the record."""
        if self.binary is None:
            return f"Python {sys.version.split()[0]}"
        try:
            found = subprocess.run(
                [self.binary, "--version"], capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"unknown ({exc})"
        return found.stdout.strip()


def _pin(cpu: int | None, realtime: bool) -> str:
    """The command prefix that runs a program on ``cpu`` (and under SCHED_FIFO if ``realtime``)."""
    return f"{_PYTHON} -m bench.pin {'--fifo ' if realtime else ''}{'-' if cpu is None else cpu} "


PEERS: dict[str, Peer] = {
    peer.name: peer
    for peer in (
        Peer(
            "impl_select",
            "chat",
            f"{_PYTHON} -m impl_select --host {{host}} --port {{port}} --log-level WARNING",
            "this project: one thread over selectors (epoll)",
        ),
        Peer(
            "impl_asyncio",
            "chat",
            f"{_PYTHON} -m impl_asyncio --host {{host}} --port {{port}} --log-level WARNING",
            "this project: asyncio protocols, on uvloop when installed",
        ),
        Peer(
            "baseline",
            "chat",
            f"{_PYTHON} -m bench.baseline {{port}}",
            "a tutorial-style asyncio streams server (bench/baseline.py), plain asyncio",
        ),
        Peer(
            "redis",
            "redis",
            "redis-server --port {port} --bind {host} --save '' --appendonly no",
            "Redis pub/sub (PUBLISH/SUBSCRIBE), one channel",
            fixed_port=True,
            binary="redis-server",
        ),
    )
}

#: The peers speaking this project's protocol, which the scale job can check.
CHAT_SERVERS = ("impl_select", "impl_asyncio")

#: Two nodes of one room through Redis (``--cluster``): the publisher on node 0, the
#: subscribers split over both, so half of them are reached through the cluster hop.
CLUSTER = Peer(
    "cluster",
    "chat",
    "",
    "2 nodes of one room (impl_select, impl_asyncio) on Redis, all on the server's CPU",
    binary="redis-server",
    nodes=CHAT_SERVERS,
)
