"""Start a server under test from a command template, find its port, stop it."""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from types import TracebackType
from typing import IO

#: The bundled servers, as command templates for ``--server-cmd``.
BUNDLED: dict[str, str] = {
    "impl_select": f"{shlex.quote(sys.executable)} -m impl_select --host {{host}} --port {{port}}",
    "impl_asyncio": f"{shlex.quote(sys.executable)} -m impl_asyncio --host {{host}} --port {{port}}",
}

_LISTENING = re.compile(r"listening on (\S+):(\d+)")


class ServerFailed(RuntimeError):
    """The server did not start, or died; carries the tail of its stderr."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (for servers that cannot take port 0)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


class ServerProcess:
    """One server process started from ``template`` (placeholders ``{host}``, ``{port}``, ``{codec}``).

    The server's address is taken from its ``listening on HOST:PORT`` line when it prints one
    (bundled servers started with port 0 do); otherwise a free port is chosen up front and
    the server is polled until it accepts connections.
    """

    def __init__(
        self,
        template: str,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        extra_args: Sequence[str] = (),
        start_timeout: float = 10.0,
        codec: str = "msgpack",
    ) -> None:
        self.template = template
        self.host = host
        self.codec = codec
        self.start_timeout = start_timeout
        self.extra_args = list(extra_args)
        self.requested_port = port if port is not None else (0 if "{port}" in template else None)
        self.port = 0
        self.process: subprocess.Popen[str] | None = None
        self._stderr: IO[str] | None = None
        self._stdout_lines: list[str] = []

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def command(self, port: int) -> list[str]:
        text = self.template.format(host=self.host, port=port, codec=self.codec)
        return shlex.split(text) + self.extra_args

    def start(self) -> ServerProcess:
        """Start the server and wait until it accepts a TCP connection."""
        self._stderr = tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace")  # noqa: SIM115
        self.process = subprocess.Popen(
            self.command(self.requested_port or 0),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        found = threading.Event()
        threading.Thread(target=self._read_stdout, args=(found,), daemon=True).start()
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerFailed(f"server exited with {self.process.returncode}\n{self.stderr_tail()}")
            if found.wait(0.05) or self.requested_port:
                if not self.port:
                    self.port = self.requested_port or 0
                if self._accepts():
                    return self
        self.stop()
        raise ServerFailed(
            f"server did not accept connections within {self.start_timeout} s\n{self.stderr_tail()}"
        )

    def _read_stdout(self, found: threading.Event) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self._stdout_lines.append(line)
            match = _LISTENING.search(line)
            if match and not found.is_set():
                self.port = int(match.group(2))
                found.set()

    def _accepts(self) -> bool:
        try:
            with socket.create_connection(self.address, timeout=0.5):
                return True
        except OSError:
            return False

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def returncode(self) -> int | None:
        return self.process.poll() if self.process is not None else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: int) -> None:
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signum)

    def wait(self, timeout: float) -> int | None:
        """The exit status, or ``None`` if still running after ``timeout`` seconds."""
        assert self.process is not None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 5.0) -> int | None:
        """TERM, then KILL after ``timeout``; returns the exit status."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            if self.wait(timeout) is None:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        return self.process.returncode

    def stdout_text(self) -> str:
        """Everything the server printed on stdout so far."""
        return "".join(self._stdout_lines)

    def stderr_tail(self, lines: int = 30) -> str:
        if self._stderr is None:
            return ""
        self._stderr.flush()
        self._stderr.seek(0)
        return "".join(self._stderr.readlines()[-lines:])

    def rss_kib(self) -> int | None:
        """Resident set size of the server process (Linux), for memory checks."""
        return self._status_kib("VmRSS:")

    def peak_rss_kib(self) -> int | None:
        """The largest resident set size the server process has had (Linux): what a burst cost."""
        return self._status_kib("VmHWM:")

    def _status_kib(self, field: str) -> int | None:
        if self.process is None:
            return None
        try:
            with open(f"/proc/{self.process.pid}/status", encoding="ascii") as status:
                for line in status:
                    if line.startswith(field):
                        return int(line.split()[1])
        except OSError:
            return None
        return None

    def cpu_seconds(self) -> float | None:
        """CPU time the server process has used, user and system (Linux), for cost checks."""
        if self.process is None:
            return None
        try:
            with open(f"/proc/{self.process.pid}/stat", encoding="ascii") as stat:
                # The command name, field 2, is in parentheses and may hold spaces.
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        # utime and stime are fields 14 and 15 of the file, 12 and 13 after the name.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def open_fds(self) -> int | None:
        """Open descriptors of the server process (Linux), for leak checks."""
        if self.process is None:
            return None
        try:
            return len(os.listdir(f"/proc/{self.process.pid}/fd"))
        except OSError:
            return None

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
