"""A redis-server of its own for a test or a conformance run: a free loopback port, no
persistence, stopped by the caller (a clustered room's Redis, spec §18).

``start_redis()`` returns ``(url, stop)``: ``url`` is ``redis://127.0.0.1:PORT/0`` for
``--cluster``, ``stop()`` ends the server (SIGTERM, then SIGKILL) and can be called twice.
``RedisProcess`` also restarts it on the same port, as a Redis that lost its data.
"""

from __future__ import annotations

import atexit
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from .serverproc import free_port

#: Seconds redis-server has to start answering, and to stop.
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


#: Servers started and not yet stopped: stopped at exit, so a failed run leaves none behind.
_LIVE: set[RedisProcess] = set()


@atexit.register
def _stop_live() -> None:
    for redis in list(_LIVE):
        redis.close()


class RedisUnavailable(RuntimeError):
    """redis-server is not installed or did not start."""


class RedisProcess:
    """One redis-server on 127.0.0.1, without persistence (``--save ''``, no AOF)."""

    def __init__(self, port: int | None = None, binary: str = "redis-server", *, prefix: str = "") -> None:
        """``prefix``: a command that runs redis-server, such as the benchmarks' CPU pinning."""
        path = shutil.which(binary)
        if path is None:
            raise RedisUnavailable(f"{binary} is not installed (e.g. apt-get install redis-server)")
        self.binary = path
        self.host = "127.0.0.1"
        self.port = port if port is not None else free_port(self.host)
        self._dir = tempfile.TemporaryDirectory(prefix="chatwire-redis-")
        self.process: subprocess.Popen[bytes] | None = None
        self.prefix = shlex.split(prefix)

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self) -> None:
        """Start (or start again, on the same port) and wait until it answers PING."""
        if self.process is not None and self.process.poll() is None:
            return
        log = Path(self._dir.name) / "redis.log"
        self.process = subprocess.Popen(
            [
                *self.prefix,
                self.binary,
                "--bind",
                self.host,
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self._dir.name,
                "--logfile",
                str(log),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _LIVE.add(self)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise RedisUnavailable(f"redis-server exited with {self.process.returncode}: {tail}")
            if self.ping():
                return
            time.sleep(0.02)
        self.stop()
        raise RedisUnavailable(f"redis-server did not answer on port {self.port} within {START_TIMEOUT:g} s")

    def ping(self) -> bool:
        """Whether the server answers PING now."""
        try:
            with socket.create_connection((self.host, self.port), timeout=1.0) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, *, kill: bool = False) -> None:
        """End the server: SIGTERM (SIGKILL with ``kill``, or if it does not end in time)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        if kill:
            process.kill()
        else:
            process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def restart(self) -> None:
        """Stop and start on the same port: a Redis that comes back without its data."""
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        _LIVE.discard(self)
        self._dir.cleanup()


#: Ports tried when the free port found was taken before redis-server could bind it.
START_ATTEMPTS = 5


def start_redis() -> tuple[str, Callable[[], None]]:
    """Start redis-server on a free loopback port, with no persistence; returns (url, stop)."""
    redis = launch_redis()
    return redis.url, redis.close


def launch_redis() -> RedisProcess:
    """A started :class:`RedisProcess` on a free loopback port (another one if the first was
    taken meanwhile)."""
    for attempt in range(START_ATTEMPTS):
        redis = RedisProcess()
        try:
            redis.start()
        except RedisUnavailable:
            redis.close()
            if attempt == START_ATTEMPTS - 1:
                raise
            continue
        return redis
    raise AssertionError("unreachable")
