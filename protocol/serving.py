"""Pieces both reference servers need that involve no socket: timers, host text, process limits.

Each server owns its sockets and its event loop; what they must agree on, and what would
otherwise be written twice, lives here.
"""

from __future__ import annotations

import ipaddress
import sys
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

from . import __version__

if sys.platform != "win32":
    import resource

K = TypeVar("K", bound=Hashable)

#: Listen backlog; the kernel silently caps it (``net.core.somaxconn`` on Linux).
LISTEN_BACKLOG = 4096


class Deadlines(Generic[K]):
    """Timers that all run for the same ``duration``: hello timeouts, close lingers.

    Equal durations expire in the order they were armed, so an insertion-ordered map is a
    complete timer queue: arming, cancelling and expiring are O(1) each, and a cancelled
    timer leaves nothing behind. The clock is the caller's (``now`` arguments).
    """

    __slots__ = ("_due", "duration")

    def __init__(self, duration: float) -> None:
        self.duration = duration
        self._due: OrderedDict[K, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._due)

    def __contains__(self, key: object) -> bool:
        return key in self._due

    def arm(self, key: K, now: float) -> None:
        """Start (or restart) ``key``'s timer."""
        self._due.pop(key, None)
        self._due[key] = now + self.duration

    def cancel(self, key: K) -> None:
        self._due.pop(key, None)

    def next_deadline(self) -> float | None:
        """When the earliest timer expires, or ``None`` if none is armed."""
        for deadline in self._due.values():
            return deadline
        return None

    def expire(self, now: float) -> list[K]:
        """Remove and return every key whose timer has expired, earliest first."""
        expired: list[K] = []
        due = self._due
        while due:
            key, deadline = next(iter(due.items()))
            if deadline > now:
                break
            del due[key]
            expired.append(key)
        return expired


def peer_host(address: str) -> str:
    """The ``host`` the protocol reports for a peer address (§8.3).

    IPv6 in RFC 5952 form without brackets; an IPv4-mapped IPv6 address (a v4 client of a
    dual-stack listener) as the plain dotted-decimal IPv4 address it stands for.
    """
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    return str(parsed)


def listening_line(host: str, port: int) -> str:
    """The one line a server prints on start; the port follows the last colon."""
    return f"listening on {host}:{port}"


def server_name(implementation: str) -> str:
    """``welcome.server`` (§5.4.1): the implementation and the project version."""
    return f"{implementation}/{__version__}"


def raise_open_file_limit() -> tuple[int, int]:
    """Raise the soft limit on open descriptors to the hard limit; returns (soft, hard).

    Every client is a descriptor, and a common soft default (1024) is smaller than the
    number of clients a server is expected to hold.
    """
    if sys.platform == "win32":
        return (0, 0)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            # macOS refuses RLIM_INFINITY; the soft limit stays as it was.
            pass
    return soft, hard
