"""The connection state rules of spec/PROTOCOL.md §7, as tables (tests/test_states.py checks
them against the spec's own tables).

For each role and direction: state -> event -> :class:`Rule`. An event is a message ``type``,
or :data:`FATAL_ERROR` for an ``error`` with ``fatal: true``; :data:`OTHER` stands for every
event the state does not list. A rule either moves the connection (``to``; ``None`` keeps the
state) or refuses the message with an error code. :class:`protocol.Connection` consults these
tables and nothing else for its state decisions.

- A server *receives* in AWAIT_HELLO only ``hello`` (anything else is ``hello_required``,
  fatal) and in ACTIVE ``say``, ``who``, ``ping`` (``hello`` is ``already_joined``, anything
  else ``unknown_type``). It moves to ACTIVE when it *sends* ``welcome``.
- A client sends ``hello`` in AWAIT_HELLO (-> AWAIT_WELCOME), nothing in AWAIT_WELCOME, and
  ``say``, ``who``, ``ping`` in ACTIVE; ``welcome`` moves it to ACTIVE, a non-fatal error
  while waiting for it back to AWAIT_HELLO.
- Either side: a fatal error or ``shutdown``, sent or received, closes the connection.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum, auto
from typing import Final

from .constants import ErrorCode


class State(Enum):
    AWAIT_HELLO = auto()
    AWAIT_WELCOME = auto()
    ACTIVE = auto()
    CLOSED = auto()


#: The event of an ``error`` message with ``fatal: true`` (a non-fatal one is ``"error"``).
FATAL_ERROR: Final = "error/fatal"
#: Every event a state does not list.
OTHER: Final = "*"


@dataclass(frozen=True, slots=True)
class Rule:
    """What an event does in a state: move to ``to`` (``None``: stay), or be refused."""

    to: State | None = None
    refuse: ErrorCode | None = None
    #: Why it is refused, with ``{type}`` for the message's type.
    why: str = ""


STAY: Final = Rule()
CLOSE: Final = Rule(State.CLOSED)

Table = Mapping[State, Mapping[str, Rule]]

_ENDS: Final = {FATAL_ERROR: CLOSE, "shutdown": CLOSE}
#: What a member may send, the same rule whichever side checks it (§7.1, §7.2).
_MEMBER_REQUESTS: Final = {
    "say": STAY,
    "who": STAY,
    "ping": STAY,
    "hello": Rule(refuse=ErrorCode.ALREADY_JOINED, why="hello was already accepted"),
    OTHER: Rule(refuse=ErrorCode.UNKNOWN_TYPE, why="a client does not send {type}"),
}

SERVER_RECEIVES: Final[Table] = {
    State.AWAIT_HELLO: {
        "hello": STAY,
        OTHER: Rule(refuse=ErrorCode.HELLO_REQUIRED, why="the first message must be hello, not {type}"),
    },
    State.ACTIVE: _MEMBER_REQUESTS,
}

SERVER_SENDS: Final[Table] = {
    State.AWAIT_HELLO: {
        "welcome": Rule(State.ACTIVE),
        "error": STAY,
        **_ENDS,
        OTHER: Rule(refuse=ErrorCode.HELLO_REQUIRED, why="{type} before welcome"),
    },
    State.ACTIVE: {
        "welcome": Rule(refuse=ErrorCode.ALREADY_JOINED, why="welcome was already sent"),
        **_ENDS,
        OTHER: STAY,
    },
}

CLIENT_SENDS: Final[Table] = {
    State.AWAIT_HELLO: {
        "hello": Rule(State.AWAIT_WELCOME),
        OTHER: Rule(refuse=ErrorCode.HELLO_REQUIRED, why="{type} before hello"),
    },
    State.AWAIT_WELCOME: {
        OTHER: Rule(refuse=ErrorCode.HELLO_REQUIRED, why="{type} before welcome"),
    },
    State.ACTIVE: _MEMBER_REQUESTS,
}

CLIENT_RECEIVES: Final[Table] = {
    State.AWAIT_HELLO: {
        "error": STAY,
        **_ENDS,
        OTHER: Rule(refuse=ErrorCode.BAD_MESSAGE, why="{type} before hello"),
    },
    State.AWAIT_WELCOME: {
        "welcome": Rule(State.ACTIVE),
        "error": Rule(State.AWAIT_HELLO),
        **_ENDS,
        OTHER: Rule(refuse=ErrorCode.BAD_MESSAGE, why="{type} before welcome"),
    },
    State.ACTIVE: {
        "welcome": Rule(refuse=ErrorCode.BAD_MESSAGE, why="welcome after welcome"),
        **_ENDS,
        OTHER: STAY,
    },
}


def rule(table: Table, state: State, event: str) -> Rule:
    """The rule for ``event`` in ``state``; in CLOSED nothing is allowed (callers stop before)."""
    rules = table[state]
    found = rules.get(event)
    return found if found is not None else rules[OTHER]
