"""Start a server under test from a command template, find its port, stop it and all it started.

The command may be the server itself or anything that runs it: a shell script, ``cargo run``,
``go run``, ``npm start``. So each server is started in a process group (a session) of its
own; signals go to the whole group, as a terminal's Ctrl-C does, and stopping it ends every
process of the group, the wrapper's children included. Its stdout is read by a thread and
never closed under that thread, so no wait in here is unbounded.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
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
from pathlib import Path
from types import TracebackType
from typing import IO

#: The bundled servers, as command templates for ``--server-cmd``.
BUNDLED: dict[str, str] = {
    "impl_select": f"{shlex.quote(sys.executable)} -m impl_select --host {{host}} --port {{port}}",
    "impl_asyncio": f"{shlex.quote(sys.executable)} -m impl_asyncio --host {{host}} --port {{port}}",
}

#: ``listening on HOST:PORT``: IPv6 hosts in brackets (``[::1]:5555``) or bare (the port is
#: what follows the last colon), as spec §16.1 says.
_LISTENING = re.compile(r"listening on (\[[^\]\s]*\]|\S+):(\d+)")
#: How long to wait, after the group is gone, for the stdout reader to see end of file.
_READER_JOIN = 1.0
#: Polling step while waiting for the processes of a group to end.
_POLL = 0.02


class ServerFailed(RuntimeError):
    """The server did not start, or died; carries the tail of its stderr."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (for servers that cannot take port 0)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group ``pgid``.

    Zombies are left out: an orphan killed here may wait to be reaped by an init that never
    reaps, and it holds nothing any more. Without ``/proc`` a group with any process in it
    counts as one member.
    """
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text(encoding="ascii", errors="replace")
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...: comm can hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


#: Every server started and not yet stopped, so that none outlives the runner.
_LIVE: set[ServerProcess] = set()


def stop_all() -> None:
    """Stop every server this process started and has not stopped (also run at exit)."""
    for process in list(_LIVE):
        process.stop(timeout=2.0)


atexit.register(stop_all)


class ServerProcess:
    """One server process group started from ``template`` (placeholders ``{host}``, ``{port}``,
    ``{codec}``).

    The server's address is taken from its ``listening on HOST:PORT`` line when it prints one
    (bundled servers started with port 0 do); otherwise, with ``port`` given, the server is
    polled until it accepts connections.
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
        #: The ``listening on`` line the server printed, if any.
        self.listening_line = ""
        self.process: subprocess.Popen[str] | None = None
        self._stderr: IO[str] | None = None
        self._stdout_lines: list[str] = []
        self._reader: threading.Thread | None = None
        self._signalled: int | None = None
        #: Processes of the group still running when the top process exited (a wrapper's children).
        self._outlived: list[int] = []

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
            # A group of its own: signals and the final kill reach whatever the command starts.
            start_new_session=True,
        )
        _LIVE.add(self)
        found = threading.Event()
        self._reader = threading.Thread(target=self._read_stdout, args=(found,), daemon=True)
        self._reader.start()
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                status = self.process.returncode
                self.stop()
                raise ServerFailed(f"server exited with {status}\n{self.stderr_tail()}")
            if found.wait(0.05) or self.requested_port:
                if not self.port:
                    self.port = self.requested_port or 0
                if self._accepts():
                    return self
                elsewhere = self._listens_elsewhere()
                if elsewhere:
                    self.stop()
                    raise ServerFailed(f"server says {elsewhere!r}, not on {self.host}\n{self.stderr_tail()}")
        self.stop()
        raise ServerFailed(
            f"server did not accept connections within {self.start_timeout} s\n{self.stderr_tail()}"
        )

    def _read_stdout(self, found: threading.Event) -> None:
        assert self.process is not None and self.process.stdout is not None
        try:
            for line in self.process.stdout:
                self._stdout_lines.append(line)
                match = _LISTENING.search(line)
                if match and not found.is_set():
                    self.listening_line = line.strip()
                    self.port = int(match.group(2))
                    found.set()
        except (OSError, ValueError):
            pass  # the pipe was closed: the server is gone

    def _listens_elsewhere(self) -> str:
        """The listening line, when it names an address of another family than the one asked for."""
        match = _LISTENING.search(self.listening_line)
        if match is None:
            return ""
        try:
            said = ipaddress.ip_address(match.group(1).strip("[]"))
            asked = ipaddress.ip_address(self.host)
        except ValueError:
            return ""
        return self.listening_line if said.version != asked.version else ""

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
        """Send ``signum`` to the server's whole process group, as a terminal would."""
        if self.process is None:
            return
        self._signalled = signum
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signum)

    def wait(self, timeout: float) -> int | None:
        """The exit status of the command, or ``None`` if still running after ``timeout`` seconds."""
        assert self.process is not None
        try:
            status = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        if not self._outlived:
            self._outlived = [pid for pid in group_members(self.process.pid) if pid != self.process.pid]
        return status

    def exit_note(self) -> str:
        """Why the exit status may not be the server's own: the command wraps it, or ''."""
        if self.process is None or not self._outlived:
            return ""
        status = self.process.returncode
        if status is not None and status < 0:
            how = f"was killed by {signal.Signals(-status).name}"
        else:
            how = f"exited with status {status}"
        return (
            f"; the command's top process (pid {self.process.pid}) {how} while "
            f"{len(self._outlived)} other process(es) of its group still ran: the command wraps the "
            "server, so this is the wrapper's status (let it exec the server, e.g. bash -c 'exec ...')"
        )

    def stop(self, timeout: float = 5.0) -> int | None:
        """TERM the group, KILL what remains after ``timeout``; returns the command's exit status.

        Returns only when no process of the group is left, or after a bounded wait.
        """
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            self.signal(signal.SIGTERM)
            if self.wait(timeout) is None:
                self.signal(signal.SIGKILL)
                process.wait()
        else:
            self.wait(0)
        self._end_group(process.pid, timeout)
        _LIVE.discard(self)
        reader = self._reader
        if reader is not None:
            reader.join(_READER_JOIN)
        # Closing the pipe while the reader still blocks in it would block here too: a process
        # that left the group (setsid) keeps it open. The daemon thread then simply stays.
        if (reader is None or not reader.is_alive()) and process.stdout is not None:
            process.stdout.close()
        return process.returncode

    def _end_group(self, pgid: int, timeout: float) -> None:
        """The top process is gone: TERM, then KILL, whatever else of its group still runs."""
        for signum, patience in ((signal.SIGTERM, timeout), (signal.SIGKILL, 2.0)):
            if not group_members(pgid):
                return
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signum)
            deadline = time.monotonic() + patience
            while group_members(pgid) and time.monotonic() < deadline:
                time.sleep(_POLL)

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
