"""A room served by several server processes (spec §18), started the way §16.2 says.

A :class:`Cluster` is one throw-away Redis and N nodes, each a
:class:`~conformance.serverproc.ServerProcess` started from its own command template with
``--cluster URL --room NAME`` appended. Node ``i`` runs ``templates[i % len(templates)]``,
so the bundled pair gives impl_select on the even nodes and impl_asyncio on the odd ones.
"""

from __future__ import annotations

import itertools
import signal
from collections.abc import Sequence
from types import TracebackType

from .redisproc import RedisProcess
from .serverproc import ServerProcess

#: The least number of nodes that makes a cluster (one node is a single server with extra steps).
MIN_CLUSTER_NODES = 2
#: More nodes than this would not fit the machines the suite runs on, two cores and all.
MAX_CLUSTER_NODES = 16
#: The room every node of a cluster the suite starts serves.
ROOM = "conformance"


class Cluster:
    """Redis plus ``count`` nodes of one room; :attr:`addresses` in node order."""

    def __init__(
        self,
        templates: Sequence[str],
        count: int,
        *,
        host: str = "127.0.0.1",
        extra_args: Sequence[str] = (),
        codec: str = "msgpack",
        start_timeout: float = 10.0,
        room: str = ROOM,
        redis_prefix: str = "",
    ) -> None:
        if not templates:
            raise ValueError("a cluster needs at least one command template")
        self.templates = tuple(templates)
        self.count = count
        self.host = host
        self.extra_args = list(extra_args)
        self.codec = codec
        self.start_timeout = start_timeout
        self.room = room
        self.redis = RedisProcess(prefix=redis_prefix)
        self.nodes: list[ServerProcess] = []
        #: Nodes started after the cluster (``spawn_node``), stopped with it.
        self.spawned: list[ServerProcess] = []

    # --- life ------------------------------------------------------------------------------

    def start(self) -> Cluster:
        """Start Redis, then each node in turn, each waited for until it accepts connections."""
        self.redis.start()
        try:
            for index in range(self.count):
                self.nodes.append(self.spawn_node(index, track=False))
        except BaseException:
            self.stop()
            raise
        return self

    def template_of(self, index: int) -> str:
        """The command template node ``index`` runs."""
        return self.templates[index % len(self.templates)]

    def cluster_args(self) -> list[str]:
        """The flags that make a server a node of this cluster's room (§18)."""
        return ["--cluster", self.redis.url, "--room", self.room]

    def spawn_node(
        self,
        index: int,
        *,
        extra_args: Sequence[str] | None = None,
        host: str | None = None,
        port: int | None = None,
        track: bool = True,
    ) -> ServerProcess:
        """Start one more node running node ``index``'s command, joined to this cluster."""
        args = list(self.extra_args if extra_args is None else extra_args) + self.cluster_args()
        process = ServerProcess(
            self.template_of(index),
            host=host or self.host,
            port=port,
            extra_args=args,
            codec=self.codec,
            start_timeout=self.start_timeout,
        ).start()
        if track:
            self.spawned.append(process)
        return process

    def kill_node(self, index: int) -> None:
        """SIGKILL node ``index``'s whole process group: a crash, with no goodbye to Redis."""
        node = self.nodes[index]
        node.signal(signal.SIGKILL)
        node.wait(self.start_timeout)

    def signal(self, signum: int) -> None:
        for node in self.nodes:
            node.signal(signum)

    def alive(self) -> bool:
        return all(node.alive() for node in self.nodes)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop every node (signalled together, so none outlives the others by much), then Redis."""
        every = [*self.nodes, *self.spawned]
        for node in every:
            if node.alive():
                node.signal(signal.SIGTERM)
        for node in every:
            # One SIGTERM each: stop() signals again only a node still running after ``timeout``.
            if node.process is not None:
                node.wait(timeout)
            node.stop(timeout)
        self.redis.close()

    # --- where -----------------------------------------------------------------------------

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [node.address for node in self.nodes]

    @property
    def address(self) -> tuple[str, int]:
        return self.nodes[0].address

    def round_robin(self) -> itertools.cycle[tuple[str, int]]:
        """Node addresses in turn, for spreading connections."""
        return itertools.cycle(self.addresses)

    def deaths(self) -> str:
        """What died that should not have: nodes or Redis, with their stderr tails; '' if none."""
        lines = []
        for index, node in enumerate(self.nodes):
            if not node.alive():
                lines.append(
                    f"node {index} ({node.command(node.port)[0]}) died (exit status {node.returncode})\n"
                    f"--- node {index} stderr (tail) ---\n{node.stderr_tail()}"
                )
        if not self.redis.alive():
            lines.append("the cluster's redis-server is not running")
        return "\n".join(lines)

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
