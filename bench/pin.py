"""``python -m bench.pin [--fifo] CPU COMMAND [ARG...]``: run COMMAND on one CPU, then become it.

Pinning happens before ``exec``, so every thread the command starts (Redis starts several)
inherits it. With ``--fifo`` the command also runs under the real-time policy SCHED_FIFO
(Linux; root or CAP_SYS_NICE), so that other processes cannot delay it. Where CPU affinity
does not exist, or CPU is ``-``, COMMAND just runs.
"""

from __future__ import annotations

import os
import sys


def realtime() -> None:
    """Put this process under SCHED_FIFO at the lowest real-time priority."""
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(os.sched_get_priority_min(os.SCHED_FIFO)))


def main(argv: list[str]) -> None:
    fifo = bool(argv) and argv[0] == "--fifo"
    if fifo:
        argv = argv[1:]
    if len(argv) < 2:
        sys.exit("usage: python -m bench.pin [--fifo] CPU COMMAND [ARG...]")
    cpu, command = argv[0], argv[1:]
    if cpu != "-" and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(cpu)})
    if fifo:
        try:
            realtime()
        except (OSError, AttributeError) as exc:
            sys.exit(f"cannot run under SCHED_FIFO: {exc}")
    os.execvp(command[0], command)  # noqa: S606 (the command line of a benchmarked server)


if __name__ == "__main__":
    main(sys.argv[1:])
