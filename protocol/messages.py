"""Typed messages (spec/PROTOCOL.md §5): frozen, validated on construction.

Each class is one ``type`` on the wire; its dataclass fields, in order, are the wire fields.
:func:`from_wire` turns a decoded payload into a message, ignoring unknown fields;
``to_wire`` gives the map to encode, ``type`` first.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar, get_type_hints

from .constants import ErrorCode
from .errors import LocalProtocolError, RemoteProtocolError
from .logtext import escape

_Check = Callable[[Any], bool]


@dataclass(frozen=True, slots=True)
class Member:
    """One roster entry: a member's name and host (§5.3, roster)."""

    name: str
    host: str

    def __post_init__(self) -> None:
        if type(self.name) is not str or type(self.host) is not str:
            raise LocalProtocolError(ErrorCode.BAD_MESSAGE, "a roster member needs string name and host")


def _is_str(value: Any) -> bool:
    return type(value) is str


def _is_count(value: Any) -> bool:
    # bool is a subclass of int in Python but a distinct type on the wire (§5.1).
    return type(value) is int and value >= 0


def _is_bool(value: Any) -> bool:
    return type(value) is bool


def _is_optional_str(value: Any) -> bool:
    return value is None or type(value) is str


def _is_members(value: Any) -> bool:
    return isinstance(value, tuple) and all(type(m) is Member for m in value)


# Per spec type: the Python type that passes by itself (the common case, checked inline), the
# full check, and what the error says was expected.
_CHECKS: dict[Any, tuple[type | None, _Check, str]] = {
    str: (str, _is_str, "a string"),
    int: (None, _is_count, "a non-negative integer"),
    bool: (bool, _is_bool, "a boolean"),
    str | None: (str, _is_optional_str, "a string"),
    tuple[Member, ...]: (None, _is_members, "a list of {name, host} maps"),
}


class Message:
    """Base of every message; ``TYPE`` is the wire ``type``."""

    __slots__ = ()
    TYPE: ClassVar[str]
    _FIELDS: ClassVar[tuple[tuple[str, type | None, _Check, str], ...]]
    _NAMES: ClassVar[tuple[str, ...]]
    #: No field is converted from its wire form and none may be omitted (every type but
    #: roster and hello).
    _PLAIN: ClassVar[bool]
    #: Fields that may be absent on the wire (§5.1 rule 5); ``None`` in the message, and omitted
    #: from ``to_wire`` then.
    _OPTIONAL: ClassVar[frozenset[str]] = frozenset()

    def __post_init__(self) -> None:
        for name, exact, check, expected in self._FIELDS:
            value = getattr(self, name)
            if type(value) is not exact and not check(value):
                # Only the type is named: a peer's value can be too large, too deep or (a pickled
                # int) too long to repr, and the error carrying this text must fit one frame.
                raise LocalProtocolError(
                    ErrorCode.BAD_MESSAGE,
                    f"{self.TYPE}.{name} must be {expected}, got {type(value).__name__}",
                )

    def to_wire(self) -> dict[str, Any]:
        """The map this message encodes to, ``type`` first, then fields in spec order."""
        wire: dict[str, Any] = {"type": self.TYPE}
        for name in self._NAMES:
            value = getattr(self, name)
            if value is None:
                continue  # an optional field left out
            if type(value) is tuple:
                value = [{"name": m.name, "host": m.host} for m in value]
            wire[name] = value
        return wire


CLIENT_MESSAGES: dict[str, type[Message]] = {}
SERVER_MESSAGES: dict[str, type[Message]] = {}


def _register(table: dict[str, type[Message]]) -> Callable[[type[Message]], type[Message]]:
    def register(cls: type[Message]) -> type[Message]:
        hints = get_type_hints(cls)
        cls._FIELDS = tuple((f.name, *_CHECKS[hints[f.name]]) for f in fields(cls))  # type: ignore[arg-type]
        cls._NAMES = tuple(f.name for f in fields(cls))  # type: ignore[arg-type]
        cls._OPTIONAL = frozenset(f.name for f in fields(cls) if f.default is None)  # type: ignore[arg-type]
        cls._PLAIN = "members" not in cls._NAMES and not cls._OPTIONAL
        table[cls.TYPE] = cls
        return cls

    return register


# --- client to server (§5.2) -------------------------------------------------------------


@_register(CLIENT_MESSAGES)
@dataclass(frozen=True, slots=True)
class Hello(Message):
    """Join the room under ``name``, presenting ``token`` to a server with access control (§17.3)."""

    TYPE = "hello"
    name: str
    token: str | None = None

    def __repr__(self) -> str:
        # A token is a secret: never in a log or a transcript (§17.3).
        token = "" if self.token is None else ", token=<hidden>"
        return f"Hello(name={self.name!r}{token})"


@_register(CLIENT_MESSAGES)
@dataclass(frozen=True, slots=True)
class Say(Message):
    """Send ``text`` to every other member."""

    TYPE = "say"
    text: str


@_register(CLIENT_MESSAGES)
@dataclass(frozen=True, slots=True)
class Who(Message):
    """Ask for the roster."""

    TYPE = "who"


