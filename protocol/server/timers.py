"""Timer queues for the server core: the clock is always the caller's (``now`` arguments)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class Deadlines(Generic[K]):
    """Timers that all run for the same ``duration``: hello timeouts, close lingers.

    Equal durations expire in the order they were armed, so an insertion-ordered map is a
    complete timer queue: arming, cancelling and expiring are O(1) each, and a cancelled
    timer leaves nothing behind.
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
