"""A throw-away Redis for clustered servers (spec §18): loopback, a free port, nothing on disk.

The suite, the tests and the benchmarks start their own ``redis-server`` rather than use one
that happens to run: the cases restart it and kill nodes around it, which no shared Redis
may suffer. It is a :class:`~conformance.serverproc.ServerProcess`, so it is stopped with the
rest at exit and never outlives the run.
"""

from __future__ import annotations

import shlex
import shutil
import signal
from types import TracebackType

from .serverproc import ServerFailed, ServerProcess, free_port

#: The program started; Debian's and upstream's package install it under this name.
REDIS_BINARY = "redis-server"
#: No snapshots and no append-only file: a restart starts empty, as after a crash without disk.
_TEMPLATE = "{binary} --port {{port}} --bind {{host}} --save '' --appendonly no --protected-mode no"


class RedisMissing(ServerFailed):
    """``redis-server`` is not installed: clustered runs cannot start (and fail, never skip)."""


class RedisProcess:
    """One ``redis-server`` on ``host`` at a free port; :attr:`url` is what ``--cluster`` takes."""

    def __init__(self, host: str = "127.0.0.1", *, start_timeout: float = 10.0, prefix: str = "") -> None:
        self.host = host
        self.start_timeout = start_timeout
        #: A command that runs Redis, such as a CPU pinning wrapper (the benchmarks use one).
        self.prefix = prefix
        self.port = 0
        self._process: ServerProcess | None = None

    @property
    def url(self) -> str:
        """``redis://HOST:PORT/0`` (an IPv6 host in brackets), the form §18 gives ``--cluster``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"redis://{host}:{self.port}/0"

    def start(self) -> RedisProcess:
        """Start on a free port (or, after :meth:`stop`, on the same port again: a restart)."""
        binary = shutil.which(REDIS_BINARY)
        if binary is None:
            raise RedisMissing(
                f"{REDIS_BINARY} is not installed (apt-get install redis-server): clustered runs need it"
            )
        if not self.port:
            self.port = free_port(self.host)
        template = self.prefix + _TEMPLATE.format(binary=shlex.quote(binary))
        process = ServerProcess(template, host=self.host, port=self.port, start_timeout=self.start_timeout)
        self._process = process.start()
        return self

    def alive(self) -> bool:
        return self._process is not None and self._process.alive()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def stop(self) -> None:
        """Stop it (TERM, then KILL); the port is kept for a later :meth:`start`."""
        if self._process is not None:
            self._process.stop()
            self._process = None

    def kill(self) -> None:
        """End it at once (SIGKILL), as a crash would: nothing is written or flushed."""
        if self._process is not None:
            self._process.signal(signal.SIGKILL)
            self._process.stop()
            self._process = None

    def restart(self) -> None:
        """Stop it and start an empty one on the same port: what a Redis crash and restart look like."""
        self.kill()
        self.start()

    def __enter__(self) -> RedisProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_redis(host: str = "127.0.0.1") -> RedisProcess:
    """A started :class:`RedisProcess`; call its ``stop`` when done (also stopped at exit)."""
    return RedisProcess(host).start()