@_register(CLIENT_MESSAGES)
@dataclass(frozen=True, slots=True)
class Ping(Message):
    """Ask for a pong carrying the same ``token``."""

    TYPE = "ping"
    token: str


# --- server to client (§5.3) -------------------------------------------------------------


@_register(SERVER_MESSAGES)
@dataclass(frozen=True, slots=True)
class Welcome(Message):
    """The hello was accepted; advertises the server's limits."""

    TYPE = "welcome"
    name: str
    host: str
    clients: int
    max_frame: int
    server: str
    proto: int
    codec: str


@_register(SERVER_MESSAGES)
@dataclass(frozen=True, slots=True)
class Joined(Message):
    """Another member joined; ``clients`` counts the members now present."""

    TYPE = "joined"
    name: str
    host: str
    clients: int


@_register(SERVER_MESSAGES)
@dataclass(frozen=True, slots=True)
class Relayed(Message):
    """Another member said ``text`` (the wire type is ``message``)."""

    TYPE = "message"
    name: str
    host: str
    text: str


@_register(SERVER_MESSAGES)
@dataclass(frozen=True, slots=True)
class Left(Message):
    """A member left; ``clients`` counts those remaining."""

    TYPE = "left"
    name: str
    host: str
    clients: int
    reason: str


@_register(SERVER_MESSAGES)
@dataclass(frozen=True, slots=True)
class Roster(Message):
    """Every member, the asker included; ``truncated`` when the list did not fit a frame."""

    TYPE = "roster"
    members: tuple[Member, ...]
    truncated: bool


@_register(SERVER_MESSAGES)
@dataclass(frozen=True, slots=True)
class Pong(Message):
    """The answer to a ping, with its token unchanged."""

    TYPE = "pong"
    token: str


@_register(SERVER_MESSAGES)
@dataclass(frozen=True, slots=True)
class Error(Message):
    """A refusal; when ``fatal`` the server closes the connection after it (§9)."""

    TYPE = "error"
    code: str
    message: str
    fatal: bool


@_register(SERVER_MESSAGES)
@dataclass(frozen=True, slots=True)
class Shutdown(Message):
    """The server is stopping and will close the connection."""

    TYPE = "shutdown"
    reason: str


def _wire_members(value: Any) -> Any:
    # A roster arrives as a list of maps; the message holds a tuple of Member. Anything
    # malformed is passed through unchanged so that the field check reports it, except a
    # tuple (a pickle can hold one): not an array on the wire (§5.1), yet () would pass it.
    if type(value) is tuple:
        raise RemoteProtocolError(ErrorCode.BAD_MESSAGE, "roster.members must be a list, got tuple")
    if not isinstance(value, list):
        return value
    members = []
    for item in value:
        if (
            not isinstance(item, dict)
            or type(item.get("name")) is not str
            or type(item.get("host")) is not str
        ):
            return value
        members.append(Member(item["name"], item["host"]))
    return tuple(members)


def from_wire(value: Any, accepted: Mapping[str, type[Message]]) -> Message:
    """Build the message a decoded payload describes.

    ``accepted`` is the table of types this side may receive (:data:`CLIENT_MESSAGES` on a
    server). Raises :class:`RemoteProtocolError`: ``bad_message`` for a payload that is not
    a map with a string ``type`` or whose fields are missing or ill-typed, ``unknown_type``
    for a type not in ``accepted``. Unknown fields are ignored.
    """
    if not isinstance(value, dict):
        raise RemoteProtocolError(ErrorCode.BAD_MESSAGE, f"payload is a {type(value).__name__}, not a map")
    kind = value.get("type")
    if type(kind) is not str:
        raise RemoteProtocolError(ErrorCode.BAD_MESSAGE, "payload has no string 'type'")
    cls = accepted.get(kind)
    if cls is None:
        raise RemoteProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown message type '{escape(kind, 64)}'")
    if cls._PLAIN:
        # Every type but roster: the fields as they are, in order.
        try:
            arguments = [value[name] for name in cls._NAMES]
        except KeyError:
            raise _lacking(cls, value) from None
        try:
            return cls(*arguments)
        except LocalProtocolError as exc:
            raise RemoteProtocolError(ErrorCode.BAD_MESSAGE, exc.message) from None
    converted = {}
    for name in cls._NAMES:
        if name in value:
            field_value = value[name]
            if field_value is None and name in cls._OPTIONAL:
                # Absent and nil differ on the wire: nil is not a string (§5.1 rule 6).
                raise RemoteProtocolError(
                    ErrorCode.BAD_MESSAGE, f"{cls.TYPE}.{name} must be a string, got NoneType"
                )
            converted[name] = _wire_members(field_value) if name == "members" else field_value
    try:
        return cls(**converted)
    except TypeError:
        raise _lacking(cls, value) from None
    except LocalProtocolError as exc:
        raise RemoteProtocolError(ErrorCode.BAD_MESSAGE, exc.message) from None


def _lacking(cls: type[Message], value: dict[Any, Any]) -> RemoteProtocolError:
    missing = [name for name in cls._NAMES if name not in value and name not in cls._OPTIONAL]
    return RemoteProtocolError(ErrorCode.BAD_MESSAGE, f"{cls.TYPE} lacks field(s) {missing}")
