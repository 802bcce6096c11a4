"""The room (spec/PROTOCOL.md §8): who is present, under which name, and who hears what."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from ..constants import ErrorCode
from ..errors import RemoteProtocolError
from ..logtext import escape
from ..names import name_key, name_problem, name_skeleton

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True, slots=True)
class Seat:
    """A joined member: the name as sent and the host the server saw."""

    name: str
    host: str

    @property
    def identity(self) -> str:
        """``name@host``, as the seed printed members."""
        return f"{self.name}@{self.host}"


class Room(Generic[K]):
    """Joined members keyed by the server's connection key ``K``.

    ``members`` is a tuple rebuilt on every join and leave, so each fan-out iterates a
    ready sequence instead of building a list per message.
    """

    def __init__(self) -> None:
        self._seats: dict[K, Seat] = {}
        self._keys_by_name: dict[str, K] = {}
        self._keys_by_skeleton: dict[str, K] = {}
        self.members: tuple[K, ...] = ()

    def __len__(self) -> int:
        return len(self._seats)

    def __contains__(self, key: object) -> bool:
        return key in self._seats

    def seat(self, key: K) -> Seat:
        return self._seats[key]

    def seats(self) -> list[Seat]:
        """Every member in join order."""
        return list(self._seats.values())

    def join(self, key: K, name: str, host: str) -> Seat:
        """Seat ``key`` as ``name``; raises ``name_invalid`` or ``name_taken`` (non-fatal, §6).

        A name is taken when its key or its skeleton is a member's (§6.2).
        """
        problem = name_problem(name)
        if problem is not None:
            raise RemoteProtocolError(ErrorCode.NAME_INVALID, problem)
        folded = name_key(name)
        if folded in self._keys_by_name:
            raise RemoteProtocolError(ErrorCode.NAME_TAKEN, f"the name '{escape(name)}' is in use")
        shape = name_skeleton(name)
        if shape in self._keys_by_skeleton:
            raise RemoteProtocolError(
                ErrorCode.NAME_TAKEN, f"the name '{escape(name)}' looks like a name in use"
            )
        seat = Seat(name, host)
        self._seats[key] = seat
        self._keys_by_name[folded] = key
        self._keys_by_skeleton[shape] = key
        self.members = (*self.members, key)
        return seat

    def leave(self, key: K) -> Seat | None:
        """Unseat ``key``; returns its seat, or ``None`` if it had not joined."""
        seat = self._seats.pop(key, None)
        if seat is not None:
            del self._keys_by_name[name_key(seat.name)]
            del self._keys_by_skeleton[name_skeleton(seat.name)]
            self.members = tuple(self._seats)
        return seat
